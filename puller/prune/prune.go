// Package prune removes the data no snapshot references any more, with
// restic's own planner and executor (repository.PlanPrune), and restic's
// defaults: repack packs until at most 5% of the repository is unused.
package prune

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/repository"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/internal/restic/ui/progress"
	"github.com/haulproject/haul/puller/repo"
)

// Options configures a prune.
type Options struct {
	DryRun bool
	// MaxUnused is restic's --max-unused as a percentage ("5%", the
	// default) or "unlimited".
	MaxUnused string
	// Ignore lists snapshots just forgotten (restic passes them too, in
	// case a listing still shows them).
	Ignore restic.IDSet
	// Logf receives restic's progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// Result is what the prune did (or would do, with DryRun): restic's
// statistics, in JSON.
type Result struct {
	DryRun bool `json:"dry_run"`
	// Blobs and bytes still referenced by a snapshot.
	BlobsUsed uint   `json:"blobs_used"`
	BytesUsed uint64 `json:"bytes_used"`
	// Unreferenced blobs and bytes before the prune.
	BlobsUnused uint   `json:"blobs_unused"`
	BytesUnused uint64 `json:"bytes_unused"`
	// What the prune deletes, directly or by repacking.
	BlobsRemoved uint   `json:"blobs_removed"`
	BytesRemoved uint64 `json:"bytes_removed"`
	// Used blobs copied out of partly used packs.
	BlobsRepacked uint    `json:"blobs_repacked"`
	BytesRepacked uint64  `json:"bytes_repacked"`
	PacksRemoved  uint    `json:"packs_removed"`
	PacksRepacked uint    `json:"packs_repacked"`
	PacksKept     uint    `json:"packs_kept"`
	DurationMS    float64 `json:"duration_ms"`
}

func result(dryRun bool, st repository.PruneStats) *Result {
	return &Result{
		DryRun:    dryRun,
		BlobsUsed: st.Blobs.Used, BytesUsed: st.Size.Used,
		BlobsUnused: st.Blobs.Unused + st.Blobs.Duplicate, BytesUnused: st.Size.Unused + st.Size.Duplicate + st.Size.Unref,
		BlobsRemoved: st.Blobs.Remove + st.Blobs.Repackrm, BytesRemoved: st.Size.Remove + st.Size.Repackrm + st.Size.Unref,
		BlobsRepacked: st.Blobs.Repack - st.Blobs.Repackrm, BytesRepacked: st.Size.Repack - st.Size.Repackrm,
		PacksRemoved: st.Packs.Remove + st.Packs.Unref, PacksRepacked: st.Packs.Repack, PacksKept: st.Packs.Keep,
	}
}

// Run prunes r. The caller must hold the exclusive lock.
func Run(ctx context.Context, r *repo.Repo, opts Options) (*Result, error) {
	start := time.Now()
	maxUnused, err := parseMaxUnused(opts.MaxUnused)
	if err != nil {
		return nil, err
	}
	pr := &printer{logf: opts.Logf}
	if pr.logf == nil {
		pr.logf = func(string, ...any) {}
	}
	// Under the exclusive lock the index cannot change any more.
	if err := r.LoadIndex(ctx, nil); err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	popts := repository.PruneOptions{
		DryRun:         opts.DryRun,
		MaxUnusedBytes: maxUnused,
		MaxRepackBytes: math.MaxUint64,
	}
	plan, err := repository.PlanPrune(ctx, popts, r.Repository, func(ctx context.Context, rr restic.Repository, used restic.FindBlobSet) error {
		return usedBlobs(ctx, rr, used, opts.Ignore)
	}, pr)
	if err != nil {
		return nil, fmt.Errorf("plan prune of %s: %w", r.Path, err)
	}
	res := result(opts.DryRun, plan.Stats())
	if err := plan.Execute(ctx, pr); err != nil {
		return res, fmt.Errorf("prune %s: %w", r.Path, err)
	}
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return res, nil
}

// usedBlobs marks every blob reachable from a snapshot, as restic's
// getUsedBlobs does.
func usedBlobs(ctx context.Context, r restic.Repository, used restic.FindBlobSet, ignore restic.IDSet) error {
	var trees restic.IDs
	err := data.ForAllSnapshots(ctx, r, r, ignore, func(id restic.ID, sn *data.Snapshot, err error) error {
		if err != nil {
			return fmt.Errorf("load snapshot %s: %w", id.Str(), err)
		}
		if sn.Tree == nil {
			return fmt.Errorf("snapshot %s has no tree", id.Str())
		}
		trees = append(trees, *sn.Tree)
		return nil
	})
	if err != nil {
		return err
	}
	return data.FindUsedBlobs(ctx, r, trees, used, nil)
}

func parseMaxUnused(s string) (func(used uint64) uint64, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		s = "5%"
	case s == "unlimited":
		return func(uint64) uint64 { return math.MaxUint64 }, nil
	}
	p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || !strings.HasSuffix(s, "%") || p < 0 || p >= 100 {
		return nil, fmt.Errorf("max unused %q: give a percentage below 100%% (e.g. \"5%%\") or \"unlimited\"", s)
	}
	return func(used uint64) uint64 { return uint64(p / (100 - p) * float64(used)) }, nil
}

// printer forwards restic's messages to a log function.
type printer struct{ logf func(string, ...any) }

func (p *printer) NewCounter(string) *progress.Counter             { return nil }
func (p *printer) NewCounterTerminalOnly(string) *progress.Counter { return nil }
func (p *printer) E(msg string, args ...any)                       { p.print(msg, args...) }
func (p *printer) S(msg string, args ...any)                       { p.print(msg, args...) }
func (p *printer) PT(string, ...any)                               {}
func (p *printer) P(msg string, args ...any)                       { p.print(msg, args...) }
func (p *printer) V(string, ...any)                                {}
func (p *printer) VV(string, ...any)                               {}

func (p *printer) print(msg string, args ...any) {
	if s := strings.TrimSpace(fmt.Sprintf(msg, args...)); s != "" {
		p.logf("%s", s)
	}
}
