// Command haul is the puller: it pulls consistent, deduplicated snapshots
// from haul-agents into a local restic-format repository, and restores and
// rebuilds from them.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/haulproject/haul/puller/backup"
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

var configFlag = &cli.StringFlag{
	Name:    "config",
	Aliases: []string{"c"},
	Usage:   "config `FILE` (TOML)",
	EnvVars: []string{"HAUL_CONFIG"},
	Value:   "/etc/haul/haul.toml",
}

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"}

// cronQuietFlag is for the commands cron runs: backup, forget, prune, check.
var cronQuietFlag = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only failures (for cron jobs that mail their output)"}

func main() {
	app := &cli.App{
		Name:    "haul",
		Usage:   "pull consistent backups of a VPS into a restic repository, restore and rebuild it",
		Version: backup.Version,
		Flags:   []cli.Flag{configFlag},
		Commands: []*cli.Command{
			cmdInit,
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
			cmdStatus,
			cmdTrueNAS,
			cmdDemo,
			cmdVersion,
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err := app.Run(os.Args)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "haul: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(exitConfig)
}
