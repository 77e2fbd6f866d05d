package main

import (
	"fmt"
	"io"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/pull"
	"github.com/haulproject/haul/puller/runlog"
	"github.com/urfave/cli/v2"
)

var cmdBackup = &cli.Command{
	Name:  "backup",
	Usage: "pull a snapshot from each host (or the named ones), in parallel",
	Description: `Hosts are pulled at most "parallel" at a time; a failing host does not stop the
others, and the summary names it (exit 1). Events are logged one line each on
stderr; on a terminal a live progress line is drawn on stdout. After the run the
outcome is pinged ([notify] ping_url, [hosts.notify] ping_url), each host's last
run is kept for ` + "`haul status`" + `, and the Prometheus textfile is rewritten.`,
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Usage: "back up only host `NAME` (repeatable)"},
		&cli.StringSliceFlag{Name: "tag", Usage: "add `TAG` to the snapshots (repeatable)"},
		jsonFlag,
		cronQuietFlag,
	},
	Action: func(c *cli.Context) error {
		return runBackup(c, backupOptions{
			Hosts: c.StringSlice("host"), Tags: c.StringSlice("tag"),
			JSON: c.Bool("json"), Quiet: c.Bool("quiet"),
		})
	},
}

type backupOptions struct {
	Hosts, Tags []string
	JSON, Quiet bool
}

func runBackup(c *cli.Context, opts backupOptions) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	hosts, err := selectHosts(cfg, opts.Hosts)
	if err != nil {
		return err
	}
	log := newRunLog(c)
	defer log.Close()
	ctx, cancel := signalContext(c)
	defer cancel()
	// The key is derived while the first host connects; a repository that
	// cannot be opened still fails the run before anything is frozen.
	op, err := pull.OpenAsync(ctx, cfg)
	if err != nil {
		return configFailure(err)
	}
	rep, err := pull.All(ctx, cfg, pull.Options{Hosts: hosts, Tags: opts.Tags, Log: log, Opening: op})
	if op.Err() != nil {
		return configFailure(op.Err())
	}
	if opts.JSON {
		if jerr := printJSON(c.App.Writer, map[string]any{"hosts": rep.Results, "ok": len(rep.Failed) == 0, "failed": rep.Failed}); jerr != nil {
			return jerr
		}
	} else if !opts.Quiet {
		io.WriteString(c.App.Writer, rep.Summary)
	} else if len(rep.Failed) > 0 {
		// Quiet: nothing on success, the whole summary with the failure.
		io.WriteString(c.App.ErrWriter, rep.Summary)
	}
	if err != nil {
		return hostFailure(err)
	}
	return nil
}

func selectHosts(cfg *config.Config, names []string) ([]*config.Host, error) {
	if len(names) == 0 {
		if len(cfg.Hosts) == 0 {
			return nil, configFailure(fmt.Errorf("no [[hosts]] in %s", cfg.Path))
		}
		hosts := make([]*config.Host, len(cfg.Hosts))
		for i := range cfg.Hosts {
			hosts[i] = &cfg.Hosts[i]
		}
		return hosts, nil
	}
	var hosts []*config.Host
	for _, n := range names {
		h, err := cfg.Host(n)
		if err != nil {
			return nil, configFailure(err)
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// newRunLog makes the run's log: events on stderr (none with --json,
// failures only with --quiet), a live progress line on stderr when it is a
// terminal (never with --json or --quiet).
func newRunLog(c *cli.Context) *runlog.Log {
	jsonOut, quiet := c.Bool("json"), c.Bool("quiet")
	opts := runlog.Options{Events: c.App.ErrWriter, Quiet: quiet}
	if jsonOut {
		opts.Events = nil
	}
	if !jsonOut && !quiet && runlog.IsTerminal(c.App.ErrWriter) {
		opts.Progress = c.App.ErrWriter
	}
	return runlog.New(opts)
}
