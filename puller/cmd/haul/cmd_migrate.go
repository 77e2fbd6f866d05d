package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/migrate"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/urfave/cli/v2"
)

var cmdMigrate = &cli.Command{
	Name:  "migrate",
	Usage: "move a host's data to a new host: back up OLD, restore onto NEW, verify both trees match, then mark NEW ready",
	Description: "The cut-over from one VPS to another (the hand-built one to the NixOS one). Stop the stack on OLD\n" +
		"first if no write may be lost: the backup is consistent, but writes after it stay on OLD.\n" +
		"NEW must not be ready yet (or allow in-place restores). OLD's data paths go onto NEW's: the same paths\n" +
		"stay, one path onto one other path is mapped automatically (a Pangolin config/ directory into config/ of\n" +
		"the project directory), else --map SRC=DST for each; the mapping is checked before NEW receives anything.\n" +
		"--dry-run uses OLD's latest snapshot, stages and verifies it on NEW and shows the mapping; nothing is swapped.\n" +
		"Its ready marker is written only after a backup of NEW matches OLD's snapshot node by node\n" +
		"(content, type, mode, mtime, owner, link target), so its stack never starts on unverified data.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "from", Required: true, Usage: "the old host `NAME`"},
		&cli.StringFlag{Name: "to", Required: true, Usage: "the new host `NAME`"},
		&cli.BoolFlag{Name: "dry-run", Usage: "no backup: stage and verify OLD's latest snapshot on NEW, show the mapping, change nothing"},
		mapFlag,
		replaceLiveFlag,
		allowSpecialFlag,
		jsonFlag,
	},
	Action: func(c *cli.Context) error {
		ropts, err := restoreFlags(c)
		if err != nil {
			return configFailure(err)
		}
		return runMigrate(c, migrateOptions{From: c.String("from"), To: c.String("to"), JSON: c.Bool("json"), DryRun: c.Bool("dry-run"), Restore: ropts})
	},
}

type migrateOptions struct {
	From, To string
	JSON     bool
	DryRun   bool
	Restore  restore.AgentOptions
}

func runMigrate(c *cli.Context, opts migrateOptions) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	from, err := cfg.Host(opts.From)
	if err != nil {
		return configFailure(err)
	}
	to, err := cfg.Host(opts.To)
	if err != nil {
		return configFailure(err)
	}
	if from.Name == to.Name {
		return configFailure(fmt.Errorf("--from and --to are both %s; name the old and the new host", from.Name))
	}
	return withConfigRepo(c, cfg, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
		log := newRunLog(c) // events, and each step's progress on a terminal
		out, err := migrate.Run(ctx, cfg, r, migrate.Options{From: from, To: to, Restore: opts.Restore, DryRun: opts.DryRun, Logf: log.Logf, Log: log})
		log.Close()
		if err != nil {
			if opts.JSON && out != nil && out.Comparison != nil && !out.Comparison.Equal() {
				_ = printJSON(c.App.Writer, out)
			}
			return hostFailure(err)
		}
		if opts.JSON {
			return printJSON(c.App.Writer, out)
		}
		if out.DryRun {
			fmt.Fprintf(c.App.Writer, "migrate %s → %s, dry run with %s's latest snapshot:\n", out.From, out.To, out.From)
			printAgentRestore(c.App.Writer, out.Restore)
			return nil
		}
		printMigrate(c.App.Writer, out)
		return nil
	})
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printMigrate(w io.Writer, m *migrate.Result) {
	fmt.Fprintf(w, "migrated %s → %s in %.2fs\n", m.From, m.To, m.DurationMS/1000)
	b := m.Backup
	fmt.Fprintf(w, "  backup of %s: snapshot %s, %d files, %s, freeze %.1f ms, %.2fs\n",
		m.From, b.SnapshotID[:8], b.Files, units.Bytes(b.Bytes), b.FreezeMS, b.DurationMS/1000)
	o := m.Restore.Outcome
	fmt.Fprintf(w, "  restore onto %s: %d files, %s, %d chunks, %s on the wire, swap freeze %.1f ms, %.2fs\n",
		m.To, o.Files, units.Bytes(o.Bytes), m.Restore.ChunksSent, units.Bytes(m.Restore.Wire.BytesIn+m.Restore.Wire.BytesOut), o.FreezeMS, m.Restore.DurationMS/1000)
	if len(o.Kept) > 0 {
		fmt.Fprintf(w, "  previous data on %s kept as %s\n", m.To, strings.Join(o.Kept, ", "))
	}
	printMapping(w, m.Mapping)
	fmt.Fprintf(w, "  verified: backup of %s (snapshot %s) equals snapshot %s in all %d nodes under %s\n",
		m.To, m.Verify.SnapshotID[:8], b.SnapshotID[:8], m.Comparison.Nodes, strings.Join(m.Comparison.Paths, ", "))
	fmt.Fprintf(w, "  %s marked ready: %s\n", m.To, m.Marker)
}
