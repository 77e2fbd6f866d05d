// Package agent is haul-agent: the program sshd runs as the forced command
// of the NAS's key. It quiesces the services, keeps a consistent mirror of
// the data paths, streams the manifest and the chunks the puller asks for,
// and applies restores.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/haulproject/haul/agent/manifest"
	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/agent/sftpview"
	"github.com/haulproject/haul/proto"
	"github.com/klauspost/compress/zstd"
	"github.com/restic/chunker"
	"golang.org/x/sys/unix"
)

// Version is the agent's version, set at build time.
var Version = "0.1.0-dev"

// Server runs one session over a pair of streams (sshd's pipes).
type Server struct {
	Config       *Config
	AllowRestore bool
	In           io.Reader
	Out          io.Writer
	Log          io.Writer // stderr: sshd forwards it to the puller

	// Quiescer overrides the one built from the config (tests).
	Quiescer quiesce.Quiescer
	// MaxVersion caps the protocol version (0: the newest); tests use it
	// to act as an older agent.
	MaxVersion int
}

// frame is one received frame with its own copy of the payload.
type frame struct {
	t       proto.Type
	payload []byte
	err     error
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, "haul-agent: "+format+"\n", args...)
	}
}

// Serve runs the session for verb until the puller is done, the streams
// close or ctx is cancelled.
func (s *Server) Serve(ctx context.Context, verb string) error {
	switch verb {
	case VerbVersion:
		_, err := fmt.Fprintf(s.Out, "haul-agent %s protocol %d-%d\n", Version, proto.MinVersion, proto.Version)
		return err
	case VerbSFTP:
		// read-only whatever AllowRestore says
		return sftpview.Serve(ctx, sftpview.Mirror{Host: s.Config.Host, Dir: s.Config.MirrorDir(), DataPaths: s.Config.DataPaths, LockPath: s.Config.lockPath()}, s.In, s.Out)
	case VerbBackup:
	case VerbRestore:
		if !s.AllowRestore {
			return fmt.Errorf("restore refused: this key's forced command does not allow restore (add --allow-restore to the restore key's entry, never to the backup key's)")
		}
	default:
		return fmt.Errorf("verb %q is not served here", verb)
	}
	if err := os.MkdirAll(s.Config.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Chmod(s.Config.StateDir, 0o700); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn := &proto.Conn{R: proto.NewReader(s.In), W: proto.NewWriter(s.Out)}
	// A short read-ahead: during a restore frames carry chunks of up to 8 MiB,
	// and the VPS is small.
	frames := make(chan frame, 2)
	go func() {
		defer close(frames)
		for {
			t, p, err := conn.R.Read()
			if err != nil {
				frames <- frame{err: err}
				cancel() // the puller is gone or broken: stop work, thaw
				return
			}
			select {
			case frames <- frame{t: t, payload: append([]byte(nil), p...)}:
			case <-ctx.Done():
				return
			}
		}
	}()

	sess := &session{Server: s, conn: conn, frames: frames, verb: verb}
	err := sess.run(ctx)
	if err != nil {
		var pe *proto.Error
		if !errors.As(err, &pe) {
			conn.SendError(errorCode(err), "%s: %v", s.Config.Host, err)
		}
	}
	return err
}

func errorCode(err error) string {
	var ce *codedError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, proto.ErrFrame):
		return proto.CodeProtocol
	case errors.Is(err, context.Canceled):
		return proto.CodeCancelled
	case errors.Is(err, unix.ENOSPC):
		return proto.CodeNoSpace
	}
	return proto.CodeInternal
}

type codedError struct {
	code string
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func coded(code string, format string, args ...any) error {
	return &codedError{code: code, err: fmt.Errorf(format, args...)}
}

type session struct {
	*Server
	conn    *proto.Conn
	frames  <-chan frame
	verb    string
	version int // negotiated protocol version
	// committed reports the mirror's deferred fsync after a freeze.
	committed chan error
	pol       chunker.Pol
}

// next returns the next frame or the reason there is none.
func (s *session) next(ctx context.Context) (proto.Type, []byte, error) {
	select {
	case f, ok := <-s.frames:
		if !ok {
			return 0, nil, io.ErrUnexpectedEOF
		}
		if f.err == io.EOF {
			return 0, nil, fmt.Errorf("puller closed the connection: %w", context.Canceled)
		}
		if f.err != nil {
			return 0, nil, f.err
		}
		return f.t, f.payload, nil
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

func (s *session) run(ctx context.Context) error {
	t, p, err := s.next(ctx)
	if err != nil {
		return err
	}
	var hello proto.Hello
	if err := proto.DecodeAs(t, p, proto.THello, &hello); err != nil {
		return err
	}
	version, maxV := 0, proto.Version
	if s.MaxVersion > 0 {
		maxV = min(maxV, s.MaxVersion)
	}
	for _, v := range hello.Versions {
		if v >= proto.MinVersion && v <= maxV && v > version {
			version = v
		}
	}
	if version == 0 {
		return coded(proto.CodeVersion, "no common protocol version: puller offers %v, agent %s speaks %d-%d; upgrade the older side", hello.Versions, Version, proto.MinVersion, proto.Version)
	}
	s.version = version
	if hello.ChunkerPolynomial != "" {
		pol, err := strconv.ParseUint(hello.ChunkerPolynomial, 16, 64)
		if err != nil || !chunker.Pol(pol).Irreducible() {
			return coded(proto.CodeProtocol, "chunker polynomial %q is not an irreducible polynomial", hello.ChunkerPolynomial)
		}
		s.pol = chunker.Pol(pol)
	}
	_, readyErr := os.Stat(s.Config.ReadyMarker)
	reply := proto.HelloReply{
		Version:        version,
		Agent:          "haul-agent " + Version,
		Host:           s.Config.Host,
		Verb:           s.verb,
		DataPaths:      s.Config.DataPaths,
		RestoreAllowed: s.AllowRestore,
		Ready:          readyErr == nil,
	}
	if err := s.conn.Send(proto.THelloReply, &reply); err != nil {
		return err
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if s.verb == VerbRestore {
		return s.restore(ctx)
	}
	return s.backup(ctx)
}

// lock takes the state dir's lock so two sessions never freeze or swap at
// once; a second session waits up to lock_timeout.
func (s *session) lock(ctx context.Context) (func(), error) {
	path := s.Config.lockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(s.Config.LockTimeout.Or(10 * time.Minute))
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			_ = f.Truncate(0)
			_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, coded(proto.CodeBusy, "another haul session holds %s (pid %s); it did not finish within %v", path, readPID(path), s.Config.LockTimeout.Or(10*time.Minute))
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func readPID(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}

func (s *session) quiescer() (quiesce.Quiescer, error) {
	if s.Quiescer != nil {
		return s.Quiescer, nil
	}
	q := s.Config.Quiesce
	return quiesce.New(quiesce.Options{
		Mode: q.Mode, Containers: q.Containers, ComposeProject: q.ComposeProject,
		Units: q.Units, DockerHost: q.DockerHost, Timeout: q.Timeout.Or(30 * time.Second),
	})
}

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
			rep, err := s.freeze(ctx)
			if err != nil {
				return err
			}
			if err := s.sendVia(out, proto.TFrozen, rep); err != nil {
				return err
			}
		case proto.TWalk:
			if walker != nil {
				return coded(proto.CodeProtocol, "walk requested twice")
			}
			if s.pol == 0 {
				return coded(proto.CodeProtocol, "walk requested but hello carried no chunker polynomial")
			}
			cache, err := manifest.OpenCache(filepath.Join(s.Config.StateDir, "chunks.cache"), s.pol)
			if err != nil {
				return err
			}
			// From here until wg.Wait returns, the walker goroutine owns
			// the cache; the sender reads only the bases taken now and
			// the file versions the walker publishes with each Location.
			bases := cache.Bases()
			walker = &manifest.Walker{Root: s.Config.MirrorDir(), DataPaths: s.Config.DataPaths, Cache: cache, Pol: s.pol}
			queue = newWantQueue()
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer close(walkDone)
				walkErr = s.walk(ctx, walker, out)
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
		case proto.TWant:
			if queue == nil {
				return coded(proto.CodeProtocol, "want before walk")
			}
			ids, err := proto.DecodeWant(p)
			if err != nil {
				return err
			}
			queue.push(ids, false)
		case proto.TWantFull:
			if queue == nil || s.version < proto.DeltaVersion {
				return coded(proto.CodeProtocol, "unexpected want-full")
			}
			ids, err := proto.DecodeWant(p)
			if err != nil {
				return err
			}
			queue.push(ids, true)
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
			var e proto.Error
			_ = proto.Decode(t, p, &e)
			return fmt.Errorf("puller reported: %w", &e)
		default:
			return coded(proto.CodeProtocol, "unexpected %s during backup", t)
		}
	}
}

// freeze syncs the mirror twice: once while the services run, then again
// inside the quiesce window, where only what changed in between is copied.
func (s *session) freeze(ctx context.Context) (*proto.Frozen, error) {
	m, err := mirror.Open(s.Config.MirrorDir(), filepath.Join(s.Config.StateDir, "mirror.index"))
	if err != nil {
		return nil, coded(proto.CodeIO, "%v", err)
	}
	// The copies are fsynced after the freeze, while the chunks travel,
	// not inside the window (see mirror.Mirror.Defer).
	m.Defer = true
	rep := &proto.Frozen{Mode: s.Config.Quiesce.Mode}
	t0 := time.Now()
	if _, err := m.Sync(ctx, s.Config.DataPaths); err != nil {
		return nil, coded(proto.CodeIO, "pre-sync of mirror: %v", err)
	}
	rep.PreSyncMS = ms(time.Since(t0))

	q, err := s.quiescer()
	if err != nil {
		return nil, coded(proto.CodeFreeze, "%v", err)
	}
	stats, phases, window, err := Freeze(ctx, q, s.Config, func(ctx context.Context) (mirror.Stats, error) {
		return m.Sync(ctx, s.Config.DataPaths)
	})
	rep.Phases = phases
	rep.FreezeMS = ms(window)
	rep.FilesCopied = stats.Copied
	rep.BytesCopied = stats.BytesCopied
	if err != nil {
		return nil, err
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
}

// writer owns the output stream; it flushes whenever nothing else is
// queued, so small frames are batched and large ones go out at once.
func (s *session) writer(out <-chan outFrame) error {
	var err error
	for f := range out {
		if err != nil {
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
	out chan<- outFrame
	ctx context.Context
}

func (v visitor) Visit(n *proto.Node) error {
	b, err := proto.Encode(n)
	if err != nil {
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
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

func (s *session) walk(ctx context.Context, w *manifest.Walker, out chan<- outFrame) error {
	if err := w.Walk(ctx, visitor{out: out, ctx: ctx}); err != nil {
		return coded(proto.CodeIO, "manifest: %v", err)
	}
	if err := w.Cache.Save(); err != nil {
		s.logf("warning: saving chunk cache: %v", err)
	}
	return s.sendVia(out, proto.TManifestEnd, &w.Stats)
}

// wantQueue is an unbounded FIFO of wanted IDs: the frame reader must
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
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return err
	}
	defer enc.Close()
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
				return coded(proto.CodeProtocol, "puller asked for chunk %s, which is not in the manifest", id.Short())
			}
			f := files[loc.Path]
			if f == nil {
				if len(files) > 64 {
					for p, f := range files {
						f.Close()
						delete(files, p)
					}
				}
				f, err = os.Open(loc.Path)
				if err != nil {
					return coded(proto.CodeIO, "open mirror file: %v", err)
				}
				files[loc.Path] = f
			}
			plain := make([]byte, loc.Length)
			if _, err := f.ReadAt(plain, loc.Offset); err != nil {
				return coded(proto.CodeIO, "read %s at %d: %v", loc.Path, loc.Offset, err)
			}
			if loc.Cached && proto.Hash(plain) != id {
				return &staleChunkError{rel: loc.Rel, err: coded(proto.CodeIO, "chunk cache is out of date for %s (chunk %s); the entry was dropped, rerun the backup", loc.Path, id.Short())}
			}
			frame := s.chunkFrame(enc, bases, loc, id, plain, !wt.full, bye)
			select {
			case out <- frame:
			case <-ctx.Done():
				return ctx.Err()
			}
			bye.ChunksSent++
			bye.RawBytes += int64(len(plain))
		}
	}
}

// chunkFrame encodes one wanted chunk: as a delta against its file's base
// version when the protocol allows, one exists and at most half the chunk
// must be sent literally; otherwise whole, zstd-compressed unless that does
// not make it smaller.
func (s *session) chunkFrame(enc *zstd.Encoder, bases *manifest.Bases, loc manifest.Location, id proto.ID, plain []byte, deltaOK bool, bye *proto.Bye) outFrame {
	if deltaOK && s.version >= proto.DeltaVersion {
		if ops, literal := bases.Delta(loc, plain); ops != nil && literal <= len(plain)/2 {
			raw := proto.AppendDeltaOps(nil, ops)
			body := enc.EncodeAll(raw, make([]byte, 0, len(raw)/2+64))
			bye.Deltas++
			return outFrame{t: proto.TDelta, parts: [][]byte{proto.DeltaHeader(id, len(plain), len(raw)), body}}
		}
	}
	hdrEnc, body := proto.EncZstd, enc.EncodeAll(plain, make([]byte, 0, len(plain)/2+64))
	if len(body) >= len(plain) {
		hdrEnc, body = proto.EncRaw, plain
	}
	return outFrame{t: proto.TChunk, parts: [][]byte{proto.ChunkHeader(id, hdrEnc, len(plain)), body}}
}
