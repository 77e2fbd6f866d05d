package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/status"
	"github.com/urfave/cli/v2"
)

var cmdStatus = &cli.Command{
	Name:  "status",
	Usage: "per host: newest snapshot's age and size, bytes moved, freeze window, last error; exit 1 if a host is older than its max_age",
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Usage: "only host `NAME` (repeatable)"},
		jsonFlag, cronQuietFlag,
	},
	Action: func(c *cli.Context) error {
		return runStatus(c, statusOptions{Hosts: c.StringSlice("host"), JSON: c.Bool("json"), Quiet: c.Bool("quiet")})
	},
}

type statusOptions struct {
	Hosts       []string
	JSON, Quiet bool
}

func runStatus(c *cli.Context, opts statusOptions) error {
	return withHosts(c, opts.Hosts, func(cfg *config.Config, hosts []*config.Host) error {
		return withConfigRepo(c, cfg, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
			// Read-only and frequent (monitors): no lock, so it never
			// holds up a prune.
			rep, err := status.Build(ctx, r, cfg.CacheDir, hosts, time.Now())
			if err != nil {
				return configFailure(err)
			}
			switch {
			case opts.JSON:
				if err := printJSON(c.App.Writer, rep); err != nil {
					return err
				}
			case !opts.Quiet:
				printStatus(c.App.Writer, rep)
			case !rep.OK:
				printStatus(c.App.ErrWriter, rep) // quiet: only when something is wrong
			}
			if err := rep.Err(); err != nil {
				return hostFailure(err)
			}
			return nil
		})
	})
}

func printStatus(w io.Writer, rep *status.Report) {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tNEWEST\tAGE\tMAX AGE\tFILES\tSIZE\tMOVED\tFREEZE\tLAST RUN\tSTATE")
	for _, h := range rep.Hosts {
		newest, age, files, size, moved, freeze := "-", "-", "-", "-", "-", "-"
		if n := h.Newest; n != nil {
			newest = n.ShortID + " " + n.Time.Local().Format("2006-01-02 15:04")
			age = roughAge(time.Duration(n.AgeSeconds * float64(time.Second)))
			if n.Files != nil {
				files = fmt.Sprint(*n.Files)
			}
			if n.Bytes != nil {
				size = units.Bytes(int64(*n.Bytes))
			}
			if n.BytesMoved != nil {
				moved = units.Bytes(*n.BytesMoved)
			}
			if n.FreezeMS != nil {
				freeze = fmt.Sprintf("%.0f ms", *n.FreezeMS)
			}
		}
		last := "-"
		if h.LastRun != nil {
			last = "ok " + h.LastRun.Finished.Local().Format("2006-01-02 15:04")
			if !h.LastRun.OK {
				last = "FAILED " + h.LastRun.Finished.Local().Format("2006-01-02 15:04")
			}
		}
		state, maxAge := "ok", shortDuration(time.Duration(h.MaxAgeSeconds*float64(time.Second)))
		if h.MaxAgeSource != "config" {
			maxAge += " (" + h.MaxAgeSource + ")" // not set: derived, said so
		}
		if h.Stale {
			state = "STALE"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, newest, age, maxAge, files, size, moved, freeze, last, state)
	}
	tw.Flush()
	for _, h := range rep.Hosts {
		if h.LastError != "" {
			fmt.Fprintf(w, "%s: last run failed: %s\n", h.Host, strings.ReplaceAll(escape.Text(strings.TrimSpace(h.LastError)), "\n", "\n    "))
		}
		if h.Stale {
			fmt.Fprintf(w, "%s: STALE: %s\n", h.Host, h.StaleReason)
		}
		if d := h.LastDrill; d != nil {
			good := "never"
			if h.LastGoodDrill != nil {
				good = h.LastGoodDrill.Finished.Local().Format("2006-01-02 15:04")
			}
			if d.OK {
				fmt.Fprintf(w, "%s: drill ok %s (snapshot %s, %d files read back)\n", h.Host, d.Finished.Local().Format("2006-01-02 15:04"), d.SnapshotID, d.Files)
			} else {
				fmt.Fprintf(w, "%s: drill FAILED %s (snapshot %s; last good drill: %s): %s\n", h.Host, d.Finished.Local().Format("2006-01-02 15:04"),
					d.SnapshotID, good, strings.Join(d.Problems, "; "))
			}
		}
	}
}

func roughAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1fh", d.Hours())
	default:
		return fmt.Sprintf("%.1fd", d.Hours()/24)
	}
}

// shortDuration is d as Go prints it without zero tails ("26h", "1h30m").
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
