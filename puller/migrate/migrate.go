// Package migrate moves a host's data to a new host: it backs up the old
// host, restores the snapshot onto the new one, backs the new one up and
// compares the two snapshots node by node, and only then marks the new
// host ready, so its stack never starts on unverified data.
package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/pull"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/runlog"
)

// Result is a migration's outcome (`haul migrate --json`).
type Result struct {
	From       string               `json:"from"`
	To         string               `json:"to"`
	DryRun     bool                 `json:"dry_run,omitempty"`
	Mapping    *restore.Mapping     `json:"mapping,omitempty"`
	Backup     *backup.Result       `json:"backup"`
	Restore    *restore.AgentResult `json:"restore"`
	Verify     *backup.Result       `json:"verify_backup"`
	Comparison *restore.Comparison  `json:"comparison"`
	Marker     string               `json:"marker,omitempty"`
	DurationMS float64              `json:"duration_ms"`
}

// Options say what to migrate.
type Options struct {
	From, To *config.Host // two different hosts
	// Restore holds the restore's path maps (nil: the same paths, or one
	// path each mapped automatically), ReplaceLiveData and AllowSpecial;
	// Run sets the rest.
	Restore restore.AgentOptions
	// DryRun backs nothing up: it stages and verifies From's latest
	// snapshot on To, shows the mapping, and changes nothing.
	DryRun bool
	Logf   func(format string, args ...any)
	// Log, when set, shows each step (the backup of From, the restore
	// onto To, the verifying backup of To) on its progress line, one
	// entry per step.
	Log *runlog.Log
}

// Run migrates opts.From's data onto opts.To through repository r, one
// handle for the whole migration (opening derives the key): its index is
// reloaded after each backup instead of opening again. The Result is
// filled as far as the migration got, also on error.
func Run(ctx context.Context, cfg *config.Config, r *repo.Repo, opts Options) (*Result, error) {
	from, to, logf := opts.From, opts.To, opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// step starts a step's entry on the progress line (nil: none); done
	// ends it.
	step := func(host string) (*runlog.Host, func()) {
		if opts.Log == nil {
			return nil, func() {}
		}
		h := opts.Log.Host(host)
		return h, h.Done
	}
	start := time.Now()
	out := &Result{From: from.Name, To: to.Name, DryRun: opts.DryRun}
	ropts := opts.Restore
	ropts.Logf = logf
	restoreOnto := func(sn *repo.Snapshot) (*restore.AgentResult, error) {
		h, done := step(to.Name)
		defer done()
		if h != nil {
			ropts.Progress = h
		}
		return pull.RestoreOnto(ctx, cfg, r, sn, to, ropts)
	}
	backupOf := func(h *config.Host, tag string) (*backup.Result, error) {
		p, done := step(h.Name)
		defer done()
		return pull.Host(ctx, cfg, h, pull.HostOptions{Tags: []string{tag}, Logf: logf, Repo: r, Progress: p})
	}
	var err error
	if opts.DryRun {
		sn, err := r.Find(ctx, from.Name, "latest")
		if err != nil {
			return out, fmt.Errorf("migrate --dry-run uses %s's latest snapshot: %w; back it up first with `haul backup --host %s`", from.Name, err, from.Name)
		}
		ropts.DryRun = true
		out.Restore, err = restoreOnto(sn)
		if err != nil {
			return out, fmt.Errorf("migrate --dry-run: %w", err)
		}
		out.Mapping = out.Restore.Mapping
		out.DurationMS = float64(time.Since(start).Microseconds()) / 1000
		return out, nil
	}
	// The mapping is resolved against To's data paths when the restore
	// session opens, before To receives anything: a wrong map costs only
	// this backup, which is a snapshot like any other.
	logf("migrate %s → %s: backing up %s", from.Name, to.Name, from.Name)
	out.Backup, err = backupOf(from, "migrate")
	if err != nil {
		return out, fmt.Errorf("migrate: backup of %s: %w; nothing was changed on %s", from.Name, err, to.Name)
	}

	sn, err := saved(ctx, r, out.Backup)
	if err != nil {
		return out, err
	}
	ropts.NoMarker = true
	out.Restore, err = restoreOnto(sn)
	if err != nil {
		return out, fmt.Errorf("migrate: %w", err)
	}
	out.Mapping = out.Restore.Mapping

	logf("%s: backing up to verify the restored data", to.Name)
	out.Verify, err = backupOf(to, "migrate-verify")
	if err != nil {
		return out, fmt.Errorf("migrate: verification backup of %s: %w; %s is NOT marked ready", to.Name, err, to.Name)
	}
	verify, err := saved(ctx, r, out.Verify)
	if err != nil {
		return out, err
	}
	// NEW holds OLD's data at the mapped places: compare through them.
	out.Comparison, err = restore.CompareMapped(ctx, r, sn, verify, out.Restore.Mapping)
	if err != nil {
		return out, fmt.Errorf("migrate: compare snapshots: %w; %s is NOT marked ready", err, to.Name)
	}
	if !out.Comparison.Equal() {
		return out, fmt.Errorf("migrate: %s's data differs from %s's snapshot %s in %d places; %s is NOT marked ready, its stack stays off:\n  %s",
			to.Name, from.Name, sn.ID.Str(), out.Comparison.DiffCount, to.Name, strings.Join(out.Comparison.Diffs, "\n  "))
	}

	mark, err := restore.MarkReady(ctx, pull.Connecter(to, true), sn.ID.String(), from.Name)
	if err != nil {
		return out, fmt.Errorf("migrate: %s's data is restored and verified, but: %w; mark it by hand with `haul-agent mark-ready` on %s", to.Name, err, to.Name)
	}
	out.Marker = mark.Marker
	out.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return out, nil
}

// saved reloads r's index, which the backup just added to, and returns the
// snapshot the backup saved.
func saved(ctx context.Context, r *repo.Repo, b *backup.Result) (*repo.Snapshot, error) {
	if err := r.LoadIndex(ctx, nil); err != nil {
		return nil, err
	}
	return r.Find(ctx, b.Host, b.SnapshotID)
}
