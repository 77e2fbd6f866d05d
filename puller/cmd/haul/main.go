// Command haul is the puller: it pulls consistent, deduplicated snapshots
// from haul-agents into a local restic-format repository, and restores and
// rebuilds from them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/haulproject/haul/internal/version"
	"github.com/urfave/cli/v2"
)

// Exit codes, documented in the README: cron and monitors act on them.
const (
	exitOK         = 0 // everything succeeded
	exitHostFailed = 1 // at least one host failed or is stale; the others are done
	exitConfig     = 2 // usage, config or repository error: nothing was done
)

// exitError carries an exit code through urfave/cli.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func hostFailure(err error) error   { return &exitError{code: exitHostFailed, err: err} }
func configFailure(err error) error { return &exitError{code: exitConfig, err: err} }

// Global flags are accepted before or after the command, as restic's are:
// "haul --config x snapshots" and "haul snapshots --config x" mean the same.
// globalFlags lists them; withGlobalFlags adds them to every command.
var (
	configFlag = &cli.StringFlag{
		Name:    "config",
		Aliases: []string{"c"},
		Usage:   "config `FILE` (TOML)",
		EnvVars: []string{"HAUL_CONFIG"},
		Value:   "/etc/haul/haul.toml",
	}
	repoFlag = &cli.StringFlag{
		Name:    "repo",
		Aliases: []string{"r"},
		Usage:   "repository `PATH`, instead of the config's repository",
		EnvVars: []string{"HAUL_REPOSITORY"},
	}
	passwordFileFlag = &cli.StringFlag{
		Name:    "password-file",
		Usage:   "read the repository password from `FILE`, instead of the config's password_file",
		EnvVars: []string{"HAUL_PASSWORD_FILE"},
	}
	globalFlags = []cli.Flag{configFlag, repoFlag, passwordFileFlag}
)

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"}

// cronQuietFlag is for the commands cron runs: backup, forget, prune, check.
var cronQuietFlag = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only failures (for cron jobs that mail their output)"}

// newApp builds the command line; main and the in-process tests run it.
func newApp() *cli.App {
	app := &cli.App{
		Name:    "haul",
		Usage:   "pull consistent backups of a VPS into a restic repository, restore and rebuild it",
		Version: version.Version,
		Flags:   globalFlags,
		Commands: []*cli.Command{
			cmdInit,
			cmdKey,
			cmdBackup,
			cmdSnapshots,
			cmdLs,
			cmdDiff,
			cmdRestore,
			cmdMigrate,
			cmdHostKey,
			cmdRebuild,
			cmdForget,
			cmdPrune,
			cmdCheck,
			cmdCheckConfig,
			cmdConfig,
			cmdCopy,
			cmdDrill,
			cmdStatus,
			cmdTrueNAS,
			cmdDemo,
			cmdCompletion,
			cmdMan,
			cmdVersion,
		},
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {},
	}
	addGlobals.Do(func() { withGlobalFlags(app.Commands) })
	return app
}

// addGlobals adds the global flags to the (package-level) commands once.
var addGlobals sync.Once

// withGlobalFlags gives every command (and subcommand) the global flags it
// does not define itself.
func withGlobalFlags(cmds []*cli.Command) {
	for _, cmd := range cmds {
		have := map[string]bool{}
		for _, f := range cmd.Flags {
			for _, n := range f.Names() {
				have[n] = true
			}
		}
		for _, g := range globalFlags {
			if !have[g.Names()[0]] {
				cmd.Flags = append(cmd.Flags, g)
			}
		}
		withGlobalFlags(cmd.Subcommands)
	}
}

// globalString is a global flag's value, wherever on the command line it
// was given: the innermost setting wins, else the environment or default.
func globalString(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(name) {
			return ctx.String(name)
		}
	}
	return c.String(name)
}

// run runs haul with args (args[0] is the program name) and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	resetRepeatable(app.Commands)
	resetGlobals()
	err := app.RunContext(ctx, args)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "haul: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitConfig
}

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdout, os.Stderr))
}

// resetGlobals puts the global flags back to their defaults: urfave/cli
// stores a value found in the environment into the (package-level) flag,
// so an in-process run after one with HAUL_PASSWORD_FILE set would still
// read that file.
func resetGlobals() {
	configFlag.Value, configFlag.HasBeenSet = "/etc/haul/haul.toml", false
	repoFlag.Value, repoFlag.HasBeenSet = "", false
	passwordFileFlag.Value, passwordFileFlag.HasBeenSet = "", false
}

// resetRepeatable empties the repeatable pattern flags, whose values live
// in the (package-level) flag, so one run's patterns never reach the next
// in the same process.
func resetRepeatable(cmds []*cli.Command) {
	for _, c := range cmds {
		for _, f := range c.Flags {
			if g, ok := f.(*cli.GenericFlag); ok {
				if p, ok := g.Value.(*patternList); ok {
					*p = nil
				}
			}
		}
		resetRepeatable(c.Subcommands)
	}
}
