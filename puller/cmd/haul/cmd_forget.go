package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/forget"
	"github.com/haulproject/haul/puller/prune"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var maintDryRunFlag = &cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only show what would be done"}

var maxUnusedFlag = &cli.StringFlag{Name: "max-unused", Value: "5%", Usage: "prune: tolerate `LIMIT` unused space (a percentage, or \"unlimited\"), as restic's --max-unused"}

var cmdForget = &cli.Command{
	Name:  "forget",
	Usage: "remove snapshots as the config's retention says (restic's forget semantics, grouped by host and paths)",
	Description: `Applies [retention] (or a host's [hosts.retention]) to each group of snapshots
with the same host and paths, exactly as ` + "`restic forget --keep-*`" + ` does. --json
prints restic forget's JSON. --prune then removes the data no snapshot uses.`,
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Usage: "only snapshots of host `NAME` (repeatable)"},
		&cli.BoolFlag{Name: "prune", Usage: "prune the repository afterwards if snapshots were removed"},
		maintDryRunFlag, maxUnusedFlag, jsonFlag, cronQuietFlag,
	},
	Action: func(c *cli.Context) error {
		return runForget(c, forgetOptions{
			Hosts: c.StringSlice("host"), Prune: c.Bool("prune"), DryRun: c.Bool("dry-run"),
			MaxUnused: c.String("max-unused"), JSON: c.Bool("json"), Quiet: c.Bool("quiet"),
		})
	},
}

type forgetOptions struct {
	Hosts         []string
	Prune, DryRun bool
	MaxUnused     string
	JSON, Quiet   bool
}

func runForget(c *cli.Context, opts forgetOptions) error {
	log := newRunLog(c)
	defer log.Close()
	// Deciding is read-only; removing needs restic's exclusive lock.
	return withLockedRepo(c, opts.DryRun, log.Logf, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
		res, err := forget.Run(ctx, r, forget.Options{
			Hosts: opts.Hosts, PolicyFor: cfg.RetentionFor, DryRun: opts.DryRun,
			Prune: opts.Prune, MaxUnused: opts.MaxUnused, Logf: log.Logf,
			Planned: func(plan *forget.Plan) error {
				if opts.JSON {
					groups := plan.Groups
					if groups == nil {
						groups = []*forget.Group{}
					}
					return json.NewEncoder(c.App.Writer).Encode(groups)
				}
				if !opts.Quiet {
					printForgetPlan(c.App.Writer, plan, opts.DryRun)
				}
				return nil
			},
		})
		if err != nil {
			return configFailure(err)
		}
		if res.Prune != nil {
			logPruneResult(log.Logf, res.Prune)
		}
		return nil
	})
}

func printForgetPlan(w io.Writer, plan *forget.Plan, dry bool) {
	verb := "remove"
	if dry {
		verb = "would remove"
	}
	for _, g := range plan.Groups {
		fmt.Fprintf(w, "snapshots of host %s, paths %s: %s\n", g.Host, strings.Join(g.Paths, ", "), g.Policy)
		reasons := map[string][]string{}
		for _, kr := range g.Reasons {
			reasons[kr.Snapshot.ID.String()] = kr.Matches
		}
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintf(tw, "  keep %d:\n", len(g.Keep))
		for _, s := range g.Keep {
			fmt.Fprintf(tw, "    %s\t%s\t%s\n", s.ShortID, s.Time.Format("2006-01-02 15:04:05"), strings.Join(reasons[s.ID.String()], ", "))
		}
		fmt.Fprintf(tw, "  %s %d:\n", verb, len(g.Remove))
		for _, s := range g.Remove {
			fmt.Fprintf(tw, "    %s\t%s\t\n", s.ShortID, s.Time.Format("2006-01-02 15:04:05"))
		}
		tw.Flush()
	}
}

func logPruneResult(logf func(string, ...any), res *prune.Result) {
	verb := "removed"
	if res.DryRun {
		verb = "would remove"
	}
	logf("prune %s %d blobs (%s) in %d packs, repacked %d blobs (%s); %s still in use",
		verb, res.BlobsRemoved, units.Bytes(int64(res.BytesRemoved)), res.PacksRemoved,
		res.BlobsRepacked, units.Bytes(int64(res.BytesRepacked)), units.Bytes(int64(res.BytesUsed)))
}
