package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/inspect"
	"github.com/haulproject/haul/puller/internal/restic/ui"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdDiff = &cli.Command{
	Name:      "diff",
	Usage:     "show what changed between two snapshots, as `restic diff` does",
	ArgsUsage: "SNAPSHOT1 SNAPSHOT2",
	Description: "Each SNAPSHOT is an ID, a unique ID prefix, or latest (of --host). Each line names a path and what\n" +
		"happened to it from the first snapshot to the second: + added, - removed, M content modified,\n" +
		"T type changed, U metadata updated (only with --metadata), ? content changed but no metadata did.\n" +
		"--json prints restic's change records and its closing statistics record.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "host", Usage: "resolve latest and ID prefixes among host `NAME`'s snapshots"},
		&cli.BoolFlag{Name: "metadata", Usage: "also show items whose metadata alone changed"},
		jsonFlag,
	},
	Action: runDiff,
}

func runDiff(c *cli.Context) error {
	if c.NArg() != 2 {
		return configFailure(fmt.Errorf("diff needs two snapshots: haul diff SNAPSHOT1 SNAPSHOT2"))
	}
	return withRepo(c, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
		sn1, err := r.Find(ctx, c.String("host"), c.Args().Get(0))
		if err != nil {
			return configFailure(err)
		}
		sn2, err := r.Find(ctx, c.String("host"), c.Args().Get(1))
		if err != nil {
			return configFailure(err)
		}
		if sn1.Tree == nil || sn2.Tree == nil {
			return fmt.Errorf("snapshot %s or %s has no tree", sn1.ID.Str(), sn2.ID.Str())
		}
		w := c.App.Writer
		jsonOut := c.Bool("json")
		enc := json.NewEncoder(w)
		emit := func(ch inspect.Change) { fmt.Fprintf(w, "%-5s%v\n", ch.Modifier, escape.String(ch.Path)) }
		if jsonOut {
			emit = func(ch inspect.Change) { _ = enc.Encode(ch) }
		} else {
			fmt.Fprintf(w, "comparing snapshot %v to %v:\n\n", sn1.ID.Str(), sn2.ID.Str())
		}
		warn := func(err error) { fmt.Fprintf(c.App.ErrWriter, "error: %v\n", escape.String(err.Error())) }
		stats, err := inspect.Diff(ctx, r, c.Args().Get(0), c.Args().Get(1), *sn1.Tree, *sn2.Tree,
			inspect.DiffOptions{Metadata: c.Bool("metadata")}, emit, warn)
		if err != nil {
			return fmt.Errorf("compare snapshots %s and %s: %w", sn1.ID.Str(), sn2.ID.Str(), err)
		}
		if jsonOut {
			return enc.Encode(stats)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Files:       %5d new, %5d removed, %5d changed\n", stats.Added.Files, stats.Removed.Files, stats.ChangedFiles)
		fmt.Fprintf(w, "Dirs:        %5d new, %5d removed\n", stats.Added.Dirs, stats.Removed.Dirs)
		fmt.Fprintf(w, "Others:      %5d new, %5d removed\n", stats.Added.Others, stats.Removed.Others)
		fmt.Fprintf(w, "Data Blobs:  %5d new, %5d removed\n", stats.Added.DataBlobs, stats.Removed.DataBlobs)
		fmt.Fprintf(w, "Tree Blobs:  %5d new, %5d removed\n", stats.Added.TreeBlobs, stats.Removed.TreeBlobs)
		fmt.Fprintf(w, "  Added:   %-5s\n", ui.FormatBytes(stats.Added.Bytes))
		fmt.Fprintf(w, "  Removed: %-5s\n", ui.FormatBytes(stats.Removed.Bytes))
		return nil
	})
}
