package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/haulproject/haul/internal/exclude"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/agent/manifest"
	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/internal/longpath"
	"github.com/haulproject/haul/proto"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"
)

// backup serves a backup session (the backup key's verb): freeze the
// mirror, stream its manifest, send the chunks the puller asks for. See
// "Backup session" in proto/PROTOCOL.md.
func (s *session) backup(ctx context.Context) error {
	var walker *manifest.Walker
	var queue *wantQueue
	out := make(chan outFrame, 4)
	var wg sync.WaitGroup
	writerErr := make(chan error, 1)
	go func() { writerErr <- s.writer(out) }()
	ctx, cancel := context.WithCancel(ctx)
	// The walker and sender must be gone before out is closed: a send on
	// a closed channel would panic. Cancelling unblocks them; the writer
	// keeps draining until out is closed.
	defer func() {
		cancel()
		wg.Wait()
		close(out)
		<-writerErr
		if s.committed != nil {
			if err := <-s.committed; err != nil {
				s.logf("warning: mirror not committed, the next backup recopies it: %v", err)
			}
		}
	}()
	var bye proto.Bye
	var walkErr, sendErr error
	walkDone := make(chan struct{})
	frozen := false
	// The want queue never blocks the frame reader, so it is bounded by
	// what a puller may ask: each chunk reference of the manifest sent so
	// far at most once, and once more whole (after a delta it could not
	// apply). refs is counted before a node's frame is queued, so a want
	// can never outrun it. The queue's memory is then at most that of the
	// walk's own chunk locations.
	var refs atomic.Int64
	var wants, fulls int64
	checkWants := func(ids []proto.ID, n *int64, kind string) error {
		*n += int64(len(ids))
		if r := refs.Load(); *n > r {
			return proto.Errorf(proto.CodeProtocol, "the puller sent %d %s IDs, but the manifest so far has only %d chunk references and each may be asked for once: the puller is broken or hostile; the session ends", *n, kind, r)
		}
		for _, id := range ids {
			if _, ok := walker.Lookup(id); !ok {
				return proto.Errorf(proto.CodeProtocol, "the puller asked for chunk %s, which is not in the manifest", id.Short())
			}
		}
		return nil
	}
	// workErr stops the walker and sender and returns the first of their
	// errors, else err. Once they are gone the cache is this goroutine's:
	// a stale entry the sender found is dropped here.
	workErr := func(err error) error {
		cancel()
		wg.Wait()
		var stale *staleChunkError
		if errors.As(sendErr, &stale) {
			walker.Cache.Forget(stale.rel)
			if err := walker.Cache.Save(); err != nil {
				s.logf("warning: saving chunk cache: %v", err)
			}
		}
		if walkErr != nil {
			return walkErr
		}
		if sendErr != nil {
			return sendErr
		}
		return err
	}

	for {
		t, p, err := s.next(ctx)
		if err != nil {
			return workErr(err)
		}
		switch t {
		case proto.TFreeze:
			var req proto.Freeze
			if err := proto.Decode(t, p, &req); err != nil {
				return err
			}
			// Each freeze stops or pauses the services: one per session.
			if frozen {
				return proto.Errorf(proto.CodeProtocol, "freeze requested twice in one session; a backup freezes once (start a new session to freeze again)")
			}
			if walker != nil {
				return proto.Errorf(proto.CodeProtocol, "freeze requested after the walk began; the mirror must not change under the manifest")
			}
			frozen = true
			rep, err := s.freeze(ctx, func(phase string) error {
				if !s.progress {
					return nil
				}
				return s.sendVia(out, proto.TProgress, &proto.Progress{Phase: phase})
			}, func(phase string, m *mirror.Mirror) func() error {
				return s.trackSync(out, phase, m)
			})
			if err != nil {
				return err
			}
			if err := s.sendVia(out, proto.TFrozen, rep); err != nil {
				return err
			}
		case proto.TWalk:
			if walker != nil {
				return proto.Errorf(proto.CodeProtocol, "walk requested twice")
			}
			if s.pol == 0 {
				return proto.Errorf(proto.CodeProtocol, "walk requested but hello carried no chunker polynomial")
			}
			cache, err := manifest.OpenCache(s.Config.chunkCachePath(), s.Config.deltaBasesPath(), s.pol)
			if err != nil {
				return err
			}
			// From here until wg.Wait returns, the walker goroutine owns
			// the cache; the sender reads only the bases taken now and
			// the file versions the walker publishes with each Location.
			bases := cache.Bases()
			var w proto.Walk
			if err := proto.Decode(t, p, &w); err != nil {
				return err
			}
			excl, err := exclude.Parse(w.Exclude)
			if err != nil {
				return proto.Errorf(proto.CodeProtocol, "walk: %v", err)
			}
			walker = &manifest.Walker{Root: s.Config.MirrorDir(), DataPaths: s.Config.DataPaths, Cache: cache, Pol: s.pol, Exclude: excl, Workers: s.Config.Workers(),
				// Unchanged files go without chunk lists only if the
				// puller holds exactly the walk the bases come from.
				SameAsBase: s.version >= proto.SameVersion && w.Base != "" && w.Base == cache.BaseWalk()}
			queue = newWantQueue()
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer close(walkDone)
				walkErr = s.walk(ctx, walker, out, &refs)
				if walkErr != nil {
					cancel()
				}
			}()
			go func() {
				defer wg.Done()
				sendErr = s.sendChunks(ctx, walker, bases, queue, out, walkDone, &bye)
				if sendErr != nil {
					cancel()
				}
			}()
		case proto.TWant, proto.TWantFull:
			// want-full (protocol 2 on) asks for whole chunks, no deltas;
			// each kind is counted against its own bound.
			full, name, seen := t == proto.TWantFull, "want", &wants
			if full {
				name, seen = "want-full", &fulls
			}
			switch {
			case full && (queue == nil || s.version < proto.DeltaVersion):
				return proto.Errorf(proto.CodeProtocol, "unexpected want-full")
			case queue == nil:
				return proto.Errorf(proto.CodeProtocol, "want before walk")
			}
			ids, err := proto.DecodeWant(p)
			if err != nil {
				return err
			}
			if err := checkWants(ids, seen, name); err != nil {
				return err
			}
			queue.push(ids, full)
		case proto.TDone:
			if queue != nil {
				queue.close()
			}
			wg.Wait()
			if walkErr != nil || sendErr != nil {
				return workErr(nil)
			}
			if walker != nil {
				// The puller has every chunk of this walk: its versions
				// are the bases of the next session's deltas.
				if err := walker.Cache.Promote(); err != nil {
					s.logf("warning: saving delta bases: %v", err)
				}
			}
			var ru unix.Rusage
			if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
				bye.MaxRSSKiB = ru.Maxrss // KiB on Linux
			}
			// BytesSent is filled in by the writer, which owns the count.
			out <- outFrame{t: proto.TBye, bye: &bye, flush: true}
			return nil
		case proto.TError:
			return pullerReported(p)
		default:
			return proto.Errorf(proto.CodeProtocol, "unexpected %s during backup", t)
		}
	}
}

// trackSync reports the counts of phase's mirror sync, when the puller
// takes them: every ProgressInterval while they change, and once more when
// the returned stop is called (after the sync), so even a short phase ends
// with its final counts on the puller's screen. The sync only bumps
// counters; the frames are sent from a goroutine of their own, so a slow
// puller never slows the sync (inside the freeze window above all).
func (s *session) trackSync(out chan<- outFrame, phase string, m *mirror.Mirror) (stop func() error) {
	if !s.progressCounts {
		return func() error { return nil }
	}
	m.ResetProgress()
	filesTotal, bytesTotal := m.Expected()
	every := s.ProgressInterval
	if every <= 0 {
		every = proto.MinCountsInterval // as often as the puller redraws
	}
	quit, done := make(chan struct{}), make(chan error, 1)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		var sentFiles, sentBytes int64
		send := func() error {
			files, bytes := m.Progress()
			if files == sentFiles && bytes == sentBytes {
				return nil
			}
			sentFiles, sentBytes = files, bytes
			return s.sendVia(out, proto.TProgress, proto.CountsFrame(phase, files, bytes, filesTotal, bytesTotal))
		}
		for {
			select {
			case <-quit:
				done <- send()
				return
			case <-tick.C:
				if err := send(); err != nil {
					<-quit
					done <- err
					return
				}
			}
		}
	}()
	return func() error {
		close(quit)
		return <-done
	}
}

// freeze syncs the mirror twice: once while the services run, then again
// inside the quiesce window, where only what changed in between is copied.
// phase reports each of its two steps as it begins: the pre-sync, then the
// freeze (quiesce, sync what changed, resume); track follows each step's
// sync for the puller's display until the stop it returns is called.
func (s *session) freeze(ctx context.Context, phase func(string) error, track func(string, *mirror.Mirror) func() error) (*proto.Frozen, error) {
	m, err := mirror.Open(s.Config.MirrorDir(), s.Config.mirrorIndexPath())
	if err != nil {
		return nil, proto.Errorf(proto.CodeIO, "%v", err)
	}
	// The copies are fsynced after the freeze, while the chunks travel,
	// not inside the window (see mirror.Mirror.Defer).
	m.Defer = true
	rep := &proto.Frozen{Mode: s.Config.Quiesce.Mode}
	if err := phase(proto.PhasePreSync); err != nil {
		return nil, err
	}
	t0 := time.Now()
	stop := track(proto.PhasePreSync, m)
	_, err = m.Sync(ctx, s.Config.DataPaths)
	if serr := stop(); err == nil && serr != nil {
		return nil, serr
	}
	if err != nil {
		return nil, proto.Errorf(proto.CodeIO, "pre-sync of mirror: %v", err)
	}
	rep.PreSyncMS = ms(time.Since(t0))

	q, err := s.quiescer()
	if err != nil {
		return nil, proto.Errorf(proto.CodeFreeze, "%v", err)
	}
	if err := phase(proto.PhaseFreeze); err != nil {
		return nil, err
	}
	stop = track(proto.PhaseFreeze, m)
	stats, phases, window, err := Freeze(ctx, q, s.Config, func(ctx context.Context) (mirror.Stats, error) {
		return m.Sync(ctx, s.Config.DataPaths)
	})
	if serr := stop(); err == nil && serr != nil {
		return nil, serr
	}
	rep.Phases = phases
	rep.FreezeMS = ms(window)
	rep.FilesCopied = stats.Copied
	rep.BytesCopied = stats.BytesCopied
	rep.Skipped, rep.Warnings = stats.Skipped, stats.Warnings
	if err != nil {
		return nil, err
	}
	for _, w := range stats.Warnings {
		s.logf("warning: %s", w)
	}
	s.logf("freeze %s: %.1f ms (%d files, %d bytes copied while frozen)", q.Describe(), rep.FreezeMS, stats.Copied, stats.BytesCopied)
	s.committed = make(chan error, 1)
	go func() { s.committed <- m.Commit() }()
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type outFrame struct {
	t     proto.Type
	parts [][]byte
	flush bool
	// bye, when set, is the payload: the writer encodes it after filling
	// in BytesSent, the count only the writer may read.
	bye *proto.Bye
	// done, when set, is called once the frame is written (or dropped):
	// it hands the chunk buffers back and releases their budget.
	done func()
}

// chunkBudget bounds the plain bytes of chunks between the sender and the
// socket (queued or being written; a larger chunk takes the whole budget):
// with chunks of up to 8 MiB and a queue of 4 frames the agent could
// otherwise hold ~50 MiB of them. 4 MiB keeps a few average (1 MiB) chunks
// in flight, enough to keep the connection busy.
const chunkBudget = 4 << 20

// freeBufs recycles the sender's chunk buffers, so a backup's garbage (and
// with it the heap the GC lets grow) is not a gigabyte of one-off slices.
// Only buffers up to 2 MiB are kept: a few, never a large idle reserve.
var freeBufs = make(chan []byte, 6)

func getBuf(n int) []byte {
	select {
	case b := <-freeBufs:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]byte, n, max(n, 1<<20))
}

func putBuf(b []byte) {
	if cap(b) == 0 || cap(b) > 2<<20 {
		return
	}
	select {
	case freeBufs <- b:
	default:
	}
}

// writer owns the output stream; it flushes whenever nothing else is
// queued, so small frames are batched and large ones go out at once.
func (s *session) writer(out <-chan outFrame) error {
	var err error
	for f := range out {
		if err != nil {
			if f.done != nil {
				f.done()
			}
			continue // drain so senders never block
		}
		if f.bye != nil {
			f.bye.BytesSent = s.conn.W.BytesWritten()
			var b []byte
			if b, err = proto.Encode(f.bye); err != nil {
				continue
			}
			f.parts = [][]byte{b}
		}
		err = s.conn.W.Write(f.t, f.parts...)
		if err == nil && (len(out) == 0 || f.flush) {
			err = s.conn.W.Flush()
		}
		s.wireSent.Store(s.conn.W.BytesWritten())
		if f.done != nil {
			f.done()
		}
	}
	if err == nil {
		err = s.conn.W.Flush()
	}
	return err
}

func (s *session) sendVia(out chan<- outFrame, t proto.Type, v any) error {
	b, err := proto.Encode(v)
	if err != nil {
		return err
	}
	out <- outFrame{t: t, parts: [][]byte{b}, flush: true} // the writer always drains
	return nil
}

type visitor struct {
	out  chan<- outFrame
	ctx  context.Context
	refs *atomic.Int64 // chunk references sent, for the want bound
}

func (v visitor) Visit(n *proto.Node) error {
	b, err := proto.Encode(n)
	if err != nil {
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
	v.refs.Add(int64(len(n.Chunks)))
	select {
	case v.out <- outFrame{t: proto.TNode, parts: [][]byte{b}}:
		return nil
	case <-v.ctx.Done():
		return v.ctx.Err()
	}
}

func (v visitor) Leave() error {
	select {
	case v.out <- outFrame{t: proto.TDirEnd}:
		return nil
	case <-v.ctx.Done():
		return v.ctx.Err()
	}
}

func (s *session) walk(ctx context.Context, w *manifest.Walker, out chan<- outFrame, refs *atomic.Int64) error {
	if err := w.Walk(ctx, visitor{out: out, ctx: ctx, refs: refs}); err != nil {
		return proto.Errorf(proto.CodeIO, "manifest: %v", err)
	}
	if err := w.Cache.Save(); err != nil {
		s.logf("warning: saving chunk cache: %v", err)
	}
	return s.sendVia(out, proto.TManifestEnd, &w.Stats)
}

// wantQueue is a FIFO of wanted IDs, bounded by the session (see refs in
// backup), not by blocking: the frame reader must
// never block on it, or the puller and agent could wait on each other.
type wantQueue struct {
	mu     sync.Mutex
	ids    []want
	closed bool
	signal chan struct{}
}

// want is one requested chunk; full asks for the whole chunk, never a
// delta (the puller could not apply one).
type want struct {
	id   proto.ID
	full bool
}

func newWantQueue() *wantQueue { return &wantQueue{signal: make(chan struct{}, 1)} }

func (q *wantQueue) push(ids []proto.ID, full bool) {
	q.mu.Lock()
	for _, id := range ids {
		q.ids = append(q.ids, want{id: id, full: full})
	}
	q.mu.Unlock()
	q.wake()
}

func (q *wantQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

func (q *wantQueue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pop returns queued IDs; ok is false once the queue is closed and empty.
func (q *wantQueue) pop(ctx context.Context) (ids []want, ok bool, err error) {
	for {
		q.mu.Lock()
		if len(q.ids) > 0 {
			ids, q.ids = q.ids, nil
			q.mu.Unlock()
			return ids, true, nil
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false, nil
		}
		select {
		case <-q.signal:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// staleChunkError reports a cached chunk list that no longer matches the
// mirror file rel; the session drops the entry once the sender has ended.
type staleChunkError struct {
	rel string
	err error
}

func (e *staleChunkError) Error() string { return e.err.Error() }
func (e *staleChunkError) Unwrap() error { return e.err }

func (s *session) sendChunks(ctx context.Context, w *manifest.Walker, bases *manifest.Bases, q *wantQueue, out chan<- outFrame, walkDone <-chan struct{}, bye *proto.Bye) error {
	encs, err := newChunkEncoders()
	if err != nil {
		return err
	}
	defer encs.Close()
	// Budgeted by plain length: an encoded chunk is never much larger.
	budget := semaphore.NewWeighted(chunkBudget)
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for {
		ids, ok, err := q.pop(ctx)
		if err != nil || !ok {
			return err
		}
		for _, wt := range ids {
			id := wt.id
			loc, found := w.Lookup(id)
			if !found {
				return proto.Errorf(proto.CodeProtocol, "puller asked for chunk %s, which is not in the manifest", id.Short())
			}
			f := files[loc.Path]
			if f == nil {
				if len(files) > 64 {
					for p, f := range files {
						f.Close()
						delete(files, p)
					}
				}
				f, err = longpath.Open(loc.Path)
				if err != nil {
					return proto.Errorf(proto.CodeIO, "open mirror file: %v", err)
				}
				files[loc.Path] = f
			}
			n := min(int64(loc.Length), chunkBudget)
			acquired := budget.TryAcquire(n)
			if !acquired {
				encs.lvl.fellBehind()
			}
			enc, err := encs.pick(time.Now(), s.wireSent.Load())
			if err != nil {
				return err
			}
			if !acquired {
				if err := budget.Acquire(ctx, n); err != nil {
					return err
				}
			}
			plain := getBuf(int(loc.Length))
			if _, err := f.ReadAt(plain, loc.Offset); err != nil {
				putBuf(plain)
				budget.Release(n)
				return proto.Errorf(proto.CodeIO, "read %s at %d: %v", loc.Path, loc.Offset, err)
			}
			if loc.Cached && proto.Hash(plain) != id {
				putBuf(plain)
				budget.Release(n)
				return &staleChunkError{rel: loc.Rel, err: proto.Errorf(proto.CodeIO, "chunk cache is out of date for %s (chunk %s); the entry was dropped, rerun the backup", loc.Path, id.Short())}
			}
			t0 := time.Now()
			frame, body, raw := s.chunkFrame(enc, bases, loc, id, plain, !wt.full, bye)
			encs.lvl.encoded(enc == encs.better, len(body), time.Since(t0))
			if !raw {
				putBuf(plain) // the frame holds the encoded copy only
			}
			frame.done = func() {
				putBuf(body)
				budget.Release(n)
			}
			select {
			case out <- frame:
				encs.lvl.keptUp()
			default:
				encs.lvl.fellBehind()
				select {
				case out <- frame:
				case <-ctx.Done():
					frame.done()
					return ctx.Err()
				}
			}
			bye.ChunksSent++
			bye.RawBytes += int64(len(plain))
		}
	}
}

// chunkEncoders are the sender's: the fastest level's encoder, and the
// better one's while chunkLevel wants it.
type chunkEncoders struct {
	fast, better *zstd.Encoder
	lvl          chunkLevel
}

func newChunkEncoders() (*chunkEncoders, error) {
	fast, err := newChunkEncoder(zstd.SpeedFastest)
	if err != nil {
		return nil, err
	}
	return &chunkEncoders{fast: fast}, nil
}

// pick returns the encoder for the next chunk (see chunkLevel); sent is
// the bytes written to the wire so far.
func (e *chunkEncoders) pick(now time.Time, sent int64) (*zstd.Encoder, error) {
	if e.lvl.better(now, sent) {
		if e.better == nil {
			var err error
			if e.better, err = newChunkEncoder(zstd.SpeedBetterCompression); err != nil {
				return nil, err
			}
		}
		return e.better, nil
	}
	if e.better != nil && e.lvl.notWorthIt() {
		e.better.Close() // its 4.5 MiB go back for the rest of the session
		e.better = nil
	}
	return e.fast, nil
}

func (e *chunkEncoders) Close() {
	e.fast.Close()
	if e.better != nil {
		e.better.Close()
	}
}

// chunkLevel chooses each chunk's compression level: the better one while
// the wire is behind and drains slower than half the rate at which the
// better level turns out compressed bytes, the fastest otherwise. A wire
// behind but draining fast is a NAS (or, in the benchmarks, a shared CPU)
// that does not keep up: harder compression would not help it.
type chunkLevel struct {
	// behind counts down the chunks still to weigh for the better level
	// since the wire last fell behind: it drains in bursts (the SSH
	// window, socket buffers), so one frame that found room proves little.
	behind int
	// samples of the bytes written to the wire, one per drainSample, the
	// last drainSamples of them.
	samples  [drainSamples]wireSample
	nsamples int
	// what the better level produced, and in how long (0: not tried yet);
	// and the fastest.
	betterChunks int
	betterOut    int64
	betterTime   time.Duration
	fastOut      int64
	fastTime     time.Duration
}

// wireSample is the bytes written to the wire by a time.
type wireSample struct {
	t time.Time
	n int64
}

const (
	// behindFor is how many chunks are weighed for the better level after
	// the wire was last seen behind.
	behindFor    = 4
	drainSample  = 100 * time.Millisecond
	drainSamples = 10
)

func (c *chunkLevel) fellBehind() { c.behind = behindFor }
func (c *chunkLevel) keptUp()     { c.behind = max(c.behind-1, 0) }

// notWorthIt: the better level was tried and the wire drains too fast for
// it (the last decision was the fastest level with the wire behind).
func (c *chunkLevel) notWorthIt() bool { return c.betterTime > 0 && c.behind > 0 }

// encoded records a chunk frame of n bytes that took d to make, at the
// better level or the fastest.
func (c *chunkLevel) encoded(better bool, n int, d time.Duration) {
	if !better {
		c.fastOut += int64(n)
		c.fastTime += d
		return
	}
	c.betterChunks++
	if c.betterChunks == 1 {
		return // the encoder's first chunk also allocates its tables
	}
	c.betterOut += int64(n)
	c.betterTime += d
}

// better says whether the next chunk goes at the better level; sent is
// the bytes written to the wire so far.
func (c *chunkLevel) better(now time.Time, sent int64) bool {
	if c.nsamples == 0 || now.Sub(c.samples[(c.nsamples-1)%drainSamples].t) >= drainSample {
		c.samples[c.nsamples%drainSamples] = wireSample{now, sent}
		c.nsamples++
	}
	if c.behind == 0 || c.nsamples < 3 {
		return false // not behind, or too soon to know how fast it drains
	}
	oldest := c.samples[max(c.nsamples-drainSamples, 0)%drainSamples]
	drain := float64(sent-oldest.n) / now.Sub(oldest.t).Seconds()
	if c.betterTime == 0 {
		// Try it, to know its rate, only if it could help: it makes its
		// bytes at about half the fastest level's rate (0.35 against
		// 0.19 s for the bench's 50 MiB tree, 8% fewer bytes), so a wire
		// draining faster than a quarter of that would not wait for it,
		// and the encoder (4.5 MiB) is not made for nothing.
		// A full window of samples: a NAS that stalls for a moment
		// (fsync, GC) is not a slow link.
		return c.fastTime > 0 && c.nsamples >= drainSamples && drain < float64(c.fastOut)/c.fastTime.Seconds()/4
	}
	return drain < float64(c.betterOut)/c.betterTime.Seconds()/2
}

// newChunkEncoder makes a chunk encoder with a 1 MiB window: chunks
// average about 1 MiB, so a longer one finds few more matches in them
// (none in the bench's Pangolin-like tree) but costs the VPS memory: the
// fastest level holds 0.4 MiB instead of 3.4, the better one 4.5 instead
// of 11.5.
//
// Frames are compressed at the fastest level while the wire keeps up,
// and at the better one while it does not (the last frame waited for
// room in the queue to the writer, or chunkBudget is waiting) and drains
// slower than the better level can fill it (chunkLevel): on a slow link
// the wire's wait pays for the VPS's CPU, and the better level moves ~8%
// fewer bytes (8.34 against 7.71 MiB for the bench's
// 50 MiB tree, against rsync -z's 7.79).
func newChunkEncoder(level zstd.EncoderLevel) (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20))
}

// chunkFrame encodes one wanted chunk: as a delta against its file's base
// version when the protocol allows, one exists and at most half the chunk
// must be sent literally; otherwise whole, zstd-compressed unless that does
// not make it smaller.
// It returns the frame, the buffer that holds its body, and whether that
// is plain itself (a raw chunk).
func (s *session) chunkFrame(enc *zstd.Encoder, bases *manifest.Bases, loc manifest.Location, id proto.ID, plain []byte, deltaOK bool, bye *proto.Bye) (outFrame, []byte, bool) {
	if deltaOK && s.version >= proto.DeltaVersion {
		if ops, literal := bases.Delta(loc, plain); ops != nil && literal <= len(plain)/2 {
			raw := proto.AppendDeltaOps(nil, ops)
			body := enc.EncodeAll(raw, getBuf(len(raw)/2 + 64)[:0])
			bye.Deltas++
			return outFrame{t: proto.TDelta, parts: [][]byte{proto.DeltaHeader(id, len(plain), len(raw)), body}}, body, false
		}
	}
	hdrEnc, body := proto.EncZstd, enc.EncodeAll(plain, getBuf(len(plain)/2 + 64)[:0])
	if len(body) >= len(plain) {
		putBuf(body)
		return outFrame{t: proto.TChunk, parts: [][]byte{proto.ChunkHeader(id, proto.EncRaw, len(plain)), plain}}, plain, true
	}
	return outFrame{t: proto.TChunk, parts: [][]byte{proto.ChunkHeader(id, hdrEnc, len(plain)), body}}, body, false
}
