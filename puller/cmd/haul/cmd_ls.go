package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/inspect"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdLs = &cli.Command{
	Name:      "ls",
	Usage:     "list the files in a snapshot, as `restic ls` does",
	ArgsUsage: "[PATH...]",
	Description: "Lists the latest snapshot of --host (or --snapshot ID). PATHs are absolute paths in the snapshot,\n" +
		"as on the host: only each PATH and its direct children are listed (everything below with --recursive).\n" +
		"The output is restic's: one path a line, --long adds mode, owner, size and time, --json prints\n" +
		"restic's snapshot and node records, one a line.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "host", Usage: "the snapshot's host `NAME`"},
		&cli.StringFlag{Name: "snapshot", Value: "latest", Usage: "snapshot `ID` (or a prefix) or latest"},
		&cli.BoolFlag{Name: "long", Aliases: []string{"l"}, Usage: "show mode, owner, size and modification time"},
		&cli.BoolFlag{Name: "recursive", Usage: "list everything below each PATH"},
		jsonFlag,
	},
	Action: runLs,
}

func runLs(c *cli.Context) error {
	if c.String("host") == "" && (c.String("snapshot") == "" || c.String("snapshot") == "latest") {
		return configFailure(fmt.Errorf("say which snapshot to list: --host NAME (its latest) or --snapshot ID"))
	}
	return withRepo(c, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
		sn, err := r.Find(ctx, c.String("host"), c.String("snapshot"))
		if err != nil {
			return configFailure(err)
		}
		if sn.Tree == nil {
			return fmt.Errorf("snapshot %s has no tree", sn.ID.Str())
		}
		dirs := c.Args().Slice()
		w := c.App.Writer
		var visit func(string, *data.Node) error
		if c.Bool("json") {
			enc := json.NewEncoder(w)
			if err := enc.Encode(lsSnapshot{Snapshot: sn.Snapshot, ID: &sn.ID, ShortID: sn.ID.Str(), MessageType: "snapshot", StructType: "snapshot"}); err != nil {
				return err
			}
			visit = func(p string, n *data.Node) error { return enc.Encode(inspect.NewLsNode(p, n)) }
		} else {
			fmt.Fprintf(w, "snapshot %s of %v at %s by %s@%s filtered by %v:\n", sn.ID.Str(), escape.Strings(sn.Paths), sn.Time, escape.String(sn.Username), escape.String(sn.Hostname), escape.Strings(dirs))
			long := c.Bool("long")
			visit = func(p string, n *data.Node) error {
				if long {
					p = inspect.FormatLong(p, n) // escaped there
				} else {
					p = escape.String(p)
				}
				_, err := fmt.Fprintln(w, p)
				return err
			}
		}
		err = inspect.Ls(ctx, r, *sn.Tree, inspect.LsOptions{Dirs: dirs, Recursive: c.Bool("recursive")}, visit)
		if err != nil {
			return fmt.Errorf("list snapshot %s: %w", sn.ID.Str(), err)
		}
		return nil
	})
}

// lsSnapshot is `restic ls --json`'s first record.
type lsSnapshot struct {
	*data.Snapshot
	ID          *restic.ID `json:"id"`
	ShortID     string     `json:"short_id"`     // deprecated in restic, kept for the same shape
	MessageType string     `json:"message_type"` // "snapshot"
	StructType  string     `json:"struct_type"`  // "snapshot", deprecated
}
