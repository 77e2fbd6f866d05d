package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/drill"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdDrill = &cli.Command{
	Name:  "drill",
	Usage: "rehearse a restore: restore each host's newest snapshot into a scratch dir on the NAS and check it",
	Description: `Every file is read back and hashed against the snapshot; SQLite databases must
pass PRAGMA integrity_check, acme.json must parse as JSON and be 0600, Gerbil's
config/key must be a WireGuard key. The outcome is recorded per host for
"haul status" (and --json) and the Prometheus textfile
(haul_drill_last_success_timestamp_seconds). Exit 1 if a drill found a problem.
The scratch copy (cache_dir/drill/<host>, or --scratch) is removed afterwards.`,
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Usage: "drill only host `NAME` (repeatable; default: every host)"},
		&cli.StringFlag{Name: "scratch", Usage: "restore under `DIR` instead of cache_dir/drill (needs room for one snapshot)"},
		&cli.BoolFlag{Name: "keep", Usage: "keep the scratch copy for a look"},
		jsonFlag, cronQuietFlag,
	},
	Action: func(c *cli.Context) error {
		return withHosts(c, c.StringSlice("host"), func(cfg *config.Config, hosts []*config.Host) error {
			log := newRunLog(c)
			defer log.Close()
			return withConfigLockedRepo(c, cfg, true, log.Logf, func(lctx context.Context, cfg *config.Config, r *repo.Repo) error {
				names := make([]string, len(hosts))
				for i, h := range hosts {
					names[i] = h.Name
				}
				all := make([]string, len(cfg.Hosts))
				for i, h := range cfg.Hosts {
					all[i] = h.Name
				}
				results := drill.Hosts(lctx, r, drill.HostsOptions{Hosts: names, CacheDir: cfg.CacheDir,
					Scratch: c.String("scratch"), Keep: c.Bool("keep"), Logf: log.Logf,
					Textfile: cfg.Notify.PrometheusTextfile, AllHosts: all})
				failed := []string{}
				for _, res := range results {
					if !res.OK {
						failed = append(failed, res.Host)
					}
				}
				switch {
				case c.Bool("json"):
					if err := printJSON(c.App.Writer, map[string]any{"hosts": results, "ok": len(failed) == 0, "failed": failed}); err != nil {
						return err
					}
				case !c.Bool("quiet"):
					printDrills(c.App.Writer, results)
				case len(failed) > 0:
					printDrills(c.App.ErrWriter, results) // quiet: only when something is wrong
				}
				if len(failed) > 0 {
					return hostFailure(fmt.Errorf("drill found problems in %s", strings.Join(failed, ", ")))
				}
				return nil
			})
		})
	},
}

func printDrills(w io.Writer, results []*drill.Result) {
	for _, r := range results {
		state := "ok"
		if !r.OK {
			state = "FAILED"
		}
		fmt.Fprintf(w, "%-12s drill %s  snapshot %s  %d files, %s read back, %d checks  %.1fs\n",
			r.Host, state, r.Snapshot, r.Files, units.Bytes(r.Bytes), len(r.Checks), r.DurationMS/1000)
		for _, p := range r.Problems {
			fmt.Fprintf(w, "    %s\n", p)
		}
	}
}
