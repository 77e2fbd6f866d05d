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
	"runtime/debug"
	"syscall"

	"github.com/haulproject/haul/agent"
	"github.com/urfave/cli/v2"
)

func main() {
	// The VPS is small: keep the heap near what one chunk in flight needs.
	debug.SetMemoryLimit(48 << 20)
	// A write to a closed stdout must return EPIPE, not kill the agent in
	// the middle of a freeze.
	signal.Ignore(syscall.SIGPIPE)

	app := &cli.App{
		Name:    "haul-agent",
		Usage:   "serve consistent backups and restores to the haul puller over SSH",
		Version: agent.Version,
		Commands: []*cli.Command{
			{
				Name:  "serve",
				Usage: "serve one session; run by sshd as a forced command (the verb comes from SSH_ORIGINAL_COMMAND)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "config", Required: true, Usage: "agent config `FILE` (JSON)"},
					&cli.BoolFlag{Name: "allow-restore", Usage: "allow the restore verb (only on the restore key's entry)"},
				},
				Action: serve,
			},
			{
				Name:  "check-config",
				Usage: "validate a config file and print it with defaults filled in",
				Flags: []cli.Flag{&cli.StringFlag{Name: "config", Required: true, Usage: "agent config `FILE` (JSON)"}},
				Action: func(c *cli.Context) error {
					cfg, err := agent.LoadConfig(c.String("config"))
					if err != nil {
						return err
					}
					enc := json.NewEncoder(c.App.Writer)
					enc.SetIndent("", "  ")
					return enc.Encode(cfg)
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
	srv := &agent.Server{
		Config:       cfg,
		AllowRestore: c.Bool("allow-restore"),
		In:           os.Stdin,
		Out:          os.Stdout,
		Log:          os.Stderr,
	}
	return srv.Serve(ctx, verb)
}
