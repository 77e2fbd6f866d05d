// Package restore puts a snapshot back: into a local directory, as
// `restic restore` would, or onto an agent, which swaps it in safely.
package restore

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/internal/restic/restorer"
	"github.com/haulproject/haul/puller/internal/restic/ui/progress"
	restoreui "github.com/haulproject/haul/puller/internal/restic/ui/restore"
	"github.com/haulproject/haul/puller/repo"
)

// LocalResult summarises a local restore.
type LocalResult struct {
	Snapshot string `json:"snapshot"`
	Target   string `json:"target"`
	Files    uint64 `json:"files_verified"`
	// Special lists what was not restored as the snapshot has it: device
	// nodes skipped, setuid/setgid bits cleared (without AllowSpecial).
	Special *SpecialFiles `json:"special,omitempty"`
}

// LocalOptions configures a local restore.
type LocalOptions struct {
	// Select, when not nil, chooses items as restic's --include/--exclude
	// do (see Selector).
	Select func(item string, isDir bool) (bool, bool)
	// AllowSpecial restores device nodes and setuid/setgid bits; without
	// it device nodes are skipped and the bits cleared, and both listed.
	AllowSpecial bool
	// Warn receives warnings; nil discards them.
	Warn func(string)
	// Progress follows the restore ("restore", then "verify") with bytes
	// and files done of their totals, as restic's restorer counts them
	// (nil: none).
	Progress Progress
}

// Progress follows a restore for a live display (runlog.Host).
type Progress interface {
	Phase(name string)
	// Unit names what the second count counts ("files" until the next
	// Phase; an agent restore's transfer counts "chunks").
	Unit(name string)
	Counts(doneBytes, totalBytes, doneFiles, totalFiles int64)
}

// progressPrinter feeds restic's restore progress to a Progress.
type progressPrinter struct {
	*progress.NoopPrinter
	p Progress
}

func (pp progressPrinter) Update(s restoreui.State, _ time.Duration) {
	pp.p.Counts(int64(s.AllBytesWritten+s.AllBytesSkipped), int64(s.AllBytesTotal), int64(s.FilesFinished+s.FilesSkipped), int64(s.FilesTotal))
}
func (pp progressPrinter) Error(string, error) error                         { return nil }
func (pp progressPrinter) CompleteItem(restoreui.ItemAction, string, uint64) {}
func (pp progressPrinter) Finish(s restoreui.State, d time.Duration)         { pp.Update(s, d) }

// Local restores sn into target with restic's restorer, then verifies every
// restored file's content against the snapshot.
func Local(ctx context.Context, r *repo.Repo, sn *repo.Snapshot, target string, opts LocalOptions) (*LocalResult, error) {
	warn := opts.Warn
	sel := opts.Select
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, fmt.Errorf("create target %s: %w", target, err)
	}
	var loader restic.Repository = r.Repository
	var found SpecialFiles
	if !opts.AllowSpecial {
		if sn.Tree == nil {
			return nil, fmt.Errorf("snapshot %s has no tree", sn.ID.Str())
		}
		if err := findSpecial(ctx, r.Repository, *sn.Tree, "", sel, &found); err != nil {
			return nil, err
		}
		if found.Count() > 0 {
			loader = specialFilter{Repository: r.Repository}
		}
	}
	ropts := restorer.Options{Overwrite: restorer.OverwriteAlways}
	if opts.Progress != nil {
		opts.Progress.Phase("restore")
		ropts.Progress = restoreui.NewProgress(progressPrinter{NoopPrinter: &progress.NoopPrinter{}, p: opts.Progress}, 250*time.Millisecond)
	}
	res := restorer.NewRestorer(loader, sn.Snapshot, ropts)
	var warnings []string
	res.Warn = func(msg string) {
		warnings = append(warnings, msg)
		if warn != nil {
			warn(msg)
		}
	}
	if sel != nil {
		res.SelectFilter = sel
	}
	n, err := res.RestoreTo(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s to %s: %w", sn.ID.Str(), target, err)
	}
	if ropts.Progress != nil {
		ropts.Progress.Finish()
		opts.Progress.Phase("verify")
	}
	verified, err := res.VerifyFiles(ctx, target, n, nil)
	if err != nil {
		return nil, fmt.Errorf("verify restored files in %s: %w", target, err)
	}
	out := &LocalResult{Snapshot: sn.ID.String(), Target: target, Files: uint64(verified)}
	if found.Count() > 0 {
		out.Special = &found
		for _, msg := range found.Lines() {
			if warn != nil {
				warn(msg)
			}
		}
	}
	return out, nil
}
