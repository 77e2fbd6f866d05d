// Package check verifies the repository with restic's checker, as `restic
// check` does: the index, that every pack exists with its size, that every
// snapshot's trees and blobs are present, and optionally the data itself
// (all packs, or a random share of them).
package check

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/checker"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/repository"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/internal/restic/ui/progress"
	"github.com/haulproject/haul/puller/repo"
)

// Options says how much data to read.
type Options struct {
	// ReadData reads and verifies every pack.
	ReadData bool
	// ReadDataSubset reads a random share of the packs: "N%".
	ReadDataSubset string
	// Logf receives one line per phase and per problem; nil discards.
	Logf func(format string, args ...any)
	// Progress follows the check for a live display (nil: none): the
	// snapshots whose trees are checked, and with read data the pack bytes
	// read and the packs done of those chosen.
	Progress Progress
}

// Progress follows a check for a live display (runlog.Host).
type Progress interface {
	Phase(name string)
	// Unit names what the second count counts ("snapshots", "packs").
	Unit(name string)
	Counts(doneBytes, totalBytes, doneItems, totalItems int64)
}

// progressInterval is how often the checker's counters are passed on.
const progressInterval = 250 * time.Millisecond

// Result is a check's outcome; its JSON is documented in
// docs/operations.md.
type Result struct {
	OK bool `json:"ok"`
	// Errors are damage: missing or corrupt packs, blobs or trees.
	Errors []string `json:"errors"`
	// Hints are harmless findings (duplicate or unreferenced packs) that a
	// prune or `restic repair index` tidies.
	Hints []string `json:"hints"`
	// ReadData is "none", "all" or the subset read, e.g. "10%".
	ReadData    string  `json:"read_data"`
	PacksRead   int     `json:"packs_read"`
	PacksTotal  int     `json:"packs_total"`
	Snapshots   int     `json:"snapshots"`
	DurationMS  float64 `json:"duration_ms"`
	OrphanPacks int     `json:"orphan_packs"`
}

// ParseSubset parses "N%" (0 < N <= 100).
func ParseSubset(s string) (float64, error) {
	v, ok := strings.CutSuffix(strings.TrimSpace(s), "%")
	p, err := strconv.ParseFloat(v, 64)
	if !ok || err != nil || p <= 0 || p > 100 {
		return 0, fmt.Errorf("--read-data-subset %q: give a percentage such as 10%%", s)
	}
	return p, nil
}

// Run checks the repository. r must be opened with repo.OpenNoIndex (the
// checker loads and verifies the index itself) and the caller must hold
// the exclusive lock, as `restic check` does.
func Run(ctx context.Context, r *repo.Repo, opts Options) (*Result, error) {
	start := time.Now()
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := &Result{ReadData: "none", Errors: []string{}, Hints: []string{}}
	var subset float64
	switch {
	case opts.ReadData && opts.ReadDataSubset != "":
		return nil, fmt.Errorf("use --read-data or --read-data-subset, not both")
	case opts.ReadData:
		res.ReadData = "all"
	case opts.ReadDataSubset != "":
		p, err := ParseSubset(opts.ReadDataSubset)
		if err != nil {
			return nil, err
		}
		subset = p
		res.ReadData = strconv.FormatFloat(p, 'f', -1, 64) + "%"
	}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		res.Errors = append(res.Errors, msg)
		logf("error: %s", msg)
	}
	done := func() (*Result, error) {
		res.OK = len(res.Errors) == 0
		res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
		return res, ctx.Err()
	}

	chkr := checker.New(r.Repository, false)
	if err := chkr.LoadSnapshots(ctx, &data.SnapshotFilter{}, nil); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	_ = r.List(ctx, restic.SnapshotFile, func(restic.ID, int64) error { res.Snapshots++; return nil })

	prog := opts.Progress
	phase := func(name, unit string) {
		if prog != nil {
			prog.Phase(name)
			prog.Unit(unit)
		}
	}
	// counter passes a checker's item count on to prog (nil: no progress,
	// which the checker accepts).
	counter := func(bytes func(v, max uint64) (int64, int64)) *progress.Counter {
		if prog == nil {
			return nil
		}
		return progress.NewCounter(progressInterval, 0, func(v, max uint64, _ time.Duration, _ bool) {
			done, total := int64(0), int64(-1)
			if bytes != nil {
				done, total = bytes(v, max)
			}
			prog.Counts(done, total, int64(v), int64(max))
		})
	}

	logf("load indexes")
	phase("load index", "files")
	hints, errs := chkr.LoadIndex(ctx, nil)
	for _, h := range hints {
		var dup *repository.ErrDuplicatePacks
		var mixed *repository.ErrMixedPack
		if errors.As(h, &dup) || errors.As(h, &mixed) {
			res.Hints = append(res.Hints, h.Error())
			continue
		}
		fail("%v", h)
	}
	for _, err := range errs {
		fail("%v", err)
	}
	if len(errs) > 0 {
		fail("the index is damaged: run `restic repair index`")
		return done()
	}

	logf("check all packs")
	phase("check packs", "packs")
	errc := make(chan error)
	go chkr.Packs(ctx, errc)
	for err := range errc {
		var pe *repository.PackError
		if errors.As(err, &pe) && pe.Orphaned {
			res.OrphanPacks++
			continue
		}
		fail("%v", err)
	}
	if res.OrphanPacks > 0 {
		res.Hints = append(res.Hints, fmt.Sprintf("%d packs are in no index (left by an interrupted run); `haul prune` removes them", res.OrphanPacks))
	}
	if ctx.Err() != nil {
		return done()
	}

	logf("check snapshots, trees and blobs")
	phase("check snapshots", "snapshots")
	trees := counter(nil)
	errc = make(chan error)
	go chkr.Structure(ctx, trees, errc)
	for err := range errc {
		var te *checker.TreeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				fail("tree %s: %v", te.ID.Str(), e)
			}
			continue
		}
		fail("%v", err)
	}
	trees.Done()
	if ctx.Err() != nil || res.ReadData == "none" {
		return done()
	}

	logf("read %s of the data", res.ReadData)
	phase("read data", "packs")
	// The checker counts packs; the bytes are those read from the
	// backend since this phase began, of the chosen packs' sizes (a pack
	// re-read after an error can count twice: capped at the total).
	var readTotal atomic.Int64
	readTotal.Store(-1)
	readBase := r.PackBytesRead()
	packsRead := counter(func(uint64, uint64) (int64, int64) {
		total := readTotal.Load()
		done := r.PackBytesRead() - readBase
		if total >= 0 {
			done = min(done, total)
		}
		return done, total
	})
	errc = make(chan error)
	go chkr.ReadPacks(ctx, func(packs map[restic.ID]int64) map[restic.ID]int64 {
		res.PacksTotal = len(packs)
		if subset > 0 && subset < 100 {
			packs = randomShare(packs, subset)
		}
		res.PacksRead = len(packs)
		var sum int64
		for _, size := range packs {
			sum += size
		}
		readTotal.Store(sum)
		return packs
	}, packsRead, errc)
	for err := range errc {
		fail("%v", err)
	}
	packsRead.Done()
	return done()
}

// randomShare picks percent of the packs (at least one), as restic's
// --read-data-subset=N% does.
func randomShare(packs map[restic.ID]int64, percent float64) map[restic.ID]int64 {
	n := int(float64(len(packs)) * percent / 100)
	if n < 1 && len(packs) > 0 {
		n = 1
	}
	ids := make([]restic.ID, 0, len(packs))
	for id := range packs {
		ids = append(ids, id)
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	out := make(map[restic.ID]int64, n)
	for _, id := range ids[:n] {
		out[id] = packs[id]
	}
	return out
}
