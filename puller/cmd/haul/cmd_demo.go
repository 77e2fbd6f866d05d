package main

import (
	"github.com/haulproject/haul/puller/demo"
	"github.com/urfave/cli/v2"
)

var cmdDemo = &cli.Command{
	Name:  "demo",
	Usage: "run the whole backup path on a generated Pangolin-like data dir, locally",
	Description: "Makes a Pangolin-like data dir (SQLite database, acme.json at 0600, config.yml, a\n" +
		"WireGuard key, logs), runs haul-agent on it through the exec transport, takes a backup,\n" +
		"changes a little, takes a second one, restores it and verifies it against the data.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Usage: "work in `DIR` and keep it (default: a temporary dir, removed after)"},
		&cli.StringFlag{Name: "agent", Usage: "haul-agent `BINARY` (default: next to haul, then $PATH)"},
		&cli.Int64Flag{Name: "size", Value: 32, Usage: "size of the data dir in `MiB`"},
	},
	Action: func(c *cli.Context) error {
		ctx, cancel := signalContext(c)
		defer cancel()
		return demo.Run(ctx, demo.Options{Dir: c.String("dir"), Agent: c.String("agent"), SizeMiB: c.Int64("size"), Out: c.App.Writer})
	},
}
