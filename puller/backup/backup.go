// Package backup pulls one consistent snapshot from an agent into the
// repository: hello, freeze, manifest, want/have, chunks, trees, snapshot.
package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/internal/version"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/transport"
	"github.com/klauspost/compress/zstd"
)

// Options configures one pull.
type Options struct {
	Host     string // the host's name: the snapshot's hostname
	Tags     []string
	CacheDir string // haul's per-repository state
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// NoProgressFrames acts as a puller from before progress frames
	// (tests): its hello does not list proto.FeatureProgress.
	NoProgressFrames bool
	// NoProgressCounts acts as a puller from before counts in progress
	// frames (tests): its hello lists proto.FeatureProgress only.
	NoProgressCounts bool
	// MaxVersion caps the protocol version offered (0: the newest); tests
	// use it to act as an older puller.
	MaxVersion int
	// Exclude lists restic-style exclude patterns the agent applies while
	// walking, so excluded files never cross the wire.
	Exclude []string
	// Limits bound the run's memory, storage and time (zero fields: the
	// defaults).
	Limits Limits
	// Progress receives the phases and their counts (nil: none).
	Progress Progress
}

// Progress follows a backup for a live display (runlog.Host).
type Progress interface {
	// Phase names the step: "pre-sync" (the agent's mirror sync while the
	// services run), "freeze" (quiesce, sync what changed, resume), or
	// "pre-sync+freeze" for an agent that does not report the two apart;
	// then "manifest", "transfer", "snapshot".
	Phase(name string)
	// Counts reports the phase's bytes and files done of their totals
	// (negative: not known yet; the totals are known once the manifest
	// has streamed).
	Counts(doneBytes, totalBytes, doneFiles, totalFiles int64)
}

type noProgress struct{}

func (noProgress) Phase(string)                      {}
func (noProgress) Counts(int64, int64, int64, int64) {}

// Result summarises a pull.
type Result struct {
	Host         string   `json:"host"`
	SnapshotID   string   `json:"snapshot_id,omitempty"`
	Paths        []string `json:"paths"`
	Files        int64    `json:"files"`
	Dirs         int64    `json:"dirs"`
	Bytes        int64    `json:"bytes"`
	ChunksWanted int64    `json:"chunks_wanted"`
	ChunkBytes   int64    `json:"chunk_bytes"`
	BlobsNew     int64    `json:"blobs_new"`
	Version      int      `json:"protocol_version"`
	Deltas       int64    `json:"deltas"`          // chunks received as deltas and rebuilt
	DeltaRetries int64    `json:"delta_fallbacks"` // deltas that could not be applied: asked for whole
	// BaseBytesLoaded counts the base chunks read from the repository to
	// apply deltas.
	BaseBytesLoaded int64 `json:"delta_base_bytes_loaded"`
	// Recompressed counts compressed chunks whose frame was not stored as
	// sent (padding, skippable frames, larger than the chunk).
	Recompressed int64              `json:"recompressed"`
	AgentMaxRSS  int64              `json:"agent_max_rss_kib,omitempty"`
	BytesAdded   int64              `json:"bytes_added_packed"`
	Wire         transport.Stats    `json:"wire"`
	FreezeMS     float64            `json:"freeze_ms"`
	Frozen       proto.Frozen       `json:"freeze"`
	Manifest     proto.ManifestEnd  `json:"manifest"`
	Agent        string             `json:"agent"`
	DurationMS   float64            `json:"duration_ms"`
	Started      time.Time          `json:"started"`
	Record       *repo.Record       `json:"-"`
	Phases       map[string]float64 `json:"phases_ms"`
	Snapshot     *data.Snapshot     `json:"-"`
}

// Run pulls one snapshot of a host. It writes the snapshot only after every
// blob is stored; an interrupted run leaves no snapshot, but the chunks it
// did receive are stored and not asked for again.
func Run(ctx context.Context, r *repo.Repo, conn transport.Connecter, opts Options) (res *Result, err error) {
	return RunPending(ctx, Pending{Opening: repo.Opened(r)}, conn, opts)
}

// Pending is a repository a pull may start before it is open.
type Pending struct {
	Opening *repo.Opening
	// Lock, if set, locks the repository once it is open and returns the
	// lock's context (cancelled if the lock is lost) and its release.
	Lock func(ctx context.Context, r *repo.Repo) (context.Context, func(), error)
}

// RunPending is Run with the repository still being opened: it connects
// to the agent and greets it (with the polynomial remembered from an
// earlier open) while the key is derived, and waits for the repository
// before it asks the agent to freeze. If the remembered polynomial proves
// wrong (a repository made anew at the same path), it greets the agent
// again with the right one.
func RunPending(ctx context.Context, p Pending, conn transport.Connecter, opts Options) (res *Result, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	opts.Limits = opts.Limits.WithDefaults()
	start := time.Now()
	res = &Result{Host: opts.Host, Started: start, Phases: map[string]float64{}}
	phase := func(name string, t time.Time) { res.Phases[name] += float64(time.Since(t).Microseconds()) / 1000 }

	// Open and lock in the background: restic's lock alone waits 200 ms
	// to detect a racing lock, time the connection can use.
	type opened struct {
		r      *repo.Repo
		ctx    context.Context
		unlock func()
		err    error
		t      time.Time
	}
	openc := make(chan opened, 1)
	go func() {
		var o opened
		o.r, o.err = p.Opening.Wait(ctx)
		o.ctx = ctx
		if o.err == nil && p.Lock != nil {
			o.ctx, o.unlock, o.err = p.Lock(ctx, o.r)
		}
		o.t = time.Now()
		openc <- o
	}()
	var r *repo.Repo
	var unlock func()
	waited := false
	defer func() {
		if !waited {
			// Returning early: the lock may still be being taken, and
			// the caller closes the repository after this returns.
			o := <-openc
			unlock = o.unlock
		}
		if unlock != nil {
			unlock()
		}
	}()
	wait := func() error {
		t := time.Now()
		o := <-openc
		waited = true
		if o.err != nil {
			return o.err
		}
		r, ctx, unlock = o.r, o.ctx, o.unlock
		if o.t.After(t) {
			res.Phases["open"] = float64(o.t.Sub(t).Microseconds()) / 1000 // waited for
		}
		return nil
	}
	// The session's context ends at the deadline, or when the agent has
	// kept the puller waiting for idle_timeout (or the repository lock is
	// lost); storing what was received runs on the outer one, so it still
	// completes.
	sessCtx, cancelSess := context.WithCancelCause(ctx)
	defer cancelSess(nil)
	lim := opts.Limits
	sessCtx, cancelDeadline := context.WithDeadlineCause(sessCtx, start.Add(lim.Deadline), &TimeoutError{
		Key: "deadline", After: lim.Deadline, What: fmt.Sprintf("the backup of %s ran past its deadline", escape.String(opts.Host))})
	defer cancelDeadline()

	// The idle watch covers the wire from its first byte, hello included.
	var w *watchedWire
	watched := connecterFunc(func(ctx context.Context, verb string) (transport.Wire, error) {
		raw, err := conn.Connect(ctx, verb)
		if err != nil {
			return nil, err
		}
		w = &watchedWire{Wire: raw}
		go watch(sessCtx, cancelSess, w, lim.IdleTimeout)
		return w, nil
	})
	dial := transport.Connecter(watched)
	pol := p.Opening.Polynomial
	if pol == 0 {
		// No polynomial remembered (the repository's first backup from
		// this cache_dir): connect while the key is derived, and greet
		// the agent once the repository tells the polynomial.
		type connected struct {
			w   transport.Wire
			err error
			d   time.Duration
		}
		pre := make(chan connected, 1)
		go func() {
			t := time.Now()
			w, err := watched.Connect(sessCtx, "backup")
			pre <- connected{w, err, time.Since(t)}
		}()
		if err := wait(); err != nil {
			if c := <-pre; c.err == nil {
				_ = c.w.Close() // nothing was said on it
			}
			return res, err
		}
		pol = r.Config().ChunkerPolynomial
		c := <-pre
		res.Phases["connect"] += float64(c.d.Microseconds()) / 1000
		dial = connecterFunc(func(ctx context.Context, verb string) (transport.Wire, error) {
			dial = watched // a second greeting connects anew
			return c.w, c.err
		})
	}
	var sess *transport.Session
	var hello transport.Hello
	for {
		t := time.Now()
		hello = transport.Hello{Polynomial: strconv.FormatUint(uint64(pol), 16), MaxVersion: opts.MaxVersion}
		if !opts.NoProgressFrames {
			hello.Features = []string{proto.FeatureProgress}
			if !opts.NoProgressCounts {
				hello.Features = append(hello.Features, proto.FeatureProgressCounts)
			}
		}
		sess, err = transport.Dial(sessCtx, dial, "backup", hello)
		if err != nil {
			if cause := context.Cause(sessCtx); cause != nil && ctx.Err() == nil {
				err = fmt.Errorf("%w: %v", cause, err)
			}
			return res, fmt.Errorf("host %s: %w", opts.Host, err)
		}
		phase("connect", t)
		if r == nil {
			if err := wait(); err != nil {
				_ = sess.Wire.Close() // the agent has frozen nothing yet
				return res, err
			}
		}
		if r.Config().ChunkerPolynomial == pol {
			break
		}
		// The agent would chunk with the wrong polynomial: start over.
		logf("%s: the repository's chunker polynomial is not the one remembered; greeting the agent again", opts.Host)
		_ = sess.Wire.Close()
		pol = r.Config().ChunkerPolynomial
	}
	// ctx is now the lock's: losing the lock ends the session too.
	stopLockWatch := context.AfterFunc(ctx, func() { cancelSess(context.Cause(ctx)) })
	defer stopLockWatch()
	progress := proto.ProgressTracker{
		Enabled: sess.Both(hello, proto.FeatureProgress),
		Counts:  sess.Both(hello, proto.FeatureProgress) && sess.Both(hello, proto.FeatureProgressCounts),
		Start:   time.Now(),
	}
	s := &session{
		repo: r, res: res, logf: logf, opts: opts,
		conn: sess.Conn, hello: sess.Reply,
		requested:     map[proto.ID]uint32{},
		agentProgress: progress,
		cancel:        cancelSess, rebuilding: map[proto.ID]bool{},
		rebuildSem: make(chan struct{}, rebuildWorkers()),
	}

	// Which chunks this host has already given us: only these are not
	// asked for again (storage still dedups across hosts on save).
	t := time.Now()
	stateDir := filepath.Join(opts.CacheDir, r.Config().ID)
	known, skipped, err := loadHostRecord(ctx, r, stateDir, opts.Host, lim.MaxTreeBytes)
	if err != nil {
		_ = sess.Wire.Close()
		return res, fmt.Errorf("host %s: %w", opts.Host, err)
	}
	if skipped > 0 {
		logf("%s: warning: %d trees of earlier snapshots are over max_tree_bytes and were not read; their chunks are asked for again", opts.Host, skipped)
	}
	recv, err := openReceivedLog(stateDir, opts.Host)
	if err != nil {
		_ = sess.Wire.Close()
		return res, fmt.Errorf("open received-chunks log: %w", err)
	}
	s.known, s.recv = known, recv
	phase("known", t)

	var sessErr error
	upErr := r.WithBlobUploader(ctx, func(ctx context.Context, up restic.BlobSaverWithAsync) error {
		s.up = up
		s.pw = newPackWriter(r.Backend, r.Key(), r.PackSize(), r.Config().Version)
		sessErr = s.run(sessCtx)
		if cause := context.Cause(sessCtx); sessErr != nil && cause != nil && ctx.Err() == nil {
			// A timeout: the error the read or write saw is only its echo.
			sessErr = cause
		}
		if sessErr != nil && ctx.Err() != nil {
			// Interrupted: still index the packs already written, so
			// they are neither orphaned nor asked for again.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = s.pw.Close(cctx)
			return sessErr
		}
		// Kept on failure too: every chunk in it was verified.
		if err := s.pw.Close(ctx); err != nil {
			if sessErr == nil {
				sessErr = fmt.Errorf("store chunks: %w", err)
			}
			return err
		}
		// Returning nil flushes packs and index, so the chunks received
		// before a failure are kept for the next run.
		return s.waitSaves()
	})
	res.Wire = w.Stats()
	closeErr := w.Close()
	if sessErr == nil && upErr != nil {
		sessErr = fmt.Errorf("store blobs: %w", upErr)
	}
	if sessErr != nil {
		_ = recv.close(false)
		if !errors.Is(sessErr, context.Canceled) {
			sessErr = sess.AgentSaid(sessErr)
		}
		return res, fmt.Errorf("host %s: %w", opts.Host, sessErr)
	}
	if closeErr != nil {
		logf("warning: agent exit: %s", escape.Text(closeErr.Error()))
	}

	t = time.Now()
	sn, err := data.NewSnapshot(s.hello.DataPaths, opts.Tags, opts.Host, s.frozenAt)
	if err != nil {
		_ = recv.close(false)
		return res, err
	}
	sn.Tree = &s.root
	sn.ProgramVersion = "haul " + version.Version
	sn.Summary = &data.SnapshotSummary{
		BackupStart:         start,
		BackupEnd:           time.Now(),
		DataBlobs:           int(res.BlobsNew),
		TreeBlobs:           int(s.treesNew),
		DataAdded:           uint64(s.bytesNew.Load()),
		DataAddedPacked:     uint64(res.BytesAdded),
		TotalFilesProcessed: uint(res.Files),
		TotalBytesProcessed: uint64(res.Bytes),
		FilesNew:            uint(s.filesNew),
		FilesUnmodified:     uint(res.Files - s.filesNew),
		DirsUnmodified:      uint(res.Dirs),
	}
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	rec := &repo.Record{
		Version: version.Version, Agent: s.hello.Agent, Quiesce: res.Frozen.Mode,
		FreezeMS: res.Frozen.FreezeMS, PreSyncMS: res.Frozen.PreSyncMS,
		WireBytesIn: res.Wire.BytesIn, WireBytesOut: res.Wire.BytesOut,
		ChunksWanted: res.ChunksWanted, ChunkBytes: res.ChunkBytes, Deltas: res.Deltas, Protocol: res.Version,
		AgentFiles: res.Manifest.FilesRead, AgentBytes: res.Manifest.BytesRead,
		DurationMS: res.DurationMS, FilesCopied: res.Frozen.FilesCopied, BytesCopied: res.Frozen.BytesCopied,
		MirrorSkipped: res.Frozen.Skipped, Warnings: res.Frozen.Warnings,
	}
	for _, p := range res.Frozen.Phases {
		rec.FreezePhases = append(rec.FreezePhases, repo.PhaseRecord{Name: p.Name, MS: p.MS})
	}
	id, err := known.savingSnapshot(r.Path, func() (restic.ID, error) { return r.SaveSnapshot(ctx, sn, rec) })
	if err != nil {
		_ = recv.close(false)
		return res, fmt.Errorf("host %s: save snapshot: %w", opts.Host, err)
	}
	phase("snapshot", t)
	res.SnapshotID = id.String()
	res.Snapshot = sn
	res.Record = rec
	// The snapshot now accounts for every chunk received, in this run or
	// an interrupted one: they join the host's record.
	for cid := range recv.ids {
		known.ids[cid] = struct{}{}
	}
	// The agent's next session may send this walk's unchanged files
	// without chunk lists: they are in this snapshot.
	known.baseSnap, known.baseWalk = id, res.Manifest.Walk
	if err := known.save(func(cid proto.ID) bool {
		// Chunks stored as the agent's frames are in the repository's
		// index files but not in r's loaded index.
		_, ok := r.LookupBlobSize(restic.DataBlob, restic.ID(cid))
		return ok || recv.ids[cid]
	}); err != nil {
		// The next run rebuilds it from the snapshots.
		logf("warning: %v", err)
	}
	if err := recv.close(true); err != nil {
		logf("warning: reset received-chunks log: %v", err)
	}
	return res, nil
}

// rebuildWorkers is how many deltas are applied at once: one per core,
// at most 4 (each holds its chunk and bases, up to 32 MiB).
func rebuildWorkers() int { return max(1, min(runtime.GOMAXPROCS(0), 4)) }

type dirFrame struct {
	node    *data.Node // nil for the root
	builder *treeJSON
	// parent is this directory in the base snapshot (see same.go),
	// loaded on first use.
	parent       map[string]*data.Node
	parentLoaded bool
}

type session struct {
	repo  *repo.Repo
	up    restic.BlobSaverWithAsync
	conn  *proto.Conn
	res   *Result
	logf  func(string, ...any)
	opts  Options
	known *hostRecord
	recv  *receivedLog

	hello      proto.HelloReply
	parentRoot *restic.ID // the base snapshot's tree (version 3)
	frozenAt   time.Time
	stack      []dirFrame
	root       restic.ID

	// mu guards the session's state while rebuild workers (see delta)
	// run: the session goroutine holds it except while it reads a frame
	// or waits for a worker.
	mu         sync.Mutex
	cancel     context.CancelCauseFunc // ends the session (a worker's error)
	workErr    error                   // the first error of a rebuild worker
	rebuilding map[proto.ID]bool       // deltas handed to a worker
	inflight   int                     // len(rebuilding): outstanding, but no frame is due
	rebuilds   sync.WaitGroup
	rebuildSem chan struct{}

	requested  map[proto.ID]uint32 // asked for and not yet received: the length the manifest gave
	pw         *packWriter         // stores compressed chunks as they came
	full       map[proto.ID]bool   // asked for whole after a delta failed
	bases      *baseCache
	deltaPlain int64 // plain bytes of the deltas received
	baseLoaded int64 // base bytes read from the repository for them

	// What the puller itself counted and verified: never the agent's word.
	entries     int64
	chunkRefs   int64
	treeBytes   int64 // held by the builders of the open directories
	files       int64
	dirs        int64
	bytes       int64
	added       int64 // bytes this run stores, as stored (max_bytes_added)
	outstanding int
	pending     []proto.ID // wants not yet sent

	saves    sync.WaitGroup // async blob saves in flight
	saveMu   sync.Mutex
	saveErr  error
	blobsNew atomic.Int64
	packed   atomic.Int64
	bytesNew atomic.Int64
	treesNew int64
	filesNew int64

	prog Progress
	// agentProgress checks the agent's progress frames (pre-sync, freeze).
	agentProgress proto.ProgressTracker
	wantBytes     int64 // bytes of the chunks asked for
	manifestDone  bool
}

// awaitFrozen reads the agent's answer to freeze: progress frames naming
// its steps (pre-sync, freeze) and, with proto.FeatureProgressCounts,
// each step's files and bytes so far, then frozen.
func (s *session) awaitFrozen() error {
	shown := proto.PhasePreSync // what run shows while it waits
	for {
		t, p, err := s.conn.R.Read()
		if err != nil {
			return err
		}
		if t != proto.TProgress {
			return proto.DecodeAs(t, p, proto.TFrozen, &s.res.Frozen)
		}
		m, err := s.agentProgress.Frame(p, proto.BackupPhases)
		if err != nil {
			return err
		}
		if m.Phase != shown {
			s.prog.Phase(m.Phase)
			shown = m.Phase
		}
		if m.HasCounts() {
			filesTotal, bytesTotal := int64(-1), int64(-1)
			if m.FilesTotal != nil {
				filesTotal = *m.FilesTotal
			}
			if m.BytesTotal != nil {
				bytesTotal = *m.BytesTotal
			}
			s.prog.Counts(*m.Bytes, bytesTotal, *m.Files, filesTotal)
		}
	}
}

// counts reports the transfer: chunk bytes received of those asked for,
// files of the manifest; totals only once the manifest has ended.
func (s *session) counts() {
	if s.manifestDone {
		s.prog.Counts(s.res.ChunkBytes, s.wantBytes, s.files, s.res.Manifest.Files)
	} else {
		s.prog.Counts(s.res.ChunkBytes, -1, s.files, -1)
	}
}

func (s *session) run(ctx context.Context) error {
	s.full = map[proto.ID]bool{}
	s.bases = newBaseCache(baseCacheBytes)
	if len(s.hello.DataPaths) == 0 {
		return fmt.Errorf("agent reports no data paths")
	}
	s.res.Agent = escape.String(s.hello.Agent)
	s.res.Version = s.hello.Version
	s.res.Paths = s.hello.DataPaths
	for _, p := range s.hello.DataPaths {
		if !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) || len(p) > 4095 {
			return fmt.Errorf("%w: agent reports data path %s: not an absolute path", proto.ErrFrame, escape.Quote(p))
		}
	}
	if len(s.opts.Exclude) > 0 && !slices.Contains(s.hello.Features, proto.FeatureExclude) {
		// An older agent ignores Walk's payload and would send what is
		// excluded: refuse rather than move it over the wire.
		return fmt.Errorf("host %s has exclude patterns but its agent (%s) cannot apply them: upgrade haul-agent on the host, or remove exclude from the host's config", s.opts.Host, s.res.Agent)
	}

	s.prog = s.opts.Progress
	if s.prog == nil {
		s.prog = noProgress{}
	}
	if s.agentProgress.Enabled {
		s.prog.Phase(proto.PhasePreSync) // the agent says when the freeze begins
	} else {
		s.prog.Phase("pre-sync+freeze")
	}
	t := time.Now()
	if err := s.conn.Send(proto.TFreeze, &proto.Freeze{Tags: s.opts.Tags}); err != nil {
		return err
	}
	// The walk request goes right behind the freeze: the agent reads it
	// once it has frozen, so the manifest starts a round trip earlier
	// (over a WAN link, 40 ms or more). It is written while frozen is
	// awaited: over a transport without a buffer (a pipe), an agent that
	// answers freeze before it reads on would otherwise wait for us.
	walk := &proto.Walk{Exclude: s.opts.Exclude, Base: s.baseWalk(ctx)}
	walkSent := make(chan error, 1)
	go func() { walkSent <- s.conn.Send(proto.TWalk, walk) }()
	if err := s.awaitFrozen(); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	if err := <-walkSent; err != nil {
		return err
	}
	s.frozenAt = time.Now()
	s.res.FreezeMS = s.res.Frozen.FreezeMS
	s.res.Phases["freeze"] = float64(time.Since(t).Microseconds()) / 1000
	s.res.Frozen.Mode = escape.String(s.res.Frozen.Mode)
	for i := range s.res.Frozen.Phases {
		s.res.Frozen.Phases[i].Name = escape.String(s.res.Frozen.Phases[i].Name)
	}
	s.logf("%s: frozen for %.1f ms (%s), %d files copied", s.opts.Host, s.res.Frozen.FreezeMS, s.res.Frozen.Mode, s.res.Frozen.FilesCopied)
	s.res.Frozen.Warnings = agentWarnings(s.res.Frozen.Warnings)
	for _, w := range s.res.Frozen.Warnings {
		s.logf("%s: warning: agent: %s", s.opts.Host, w)
	}

	s.prog.Phase("manifest")
	t = time.Now()
	s.stack = []dirFrame{{builder: newTreeJSON()}}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(proto.MaxChunk*2), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return err
	}
	defer dec.Close()
	manifestDone := false
	s.mu.Lock()
	defer func() {
		s.mu.Unlock()
		s.rebuilds.Wait() // none may touch the session once it has ended
	}()
	for {
		if manifestDone && s.outstanding == s.inflight {
			if s.inflight == 0 {
				break
			}
			// No frame is due until a worker asks for a chunk whole.
			s.mu.Unlock()
			s.rebuilds.Wait()
			s.mu.Lock()
			if s.workErr != nil {
				return s.workErr
			}
			continue
		}
		if s.workErr != nil {
			return s.workErr
		}
		if err := s.drainSaves(false); err != nil {
			return err
		}
		s.mu.Unlock()
		ft, payload, err := s.conn.R.Read()
		s.mu.Lock()
		if err != nil {
			if s.workErr != nil {
				return s.workErr
			}
			return fmt.Errorf("connection lost during transfer (%d chunks outstanding): %w", s.outstanding, err)
		}
		switch ft {
		case proto.TNode:
			var n proto.Node
			if err := proto.Decode(ft, payload, &n); err != nil {
				return err
			}
			if err := s.node(ctx, &n); err != nil {
				return err
			}
		case proto.TDirEnd:
			if err := s.dirEnd(ctx); err != nil {
				return err
			}
		case proto.TManifestEnd:
			if err := proto.Decode(ft, payload, &s.res.Manifest); err != nil {
				return err
			}
			if len(s.stack) != 1 {
				return fmt.Errorf("agent ended the manifest with %d directories open", len(s.stack)-1)
			}
			s.checkAgentCounts()
			if err := s.flushWants(); err != nil {
				return err
			}
			manifestDone = true
			s.manifestDone = true
			s.prog.Phase("transfer")
			s.counts()
		case proto.TChunk:
			if err := s.chunk(ctx, dec, payload); err != nil {
				return err
			}
		case proto.TDelta:
			if s.hello.Version < proto.DeltaVersion {
				return fmt.Errorf("%w: delta in protocol version %d", proto.ErrFrame, s.hello.Version)
			}
			if err := s.delta(ctx, dec, payload); err != nil {
				return err
			}
		case proto.TError:
			var e proto.Error
			if err := proto.Decode(ft, payload, &e); err != nil {
				return err
			}
			e.Code, e.Message = escape.String(e.Code), escape.Text(e.Message)
			return fmt.Errorf("agent: %w", &e)
		default:
			return fmt.Errorf("%w: unexpected %s during manifest", proto.ErrFrame, ft)
		}
	}
	s.res.Phases["transfer"] = float64(time.Since(t).Microseconds()) / 1000
	s.prog.Phase("snapshot")

	root := s.stack[0].builder
	buf := root.finish()
	id, known, _, err := s.up.SaveBlob(ctx, restic.TreeBlob, buf, restic.ID{}, false)
	if err != nil {
		return err
	}
	if !known {
		s.treesNew++
	}
	s.root = id
	s.res.Files, s.res.Dirs, s.res.Bytes = s.files, s.dirs, s.bytes

	if err := s.conn.Send(proto.TDone, &proto.Done{}); err != nil {
		return err
	}
	var bye proto.Bye
	if err := s.conn.Expect(proto.TBye, &bye); err != nil {
		return fmt.Errorf("bye: %w", err)
	}
	s.res.AgentMaxRSS = bye.MaxRSSKiB
	return nil
}

func (s *session) node(ctx context.Context, n *proto.Node) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("%w: %v", proto.ErrFrame, err)
	}
	lim := &s.opts.Limits
	s.entries++
	if s.entries > lim.MaxEntries {
		return limitErr("max_entries", lim.MaxEntries, "the manifest has more than %d entries", lim.MaxEntries)
	}
	top := &s.stack[len(s.stack)-1]
	if top.builder.count >= lim.MaxDirEntries {
		return limitErr("max_dir_entries", lim.MaxDirEntries, "directory %s has more than %d entries", escape.Quote(s.dirPath()), lim.MaxDirEntries)
	}
	dn := toResticNode(n)
	if n.Type == proto.NodeDir {
		if len(s.stack) > lim.MaxDepth {
			return limitErr("max_depth", lim.MaxDepth, "directories nest deeper than %d levels (at %s)", lim.MaxDepth, escape.Quote(s.dirPath()))
		}
		if !s.leading(dn.Name) {
			s.dirs++
		}
		s.stack = append(s.stack, dirFrame{node: dn, builder: newTreeJSON()})
		return nil
	}
	if n.Type == proto.NodeFile {
		refs := n.Chunks
		if n.Same {
			var err error
			if refs, err = s.sameContent(ctx, n); err != nil {
				return err
			}
			dn.Content = make(restic.IDs, len(refs))
			for i, c := range refs {
				dn.Content[i] = restic.ID(c.ID)
			}
		}
		s.chunkRefs += int64(len(refs))
		if s.chunkRefs > lim.MaxChunkRefs {
			return limitErr("max_chunk_refs", lim.MaxChunkRefs, "the manifest references more than %d chunks", lim.MaxChunkRefs)
		}
		newFile := false
		for _, c := range refs {
			want, err := s.want(c)
			if err != nil {
				return err
			}
			if want {
				s.wantBytes += int64(c.Length)
				s.requested[c.ID] = c.Length
				s.outstanding++
				s.pending = append(s.pending, c.ID)
				newFile = true
			}
		}
		if newFile {
			s.filesNew++
		}
		s.files++
		s.bytes += int64(n.Size) // the sum of its chunks' lengths, each checked
		s.counts()
		// Send wants per file, so the agent starts sending while it walks.
		if err := s.flushWants(); err != nil {
			return err
		}
	}
	return s.add(dn)
}

// dirPath is the path of the innermost open directory, for messages.
func (s *session) dirPath() string {
	var b strings.Builder
	for _, f := range s.stack[1:] {
		b.WriteByte('/')
		b.WriteString(f.node.Name)
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// leading reports whether the directory name, opened in the innermost
// open directory, is one of those leading to a data path (not counted, as
// the agent does not count them).
func (s *session) leading(name string) bool {
	depth := len(s.stack) // the new directory's depth
	for _, dp := range s.hello.DataPaths {
		parts := strings.Split(strings.Trim(dp, "/"), "/")
		if depth >= len(parts) || parts[depth-1] != name {
			continue
		}
		ok := true
		for i, f := range s.stack[1:] {
			if parts[i] != f.node.Name {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// want decides whether to ask for a chunk: unless the repository has it
// and this host sent it before (in a snapshot or an interrupted run). A
// length that differs from the stored chunk's, or from an earlier
// reference's, is a protocol error: sizes are counted from verified
// lengths only.
func (s *session) want(c proto.ChunkRef) (bool, error) {
	if l, ok := s.requested[c.ID]; ok {
		if l != c.Length {
			return false, fmt.Errorf("%w: chunk %s referenced as %d and as %d bytes", proto.ErrFrame, c.ID.Short(), l, c.Length)
		}
		return false, nil
	}
	rid := restic.ID(c.ID)
	if size, ok := s.repo.LookupBlobSize(restic.DataBlob, rid); ok {
		if s.known.has(c.ID) || s.recv.ids[c.ID] {
			if uint32(size) != c.Length {
				return false, fmt.Errorf("%w: chunk %s is %d bytes in the repository, the manifest says %d", proto.ErrFrame, c.ID.Short(), size, c.Length)
			}
			return false, nil
		}
	}
	return true, nil
}

func (s *session) flushWants() error {
	if len(s.pending) == 0 {
		return nil // nothing to send: no write per file of an unchanged tree
	}
	for len(s.pending) > 0 {
		n := min(len(s.pending), proto.MaxWantIDs)
		if err := s.conn.W.Write(proto.TWant, proto.EncodeWant(s.pending[:n])); err != nil {
			return err
		}
		s.pending = s.pending[n:]
		s.res.ChunksWanted += int64(n)
	}
	s.pending = nil
	return s.conn.W.Flush()
}

func (s *session) add(n *data.Node) error {
	top := s.stack[len(s.stack)-1]
	before := top.builder.size()
	lim := s.opts.Limits.MaxTreeBytes
	ok, err := top.builder.add(n, lim-(s.treeBytes-before))
	if err != nil {
		return fmt.Errorf("%w: agent sent names out of order or twice: %v", proto.ErrFrame, err)
	}
	if !ok {
		return limitErr("max_tree_bytes", lim, "the open directories' tree data (at %s) would exceed %d bytes", escape.Quote(s.dirPath()), lim)
	}
	s.treeBytes += top.builder.size() - before
	return nil
}

func (s *session) dirEnd(ctx context.Context) error {
	if len(s.stack) < 2 {
		return fmt.Errorf("%w: dir-end without an open directory", proto.ErrFrame)
	}
	top := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	s.treeBytes -= top.builder.size()
	buf := top.builder.finish()
	id, known, _, err := s.up.SaveBlob(ctx, restic.TreeBlob, buf, restic.ID{}, false)
	if err != nil {
		return fmt.Errorf("save tree: %w", err)
	}
	if !known {
		s.treesNew++
	}
	top.node.Subtree = &id
	return s.add(top.node)
}

// checkAgentCounts compares manifest-end's numbers with what arrived. The
// puller's own counts are the ones kept; a difference is only reported.
func (s *session) checkAgentCounts() {
	m := &s.res.Manifest
	if m.Files != s.files || m.Dirs != s.dirs || m.Bytes != s.bytes {
		s.logf("%s: warning: the agent reported %d files, %d dirs, %d bytes; the manifest held %d files, %d dirs, %d bytes (the snapshot records the latter)",
			s.opts.Host, m.Files, m.Dirs, m.Bytes, s.files, s.dirs, s.bytes)
	}
}

// charge counts bytes this run adds to the repository against
// max_bytes_added.
func (s *session) charge(n int) error {
	s.added += int64(n)
	if lim := s.opts.Limits.MaxBytesAdded; s.added > lim {
		return limitErr("max_bytes_added", lim, "this run would add more than %d bytes to the repository", lim)
	}
	return nil
}

func (s *session) chunk(ctx context.Context, dec *zstd.Decoder, payload []byte) error {
	c, err := proto.DecodeChunk(payload)
	if err != nil {
		return err
	}
	want, ok := s.requested[c.ID]
	if !ok {
		return fmt.Errorf("%w: agent sent chunk %s, which was not asked for", proto.ErrFrame, c.ID.Short())
	}
	if s.rebuilding[c.ID] {
		return fmt.Errorf("%w: agent sent chunk %s again while its delta was being applied", proto.ErrFrame, c.ID.Short())
	}
	if c.Length != want {
		return fmt.Errorf("%w: agent sent chunk %s as %d bytes, the manifest said %d", proto.ErrFrame, c.ID.Short(), c.Length, want)
	}
	plain, err := c.Plain(dec, nil)
	if err != nil {
		// Never stored: a chunk is saved only under the ID its bytes hash to.
		return fmt.Errorf("rejected data from agent: %w", err)
	}
	if c.Encoding == proto.EncZstd && len(c.Data) <= len(plain) && proto.SingleZstdFrame(c.Data) {
		// The frame is stored as the blob's compressed form: no second
		// compression. A blob the repository already holds (sent by
		// another host) is not stored again.
		delete(s.requested, c.ID)
		s.outstanding--
		s.res.ChunkBytes += int64(len(plain))
		s.counts()
		s.recv.add(c.ID)
		if _, ok := s.repo.LookupBlobSize(restic.DataBlob, restic.ID(c.ID)); ok {
			return nil
		}
		if err := s.charge(len(c.Data)); err != nil {
			return err
		}
		return s.pw.Add(ctx, restic.ID(c.ID), append([]byte(nil), c.Data...), len(plain))
	}
	if c.Encoding == proto.EncZstd {
		// Padded, with skippable or extra frames, or larger than the
		// chunk: the repository compresses the plain bytes itself.
		s.res.Recompressed++
	}
	plain = append([]byte(nil), plain...) // the frame buffer is reused
	return s.store(ctx, c.ID, plain)
}

// store saves a verified chunk asynchronously.
func (s *session) store(ctx context.Context, id proto.ID, plain []byte) error {
	delete(s.requested, id)
	delete(s.full, id)
	s.outstanding--
	s.res.ChunkBytes += int64(len(plain))
	if _, ok := s.repo.LookupBlobSize(restic.DataBlob, restic.ID(id)); !ok {
		// Charged at its plain size: an upper bound of what it adds.
		if err := s.charge(len(plain)); err != nil {
			return err
		}
	}
	s.counts()
	s.saves.Add(1)
	s.up.SaveBlobAsync(ctx, restic.DataBlob, plain, restic.ID(id), false, func(_ restic.ID, known bool, size int, err error) {
		defer s.saves.Done()
		if err != nil {
			s.saveMu.Lock()
			if s.saveErr == nil {
				s.saveErr = fmt.Errorf("store chunk %s: %w", id.Short(), err)
			}
			s.saveMu.Unlock()
			return
		}
		if !known {
			s.blobsNew.Add(1)
			s.packed.Add(int64(size))
			s.bytesNew.Add(int64(len(plain)))
		}
	})
	s.recv.add(id)
	return nil
}

// drainSaves reports the first failed blob save; with block it first waits
// for all saves in flight.
func (s *session) drainSaves(block bool) error {
	if block {
		s.saves.Wait()
		s.res.BlobsNew = s.blobsNew.Load() + s.pw.blobs
		s.res.BytesAdded = s.packed.Load() + s.pw.bytesAdded
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	return s.saveErr
}

func (s *session) waitSaves() error { return s.drainSaves(true) }

func toResticNode(n *proto.Node) *data.Node {
	dn := &data.Node{
		Name:       string(n.Name),
		Type:       data.NodeType(n.Type),
		Mode:       os.FileMode(n.Mode),
		ModTime:    proto.Time(n.MTime),
		AccessTime: proto.Time(n.ATime),
		ChangeTime: proto.Time(n.CTime),
		UID:        n.UID,
		GID:        n.GID,
		User:       n.User,
		Group:      n.Group,
		Inode:      n.Inode,
		DeviceID:   n.DeviceID,
		Links:      n.Links,
		LinkTarget: string(n.LinkTarget),
		Device:     n.Device,
	}
	if n.Type == proto.NodeFile {
		dn.Size = n.Size
		dn.Content = make(restic.IDs, len(n.Chunks))
		for i, c := range n.Chunks {
			dn.Content[i] = restic.ID(c.ID)
		}
	}
	return dn
}

// agentWarnings bounds and escapes the warnings an agent reports: at most
// 20, each at most 1 KiB, control characters and invalid UTF-8 escaped.
func agentWarnings(ws []string) []string {
	ws = ws[:min(len(ws), 20)]
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		if len(w) > 1024 {
			w = w[:1024] + "…"
		}
		out = append(out, escape.String(w))
	}
	return out
}

// connecterFunc makes a function a transport.Connecter.
type connecterFunc func(ctx context.Context, verb string) (transport.Wire, error)

func (f connecterFunc) Connect(ctx context.Context, verb string) (transport.Wire, error) {
	return f(ctx, verb)
}
