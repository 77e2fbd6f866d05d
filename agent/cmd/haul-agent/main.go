// Command haul-agent runs on the VPS as the forced command of the NAS's SSH
// key. It has no listening socket: sshd starts it, it serves one session on
// stdin/stdout and exits.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/internal/version"
	"github.com/urfave/cli/v2"
)

// configFlag names the agent's config; every subcommand takes it.
var configFlag = &cli.StringFlag{Name: "config", Required: true, Usage: "agent config `FILE` (JSON)"}

func main() {
	// The VPS is small: keep the heap near what the chunks in flight need
	// (chunkBudget of chunks and their frames, zstd's encoders, the block
	// hashes of the largest file: ~20 MiB live at the 1 GiB bench's peak,
	// heap profiles); with a higher limit the GC lets garbage grow the
	// resident set to it, and the runtime and the binary's pages come on
	// top of it.
	debug.SetMemoryLimit(28 << 20)
	// A backup's live heap is ~15 MiB (heap profiles of 300 MiB backups):
	// collect at 1.5x it, not 2x, so the resident set stays under 40 MiB.
	debug.SetGCPercent(50)
	// A write to a closed stdout must return EPIPE, not kill the agent in
	// the middle of a freeze.
	signal.Ignore(syscall.SIGPIPE)

	app := &cli.App{
		Name:    "haul-agent",
		Usage:   "serve consistent backups and restores to the haul puller over SSH",
		Version: version.Version,
		Commands: []*cli.Command{
			{
				Name:  "serve",
				Usage: "serve one session; run by sshd as a forced command (the verb comes from SSH_ORIGINAL_COMMAND)",
				Flags: []cli.Flag{
					configFlag,
					&cli.BoolFlag{Name: "allow-restore", Usage: "allow the restore verb (only on the restore key's entry)"},
				},
				Action: serve,
			},
			{
				Name:  "recover",
				Usage: "bring back services a killed agent left quiesced (run at boot and by a timer; the agent starts it as its freeze watchdog)",
				Description: "Without --watch-pid: if the state dir holds a freeze marker whose agent is gone, or whose\n" +
					"guard_timeout has passed, resume the services it lists; else do nothing. Exit 1 if resuming failed.\n" +
					"With --watch-pid (the watchdog the agent starts): wait while that agent's freeze lasts and\n" +
					"resume its services if the agent dies or the guard_timeout passes first.",
				Flags: []cli.Flag{
					configFlag,
					&cli.IntFlag{Name: "watch-pid", Usage: "watch the freeze of agent `PID` (set by the agent itself)"},
				},
				Action: recoverCmd,
			},
			{
				Name:  "mark-ready",
				Usage: "mark a fresh install as initialised without a restore: write the ready marker the stack's units wait for",
				Description: "Run this once on a host whose data is meant to start empty (a first install), or whose data\n" +
					"was put in place by hand. After it, restores onto this host are refused unless the config sets\n" +
					"allow_inplace_restore. A successful restore writes the marker itself.",
				Flags: []cli.Flag{configFlag},
				Action: func(c *cli.Context) error {
					cfg, err := agent.LoadConfig(c.String("config"))
					if err != nil {
						return err
					}
					wrote, err := agent.MarkReady(cfg)
					if err != nil {
						return err
					}
					if !wrote {
						fmt.Fprintf(c.App.Writer, "%s is already ready: %s exists (left as it is)\n", cfg.Host, cfg.ReadyMarker)
						return nil
					}
					fmt.Fprintf(c.App.Writer, "marked %s ready: wrote %s\n", cfg.Host, cfg.ReadyMarker)
					return nil
				},
			},
			{
				Name:  "check-config",
				Usage: "validate a config file, print it with defaults filled in, and check this host is ready for a first backup",
				Description: "Prints the config (JSON) on stdout. Then, unless --offline, checks on this host what a first\n" +
					"backup needs: every data path exists and is a directory; with a Docker quiesce, the Docker socket\n" +
					"answers and the containers or the compose project exist; the state dir's file system has room for\n" +
					"the mirror (a full copy of the data paths). Each check is a line on stderr. Exit 1 if any fails.",
				Flags: []cli.Flag{
					configFlag,
					&cli.BoolFlag{Name: "offline", Usage: "only validate the file (for a config rendered away from its host, as in a Nix build)"},
				},
				Action: func(c *cli.Context) error {
					cfg, err := agent.LoadConfig(c.String("config"))
					if err != nil {
						return err
					}
					enc := json.NewEncoder(c.App.Writer)
					enc.SetIndent("", "  ")
					if err := enc.Encode(cfg); err != nil {
						return err
					}
					if c.Bool("offline") {
						return nil
					}
					checks, err := agent.CheckHost(c.Context, cfg)
					for _, ch := range checks {
						mark := "ok  "
						if !ch.OK {
							mark = "FAIL"
						}
						fmt.Fprintf(c.App.ErrWriter, "%s %s: %s\n", mark, ch.Name, ch.Detail)
					}
					return err
				},
			},
		},
		ExitErrHandler: func(c *cli.Context, err error) {
			if err != nil {
				fmt.Fprintf(os.Stderr, "haul-agent: %v\n", err)
				os.Exit(1)
			}
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "haul-agent: %v\n", err)
		os.Exit(1)
	}
}

func serve(c *cli.Context) error {
	if os.Getenv("SSH_TTY") != "" {
		return fmt.Errorf("refused: a terminal was allocated; haul-agent speaks only its protocol (use `restrict` in authorized_keys)")
	}
	verb, err := agent.ParseVerb(os.Getenv("SSH_ORIGINAL_COMMAND"))
	if err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(c.String("config"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	if err := setWatchdog(c.String("config")); err != nil {
		return err
	}
	srv := &agent.Server{
		Config:       cfg,
		AllowRestore: c.Bool("allow-restore"),
		In:           os.Stdin,
		Out:          os.Stdout,
		Log:          os.Stderr,
	}
	return srv.Serve(ctx, verb)
}

// setWatchdog tells freezes how to start their watchdog: this binary, with
// this config file.
func setWatchdog(configPath string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the haul-agent binary for the freeze watchdog: %w", err)
	}
	abs, err := filepath.Abs(configPath)
	if err != nil {
		return err
	}
	agent.Watchdog = agent.WatchdogSpec{Exe: exe, ConfigPath: abs}
	return nil
}

func recoverCmd(c *cli.Context) error {
	cfg, err := agent.LoadConfig(c.String("config"))
	if err != nil {
		return err
	}
	logf := agent.RecoverLogger(c.App.ErrWriter)
	if pid := c.Int("watch-pid"); pid != 0 {
		// It runs in its own session, but a hangup or Ctrl-C meant for the
		// agent must never stop it halfway through a resume.
		signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
		return agent.Watch(context.Background(), cfg, pid, logf)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	acted, err := agent.Recover(ctx, cfg, logf)
	if err != nil {
		return err
	}
	// The timer runs this every 30s: say "nothing to do" to a person, not
	// to the journal.
	if fi, err := os.Stderr.Stat(); !acted && err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		logf("nothing to recover in %s", cfg.StateDir)
	}
	return nil
}
