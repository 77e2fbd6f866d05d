package main

import (
	"encoding/json"
	"fmt"
	"github.com/haulproject/haul/internal/units"
	"io"
	"strings"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/restore"
	"github.com/urfave/cli/v2"
)

var cmdMigrate = &cli.Command{
	Name:  "migrate",
	Usage: "move a host's data to a new host: back up OLD, restore onto NEW, verify both trees match, then mark NEW ready",
	Description: "The cut-over from one VPS to another (the hand-built one to the NixOS one). Stop the stack on OLD\n" +
		"first if no write may be lost: the backup is consistent, but writes after it stay on OLD.\n" +
		"NEW must have the same data_paths and must not be ready yet (or allow in-place restores).\n" +
		"Its ready marker is written only after a backup of NEW matches OLD's snapshot node by node\n" +
		"(content, type, mode, mtime, owner, link target), so its stack never starts on unverified data.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "from", Required: true, Usage: "the old host `NAME`"},
		&cli.StringFlag{Name: "to", Required: true, Usage: "the new host `NAME`"},
		jsonFlag,
	},
	Action: runMigrate,
}

// migrateResult is `haul migrate --json`.
type migrateResult struct {
	From       string               `json:"from"`
	To         string               `json:"to"`
	Backup     *backup.Result       `json:"backup"`
	Restore    *restore.AgentResult `json:"restore"`
	Verify     *backup.Result       `json:"verify_backup"`
	Comparison *restore.Comparison  `json:"comparison"`
	Marker     string               `json:"marker,omitempty"`
	DurationMS float64              `json:"duration_ms"`
}

func runMigrate(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	from, err := cfg.Host(c.String("from"))
	if err != nil {
		return configFailure(err)
	}
	to, err := cfg.Host(c.String("to"))
	if err != nil {
		return configFailure(err)
	}
	if from.Name == to.Name {
		return configFailure(fmt.Errorf("--from and --to are both %s; name the old and the new host", from.Name))
	}
	ctx, cancel := signalContext(c)
	defer cancel()
	jsonOut := c.Bool("json")
	logf := progress(c, jsonOut)
	start := time.Now()
	out := &migrateResult{From: from.Name, To: to.Name}

	// One handle for the whole migration (opening derives the key): it
	// reloads the index after each backup instead of opening again.
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	logf("migrate %s → %s: backing up %s", from.Name, to.Name, from.Name)
	out.Backup, err = backupHost(ctx, cfg, from, []string{"migrate"}, logf)
	if err != nil {
		return hostFailure(fmt.Errorf("migrate: backup of %s: %w; nothing was changed on %s", from.Name, err, to.Name))
	}

	if err := r.LoadIndex(ctx, nil); err != nil {
		return configFailure(err)
	}
	sn, err := r.Find(ctx, from.Name, out.Backup.SnapshotID)
	if err != nil {
		return configFailure(err)
	}
	out.Restore, err = restoreOnto(ctx, cfg, r, sn, to, restore.AgentOptions{NoMarker: true, Logf: logf})
	if err != nil {
		return hostFailure(fmt.Errorf("migrate: %w", err))
	}

	logf("%s: backing up to verify the restored data", to.Name)
	out.Verify, err = backupHost(ctx, cfg, to, []string{"migrate-verify"}, logf)
	if err != nil {
		return hostFailure(fmt.Errorf("migrate: verification backup of %s: %w; %s is NOT marked ready", to.Name, err, to.Name))
	}
	if err := r.LoadIndex(ctx, nil); err != nil {
		return configFailure(err)
	}
	verify, err := r.Find(ctx, to.Name, out.Verify.SnapshotID)
	if err != nil {
		return configFailure(err)
	}
	out.Comparison, err = restore.CompareSnapshots(ctx, r, sn, verify)
	if err != nil {
		return hostFailure(fmt.Errorf("migrate: compare snapshots: %w; %s is NOT marked ready", err, to.Name))
	}
	if !out.Comparison.Equal() {
		if jsonOut {
			_ = printJSON(c.App.Writer, out)
		}
		return hostFailure(fmt.Errorf("migrate: %s's data differs from %s's snapshot %s in %d places; %s is NOT marked ready, its stack stays off:\n  %s",
			to.Name, from.Name, sn.ID.Str(), out.Comparison.DiffCount, to.Name, strings.Join(out.Comparison.Diffs, "\n  ")))
	}

	mark, err := restore.MarkReady(ctx, connecter(to, true), sn.ID.String(), from.Name)
	if err != nil {
		return hostFailure(fmt.Errorf("migrate: %s's data is restored and verified, but: %w; mark it by hand with `haul-agent mark-ready` on %s", to.Name, err, to.Name))
	}
	out.Marker = mark.Marker
	out.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	if jsonOut {
		return printJSON(c.App.Writer, out)
	}
	printMigrate(c.App.Writer, out, mark)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printMigrate(w io.Writer, m *migrateResult, mark *proto.RestoreResult) {
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
	fmt.Fprintf(w, "  verified: backup of %s (snapshot %s) equals snapshot %s in all %d nodes under %s\n",
		m.To, m.Verify.SnapshotID[:8], b.SnapshotID[:8], m.Comparison.Nodes, strings.Join(m.Comparison.Paths, ", "))
	fmt.Fprintf(w, "  %s marked ready: %s\n", m.To, mark.Marker)
}
