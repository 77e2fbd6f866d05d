package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/agent/restore"
	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/proto"
	"github.com/klauspost/compress/zstd"
)

// restore serves a restore session (the restore key's verb): a snapshot
// streamed into staging beside the live data and swapped in, or a bare
// TMark. See "Restore session" in proto/PROTOCOL.md.
func (s *session) restore(ctx context.Context) error {
	t, p, err := s.next(ctx)
	if err != nil {
		return err
	}
	switch t {
	case proto.TMark:
		var m proto.Mark
		if err := proto.Decode(t, p, &m); err != nil {
			return err
		}
		return s.mark(&m)
	case proto.TRestoreBegin:
		var b proto.RestoreBegin
		if err := proto.Decode(t, p, &b); err != nil {
			return err
		}
		return s.restoreSnapshot(ctx, &b)
	case proto.TError:
		return pullerReported(p)
	}
	return proto.Errorf(proto.CodeProtocol, "expected restore-begin or mark, got %s", t)
}

// mark writes the ready marker without restoring: the host's data is in
// place by other means.
func (s *session) mark(m *proto.Mark) error {
	path, err := WriteReadyMarker(s.Config, ReadyMarker{By: "mark", Snapshot: m.Snapshot, SnapshotHost: m.Host})
	if err != nil {
		return err
	}
	s.logf("marked %s ready: %s", s.Config.Host, path)
	return s.conn.Send(proto.TRestoreResult, &proto.RestoreResult{Marker: path, Phases: []proto.Phase{}})
}

// refuseRestore says why this agent will not take a restore at all; it is
// checked before anything on disk changes.
func (s *session) refuseRestore(b *proto.RestoreBegin) error {
	want := slices.Clone(s.Config.DataPaths)
	got := make([]string, len(b.Paths))
	for i, p := range b.Paths {
		got[i] = strings.TrimSuffix(p, "/")
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return proto.Errorf(proto.CodeRefused, "snapshot %s of host %s holds paths %s, but this agent's data_paths are %s: restore it onto a host with the same data paths, or restore it locally with `haul restore --target DIR`. Nothing was changed",
			short(b.Snapshot), b.Host, strings.Join(got, ", "), strings.Join(want, ", "))
	}
	if s.Config.Ready() && !s.Config.AllowInplaceRestore {
		return proto.Errorf(proto.CodeRefused, "host %s is ready (%s exists) and its agent config does not set allow_inplace_restore: a restore onto a running host is refused, so a stolen restore key cannot overwrite it. "+
			"Restore onto a fresh host instead, or, to replace this host's data on purpose, set \"allow_inplace_restore\": true in the agent config. Nothing was changed",
			s.Config.Host, s.Config.ReadyMarker)
	}
	if !s.Config.Ready() && !s.Config.AllowInplaceRestore && !b.ReplaceLiveData && !b.DryRun {
		if live := liveDataPaths(s.Config.DataPaths); len(live) > 0 {
			return proto.Errorf(proto.CodeRefused, "host %s has data in %s but no ready marker (%s): it was set up by other means (by hand, or its marker was removed), and this restore would replace that data. Nothing was changed. "+
				"To see what would change: run the same `haul restore` with --dry-run (stages and verifies the snapshot beside the data, lists what the swap would change, touches nothing), or back this host up and `haul diff` that snapshot with the one to restore. "+
				"To proceed: add --replace-live-data (the current data is kept as <path>.prev-<time>), or set \"allow_inplace_restore\": true in the agent config",
				s.Config.Host, strings.Join(live, ", "), s.Config.ReadyMarker)
		}
	}
	return nil
}

// liveDataPaths returns the data paths that exist and hold something. A
// fresh host has its data paths missing or empty. Anything that is not
// known to be an empty directory (a file in its place, a directory that
// cannot be read) counts as live: the swap would replace it.
func liveDataPaths(paths []string) []string {
	var live []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				live = append(live, p) // unreadable: not known to be empty
			}
			continue
		}
		names, err := f.Readdirnames(1)
		f.Close()
		if len(names) > 0 || !errors.Is(err, io.EOF) {
			live = append(live, p)
		}
	}
	return live
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// restoreSnapshot receives the tree and the chunks into staging, verifies
// them, and swaps them in while the targets are quiesced. Until the swap,
// any failure removes the staging copy and leaves the live data and the
// services as they were.
func (s *session) restoreSnapshot(ctx context.Context, b *proto.RestoreBegin) error {
	if err := s.refuseRestore(b); err != nil {
		return err
	}
	ready := s.Config.Ready()
	res := &proto.RestoreResult{DryRun: b.DryRun}
	phase := func(name string, t time.Time) {
		res.Phases = append(res.Phases, proto.Phase{Name: name, MS: ms(time.Since(t))})
	}
	st := restore.NewStage(s.Config.restoreHost())
	st.AllowSpecial = b.AllowSpecial || s.Config.AllowSpecialFiles
	if err := st.CheckPaths(); err != nil {
		return err
	}
	swapped := false
	defer func() {
		if swapped {
			st.CloseAll()
			return
		}
		if err := st.Remove(); err != nil {
			s.logf("warning: %v", err)
		}
	}()
	s.logf("restore of snapshot %s (host %s) into %s: staging", short(b.Snapshot), b.Host, strings.Join(s.Config.DataPaths, ", "))

	t := time.Now()
	if err := s.receiveTree(ctx, st); err != nil {
		return err
	}
	st.SpecialSummary()
	res.DevicesSkipped, res.SetidCleared = st.Special()
	phase("tree", t)

	t = time.Now()
	if err := s.sendWants(st.Wanted()); err != nil {
		return err
	}
	if err := s.receiveChunks(ctx, st, res); err != nil {
		return err
	}
	phase("transfer", t)

	t = time.Now()
	if err := s.reportPhase(proto.PhaseSync); err != nil {
		return err
	}
	if err := st.Sync(); err != nil {
		return err
	}
	phase("sync", t)
	t = time.Now()
	if err := s.reportPhase(proto.PhaseVerify); err != nil {
		return err
	}
	if err := st.Verify(ctx); err != nil {
		return err
	}
	phase("verify", t)
	t = time.Now()
	if err := s.reportPhase(proto.PhaseMetadata); err != nil {
		return err
	}
	if err := st.ApplyMetadata(); err != nil {
		return err
	}
	if err := st.Sync(); err != nil {
		return err
	}
	phase("metadata", t)
	res.Files, res.Dirs, res.Bytes = st.Counts()

	if b.DryRun {
		// What the swap would replace: an operator looks here before
		// --replace-live-data.
		if len(liveDataPaths(s.Config.DataPaths)) > 0 {
			changes, n, err := st.LiveChanges()
			if err != nil {
				st.Warn("%v", err)
			}
			res.Changes, res.ChangeCount = changes, n
		}
		// Removed before answering, so the staging copy is gone when the
		// puller reports the dry run done.
		if err := st.Remove(); err != nil {
			return proto.Errorf(proto.CodeIO, "dry run: %v", err)
		}
		res.Warnings = st.Warnings()
		s.logf("dry run: snapshot %s staged and verified (%d files, %s); staging removed, nothing swapped", short(b.Snapshot), res.Files, units.Bytes(res.Bytes))
		return s.conn.Send(proto.TRestoreResult, res)
	}

	q, err := s.quiescer()
	if err != nil {
		return proto.Errorf(proto.CodeFreeze, "%v", err)
	}
	if !ready {
		q = &freshHostQuiescer{Quiescer: q, warn: st.Warn}
	}
	if err := s.reportPhase(proto.PhaseSwap); err != nil {
		return err
	}
	// The ready marker travels in the swap journal: an agent killed after
	// the swap but before writing it leaves it to recover (FinishSwap).
	mark := ReadyMarker{By: "restore", Snapshot: b.Snapshot, SnapshotHost: b.Host, SnapshotTime: b.Time}
	var marker json.RawMessage
	if !b.NoMarker {
		if marker, err = json.Marshal(mark); err != nil {
			return proto.Errorf(proto.CodeInternal, "ready marker: %v", err)
		}
	}
	res.SwapStarted = time.Now()
	var kept []string
	_, phases, window, err := Freeze(ctx, q, s.Config, func(context.Context) (mirror.Stats, error) {
		var serr error
		kept, serr = st.Swap(res.SwapStarted, marker)
		swapped = serr == nil
		return mirror.Stats{}, serr
	})
	res.SwapEnded = time.Now()
	res.FreezeMS = ms(window)
	for _, p := range phases {
		if p.Name == "sync" {
			p.Name = "swap"
		}
		res.Phases = append(res.Phases, p)
	}
	res.Kept = kept
	if err != nil && !swapped {
		return fmt.Errorf("%w; the live data is untouched", err)
	}
	// From here the restored data is live: report every later failure
	// as such, never as "nothing changed".
	t = time.Now()
	if perr := s.reportPhase(proto.PhaseFinish); perr != nil {
		s.logf("warning: %v", perr) // the session's end reports a lost puller
	}
	pruned, perr := restore.PrunePrevious(s.Config.restoreHost())
	res.Pruned = pruned
	if perr != nil {
		st.Warn("pruning previous copies: %v", perr)
	}
	if !b.NoMarker {
		path, merr := WriteReadyMarker(s.Config, mark)
		if merr == nil {
			merr = st.EndSwap()
		}
		if merr != nil {
			err = errors.Join(err, merr)
		}
		res.Marker = path
	}
	phase("finish", t)
	if err != nil {
		return fmt.Errorf("snapshot %s is swapped in (previous data kept as %s), but: %w", short(b.Snapshot), strings.Join(kept, ", "), err)
	}
	res.Warnings = st.Warnings()
	s.logf("restored snapshot %s: %d files, %s; targets quiesced for %.1f ms", short(b.Snapshot), res.Files, units.Bytes(res.Bytes), res.FreezeMS)
	return s.conn.Send(proto.TRestoreResult, res)
}

// reportPhase tells a puller that takes progress frames which step of the
// commit has begun.
func (s *session) reportPhase(name string) error {
	if !s.progress {
		return nil
	}
	return s.conn.Send(proto.TProgress, &proto.Progress{Phase: name})
}

// receiveTree builds the staging tree from the TNode/TDirEnd stream.
func (s *session) receiveTree(ctx context.Context, st *restore.Stage) error {
	for {
		t, p, err := s.next(ctx)
		if err != nil {
			return err
		}
		switch t {
		case proto.TNode:
			var n proto.Node
			if err := proto.Decode(t, p, &n); err != nil {
				return err
			}
			if err := st.Add(&n); err != nil {
				return err
			}
		case proto.TDirEnd:
			if err := st.Leave(); err != nil {
				return err
			}
		case proto.TManifestEnd:
			var end proto.ManifestEnd
			if err := proto.Decode(t, p, &end); err != nil {
				return err
			}
			return st.Finish(&end)
		case proto.TError:
			return pullerReported(p)
		default:
			return proto.Errorf(proto.CodeProtocol, "unexpected %s while receiving the tree", t)
		}
	}
}

// sendWants asks for every chunk the staging tree needs, then sends an
// empty want as the end marker.
func (s *session) sendWants(ids []proto.ID) error {
	for len(ids) > 0 {
		n := min(len(ids), proto.MaxWantIDs)
		if err := s.conn.W.Write(proto.TRestoreWant, proto.EncodeWant(ids[:n])); err != nil {
			return err
		}
		ids = ids[n:]
	}
	if err := s.conn.W.Write(proto.TRestoreWant); err != nil {
		return err
	}
	return s.conn.W.Flush()
}

// chunkJob is one received chunk and where it goes.
type chunkJob struct {
	c    proto.Chunk
	locs []restore.ChunkLoc
}

// receiveChunks takes chunks until TRestoreCommit. Only chunks that were
// asked for and not yet received are accepted; workers verify each one's
// SHA-256 before writing it at every place that uses it.
func (s *session) receiveChunks(ctx context.Context, st *restore.Stage, res *proto.RestoreResult) error {
	workers := max(1, min(runtime.GOMAXPROCS(0), 4))
	jobs := make(chan chunkJob, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var werr error
	// A worker's failure cancels the wait for the next frame too.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if werr == nil {
			werr = err
			stop()
		}
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(proto.MaxChunk*2), zstd.WithDecodeAllCapLimit(true))
			if err != nil {
				fail(err)
				return
			}
			defer dec.Close()
			var buf []byte
			for j := range jobs {
				if cap(buf) < int(j.c.Length) {
					buf = make([]byte, 0, j.c.Length)
				}
				plain, err := j.c.Plain(dec, buf)
				if err != nil {
					fail(proto.Errorf(proto.CodeVerify, "rejected chunk from the puller: %v", err))
					continue
				}
				for _, l := range j.locs {
					if err := st.WriteChunk(l, plain); err != nil {
						fail(err)
						break
					}
				}
			}
		}()
	}
	finish := func() error {
		close(jobs)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return werr
	}

	for {
		t, p, err := s.next(ctx)
		if err != nil {
			if werr := finish(); werr != nil {
				return werr
			}
			return err
		}
		switch t {
		case proto.TChunk:
			c, err := proto.DecodeChunk(p)
			if err != nil {
				return errors.Join(err, finish())
			}
			locs, ok := st.Take(c.ID)
			if !ok {
				return errors.Join(proto.Errorf(proto.CodeProtocol, "puller sent chunk %s, which was not asked for or was sent twice", c.ID.Short()), finish())
			}
			res.ChunksGot++
			res.ChunkBytes += int64(c.Length)
			select {
			case jobs <- chunkJob{c: c, locs: locs}:
			case <-ctx.Done():
				if werr := finish(); werr != nil {
					return werr
				}
				return ctx.Err()
			}
		case proto.TRestoreCommit:
			if err := finish(); err != nil {
				return err
			}
			if n := st.Missing(); n > 0 {
				return proto.Errorf(proto.CodeProtocol, "commit with %d of %d chunks missing", n, len(st.Wanted()))
			}
			return nil
		case proto.TError:
			return errors.Join(pullerReported(p), finish())
		default:
			return errors.Join(proto.Errorf(proto.CodeProtocol, "unexpected %s while receiving chunks", t), finish())
		}
	}
}

// freshHostQuiescer quiesces on a host that is not ready yet. There the
// stack is held back by the missing ready marker, so its targets may not
// even exist: a plan that fails is reported as a warning and nothing is
// stopped, instead of failing the restore that would let the stack start.
type freshHostQuiescer struct {
	quiesce.Quiescer
	warn func(format string, args ...any)
	skip bool
}

func (f *freshHostQuiescer) Plan(ctx context.Context) ([]quiesce.Target, error) {
	t, err := f.Quiescer.Plan(ctx)
	if err != nil {
		f.skip = true
		f.warn("host is not ready yet and quiesce could not plan (%v): swapped without stopping anything", err)
		return nil, nil
	}
	return t, nil
}

func (f *freshHostQuiescer) Quiesce(ctx context.Context) error {
	if f.skip {
		return nil
	}
	return f.Quiescer.Quiesce(ctx)
}

func (f *freshHostQuiescer) Resume(ctx context.Context) error {
	if f.skip {
		return nil
	}
	return f.Quiescer.Resume(ctx)
}

func (f *freshHostQuiescer) Steps() []quiesce.Step {
	if s, ok := f.Quiescer.(quiesce.Stepper); ok && !f.skip {
		return s.Steps()
	}
	return nil
}
