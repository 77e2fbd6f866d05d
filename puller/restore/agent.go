package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/transport"
)

// AgentOptions configures a restore onto an agent.
type AgentOptions struct {
	// DryRun stages and verifies the snapshot on the agent, then removes
	// the staging copy: nothing is swapped, no service is touched.
	DryRun bool
	// NoMarker leaves the agent's ready marker unwritten (migrate writes it
	// after its own verification, with MarkReady).
	NoMarker bool
	// Maps says where the snapshot's paths go on the target (--map); nil
	// maps each path onto itself, or the only path onto the only data
	// path (see ResolveMapping).
	Maps []PathMap
	// ReplaceLiveData lets the restore replace data on a host that has
	// data but no ready marker (a hand-built host, or one whose marker
	// was removed). Without it such a host refuses; see the agent's
	// refusal for how to look first.
	ReplaceLiveData bool
	// AllowSpecial restores device nodes and setuid/setgid bits; without
	// it the agent skips device nodes and clears those bits, and lists
	// both.
	AllowSpecial bool
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// Progress follows the restore for a live display (nil: none):
	// "connect", "tree" (files and bytes of the snapshot sent), "transfer"
	// (chunk bytes and chunks sent of those the agent asked for), then the
	// agent's steps as it reports them (sync, verify, metadata, swap,
	// finish; see proto.RestorePhases), or "verify+swap" ("verify" for a
	// dry run) for an agent that does not report them.
	Progress Progress
}

type noProgress struct{}

func (noProgress) Phase(string)                      {}
func (noProgress) Unit(string)                       {}
func (noProgress) Counts(int64, int64, int64, int64) {}

// AgentResult summarises a restore onto an agent.
type AgentResult struct {
	Snapshot     string   `json:"snapshot"`
	SnapshotHost string   `json:"snapshot_host"`
	Target       string   `json:"target"` // the agent's host name
	Agent        string   `json:"agent"`
	Paths        []string `json:"paths"`
	// Mapping says where each snapshot path went on the target.
	Mapping    *Mapping `json:"mapping,omitempty"`
	DryRun     bool     `json:"dry_run,omitempty"`
	ChunksSent int64    `json:"chunks_sent"`
	ChunkBytes int64    `json:"chunk_bytes"` // plain bytes of the chunks sent
	// ChunksAsStored counts chunks sent in the repository's own zstd
	// encoding, without decompressing and recompressing them.
	ChunksAsStored int64              `json:"chunks_as_stored"`
	Wire           transport.Stats    `json:"wire"`
	DurationMS     float64            `json:"duration_ms"`
	Phases         map[string]float64 `json:"phases_ms"`
	// Outcome is what the agent reported: counts, the freeze window of the
	// swap, the previous copies kept, the marker written.
	Outcome proto.RestoreResult `json:"agent_result"`
}

// Agent streams snapshot sn to the agent conn reaches (a restore session:
// the restore key, or an exec agent with --allow-restore). The agent stages
// it beside its live data, verifies it and swaps it in; see "Restore
// session" in proto/PROTOCOL.md. The agent may ask only for chunks of this
// snapshot: asking for anything else ends the session, so a restore tells
// a VPS nothing about other hosts' data.
func Agent(ctx context.Context, r *repo.Repo, sn *repo.Snapshot, conn transport.Connecter, opts AgentOptions) (res *AgentResult, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	prog := opts.Progress
	if prog == nil {
		prog = noProgress{}
	}
	prog.Phase("connect")
	start := time.Now()
	res = &AgentResult{Snapshot: sn.ID.String(), SnapshotHost: sn.Hostname, Paths: sn.Paths, DryRun: opts.DryRun, Phases: map[string]float64{}}
	phase := func(name string, t time.Time) { res.Phases[name] += float64(time.Since(t).Microseconds()) / 1000 }
	if sn.Tree == nil {
		return res, fmt.Errorf("snapshot %s has no tree", sn.ID.Str())
	}

	t := time.Now()
	hello := transport.Hello{Polynomial: strconv.FormatUint(uint64(r.Config().ChunkerPolynomial), 16), Features: []string{proto.FeatureProgress}}
	sess, err := transport.Dial(ctx, conn, "restore", hello)
	if err != nil {
		return res, fmt.Errorf("restore onto the agent: %w", err)
	}
	w := sess.Wire
	phase("connect", t)
	ctx, cancel := context.WithCancel(ctx)
	s := &agentSession{
		repo: r, sn: sn, opts: opts, res: res, logf: logf, cancel: cancel, prog: prog,
		conn: sess.Conn, hello: sess.Reply,
		content: map[proto.ID]bool{},
		queue:   newIDQueue(ctx),

		agentProgress: proto.ProgressTracker{Enabled: sess.Both(hello, proto.FeatureProgress)},
	}
	err = s.run(ctx)
	cancel()
	res.Wire = w.Stats()
	closeErr := w.Close()
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		return res, fmt.Errorf("restore onto %s: %w", s.target(), sess.AgentSaid(err))
	}
	if closeErr != nil {
		logf("warning: agent exit: %v", closeErr)
	}
	return res, nil
}

type agentSession struct {
	repo   *repo.Repo
	sn     *repo.Snapshot
	opts   AgentOptions
	res    *AgentResult
	logf   func(string, ...any)
	prog   Progress
	cancel context.CancelFunc
	conn   *proto.Conn
	hello  proto.HelloReply
	// mapping and sources (the From nodes, by To) are set by handshake.
	mapping *Mapping
	sources map[string]*data.Node

	// content holds every chunk of the snapshot, complete once treeSent is
	// closed; an entry turns false when the agent asks for it, so each
	// chunk is sent at most once per session (a want flood costs nothing).
	content  map[proto.ID]bool
	treeSent chan struct{}
	treeOnce sync.Once
	queue    *idQueue
	end      proto.ManifestEnd
	// treeBytes and treeFiles are the tree phase's totals, from the
	// snapshot's summary (-1: not known).
	treeBytes, treeFiles int64

	// What the agent asked for (the reader adds, the sender reads): all
	// of it once wantsDone.
	wantChunks, wantBytes atomic.Int64
	wantsDone             atomic.Bool

	// agentProgress checks the agent's progress frames, which may come
	// only once the commit is sent.
	agentProgress proto.ProgressTracker
	committed     atomic.Bool

	mu       sync.Mutex
	firstErr error
	result   *proto.RestoreResult
}

func (s *agentSession) target() string {
	if s.hello.Host != "" {
		return s.hello.Host
	}
	return "the agent"
}

// fail records the session's error and stops it. The agent's own report
// wins over what it caused on this side (a broken pipe, a closed wire).
func (s *agentSession) fail(err error) {
	s.mu.Lock()
	var pe *proto.Error
	if s.firstErr == nil || (errors.As(err, &pe) && !errors.As(s.firstErr, &pe)) {
		s.firstErr = err
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *agentSession) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

func (s *agentSession) run(ctx context.Context) error {
	if err := s.handshake(); err != nil {
		return err
	}
	begin := proto.RestoreBegin{
		Snapshot: s.sn.ID.String(), Host: s.sn.Hostname, Time: s.sn.Time, Paths: s.mapping.targetRoots(s.hello.DataPaths),
		DryRun: s.opts.DryRun, NoMarker: s.opts.NoMarker,
		ReplaceLiveData: s.opts.ReplaceLiveData, AllowSpecial: s.opts.AllowSpecial,
	}
	if err := s.conn.Send(proto.TRestoreBegin, &begin); err != nil {
		return fmt.Errorf("send restore-begin: %w", err)
	}

	s.treeSent = make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		s.read(ctx)
	}()

	t := time.Now()
	s.logf("%s: streaming the tree of snapshot %s", s.target(), s.sn.ID.Str())
	s.treeBytes, s.treeFiles = -1, -1
	if sum := s.sn.Summary; sum != nil && s.wholeSnapshot() {
		s.treeBytes, s.treeFiles = int64(sum.TotalBytesProcessed), int64(sum.TotalFilesProcessed)
	}
	s.prog.Phase("tree")
	err := s.sendTree(ctx)
	s.treeDone()
	s.res.Phases["tree"] = float64(time.Since(t).Microseconds()) / 1000
	if err != nil {
		s.fail(err)
	} else {
		t = time.Now()
		s.prog.Phase("transfer")
		s.prog.Unit("chunks")
		if err := s.sendChunks(ctx); err != nil {
			s.fail(err)
		}
		s.res.Phases["transfer"] = float64(time.Since(t).Microseconds()) / 1000
	}
	// The agent's answer (a result or an error) ends the reader; a
	// cancelled context closes the wire under it.
	<-readerDone
	if err := s.err(); err != nil {
		return err
	}
	if s.result == nil {
		return fmt.Errorf("agent closed the session without a result")
	}
	s.res.Outcome = *s.result
	return nil
}

// wholeSnapshot says whether the tree sent is all of the snapshot (each
// of its paths onto itself or mapped whole), so its summary's totals are
// the tree's; a map from a directory below a path sends part of it.
func (s *agentSession) wholeSnapshot() bool {
	if s.mapping.Identity() {
		return true
	}
	from := make([]string, len(s.mapping.Maps))
	for i, p := range s.mapping.Maps {
		from[i] = p.From
	}
	return slices.Equal(cleanPaths(from), cleanPaths(s.sn.Paths))
}

func (s *agentSession) treeDone() { s.treeOnce.Do(func() { close(s.treeSent) }) }

// handshake checks the agent can take this snapshot.
func (s *agentSession) handshake() error {
	s.hello.Host, s.hello.Agent = escape.String(s.hello.Host), escape.String(s.hello.Agent)
	s.res.Target, s.res.Agent = s.hello.Host, s.hello.Agent
	if !s.hello.RestoreAllowed {
		return fmt.Errorf("the agent does not allow restore with this key (its forced command lacks --allow-restore)")
	}
	m, err := ResolveMapping(s.sn.Paths, s.hello.DataPaths, s.opts.Maps, s.hello.Host)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", s.sn.ID.Str(), err)
	}
	if !m.Identity() {
		// Every source must be a directory of this snapshot before the
		// agent hears of the restore: a wrong map changes nothing.
		s.sources = map[string]*data.Node{}
		for _, p := range m.Maps {
			n, err := findNode(context.Background(), s.repo, s.sn, p.From)
			if err != nil {
				return fmt.Errorf("--map %s=%s: %w. Nothing was changed", p.From, p.To, err)
			}
			if n.Type != data.NodeTypeDir || n.Subtree == nil {
				return fmt.Errorf("--map %s=%s: %s is a %s in snapshot %s, not a directory. Nothing was changed", p.From, p.To, p.From, n.Type, s.sn.ID.Str())
			}
			s.sources[p.To] = n
		}
	}
	s.mapping, s.res.Mapping = m, m
	if !m.Identity() {
		how := "mapped"
		if m.Auto {
			how = "auto-mapped (" + m.Reason + ")"
		}
		s.logf("%s: %s %s", s.target(), how, m)
	}
	return nil
}

func cleanPaths(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = strings.TrimSuffix(p, "/")
	}
	slices.Sort(out)
	return out
}

// read takes the agent's frames: wants, then the result or an error.
func (s *agentSession) read(ctx context.Context) {
	for {
		t, p, err := s.conn.R.Read()
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("connection lost: %w", err))
			}
			s.queue.close()
			return
		}
		switch t {
		case proto.TRestoreWant:
			if len(p) == 0 {
				s.wantsDone.Store(true)
				s.queue.close()
				continue
			}
			select {
			case <-s.treeSent:
			default:
				s.fail(fmt.Errorf("%w: agent asked for chunks before the tree was sent", proto.ErrFrame))
				return
			}
			ids, err := proto.DecodeWant(p)
			if err != nil {
				s.fail(err)
				return
			}
			for _, id := range ids {
				unsent, ok := s.content[id]
				if !ok {
					s.fail(fmt.Errorf("%w: agent asked for chunk %s, which is not in snapshot %s", proto.ErrFrame, id.Short(), s.sn.ID.Str()))
					return
				}
				if !unsent {
					s.fail(fmt.Errorf("%w: agent asked for chunk %s a second time (each chunk is sent once per restore)", proto.ErrFrame, id.Short()))
					return
				}
				s.content[id] = false
				if size, ok := s.repo.LookupBlobSize(restic.DataBlob, restic.ID(id)); ok {
					s.wantBytes.Add(int64(size))
				}
			}
			s.wantChunks.Add(int64(len(ids)))
			s.queue.push(ids)
		case proto.TProgress:
			phase, err := s.agentProgress.Phase(p, proto.RestorePhases)
			if err == nil && !s.committed.Load() {
				err = fmt.Errorf("%w: progress from the agent before the commit", proto.ErrFrame)
			}
			if err != nil {
				s.fail(err)
				return
			}
			s.prog.Phase(phase)
		case proto.TRestoreResult:
			var r proto.RestoreResult
			if err := proto.Decode(t, p, &r); err != nil {
				s.fail(err)
				return
			}
			sanitizeResult(&r)
			s.mu.Lock()
			s.result = &r
			s.mu.Unlock()
			s.queue.close()
			return
		case proto.TError:
			var e proto.Error
			if err := proto.Decode(t, p, &e); err != nil {
				s.fail(err)
				return
			}
			e.Code, e.Message = escape.String(e.Code), escape.Text(e.Message)
			s.fail(fmt.Errorf("agent: %w", &e))
			s.queue.close()
			return
		default:
			s.fail(fmt.Errorf("%w: unexpected %s from the agent during a restore", proto.ErrFrame, t))
			return
		}
	}
}

// sanitizeResult escapes the strings of an agent's result, which the
// puller prints.
func sanitizeResult(r *proto.RestoreResult) {
	for _, l := range [][]string{r.Kept, r.Pruned, r.Warnings} {
		for i := range l {
			l[i] = escape.String(l[i])
		}
	}
	for i := range r.Phases {
		r.Phases[i].Name = escape.String(r.Phases[i].Name)
	}
	r.Marker = escape.String(r.Marker)
}

// sendTree streams the snapshot's tree as the backup manifest is streamed:
// rooted at "/", each directory's nodes in the tree's order, a TDirEnd
// after each directory's children.
func (s *agentSession) sendTree(ctx context.Context) error {
	var err error
	if s.mapping.Identity() {
		err = s.sendDir(ctx, *s.sn.Tree, "/")
	} else {
		err = s.sendMapped(ctx, newMapTrie(s.mapping), "/")
	}
	if err != nil {
		return err
	}
	// The content set is complete: the agent may ask as soon as it has
	// manifest-end.
	s.treeDone()
	if err := s.conn.Send(proto.TManifestEnd, &s.end); err != nil {
		return err
	}
	return nil
}

func (s *agentSession) sendDir(ctx context.Context, id restic.ID, path string) error {
	it, err := data.LoadTree(ctx, s.repo, id)
	if err != nil {
		return fmt.Errorf("load tree %s (%s): %w", id.Str(), path, err)
	}
	var nodes []*data.Node
	for item := range it {
		if item.Error != nil {
			return fmt.Errorf("decode tree %s (%s): %w", id.Str(), path, item.Error)
		}
		nodes = append(nodes, item.Node)
	}
	for _, dn := range nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, ok := fromResticNode(dn)
		if !ok {
			s.logf("warning: %s%s has type %q, which is not restored (restic skips it too)", path, dn.Name, dn.Type)
			continue
		}
		if err := s.chunkLengths(n, path); err != nil {
			return err
		}
		b, err := proto.Encode(n)
		if err != nil {
			return fmt.Errorf("%s%s: %w", path, dn.Name, err)
		}
		if err := s.conn.W.Write(proto.TNode, b); err != nil {
			return err
		}
		switch n.Type {
		case proto.NodeFile:
			s.end.Files++
			s.end.Bytes += int64(n.Size)
			for _, c := range n.Chunks {
				s.content[c.ID] = true
				s.end.Chunks++
			}
			s.prog.Counts(s.end.Bytes, s.treeBytes, s.end.Files, s.treeFiles)
		case proto.NodeDir:
			s.end.Dirs++
			if dn.Subtree == nil {
				return fmt.Errorf("snapshot %s is damaged: directory %s%s has no subtree", s.sn.ID.Str(), path, dn.Name)
			}
			if err := s.sendDir(ctx, *dn.Subtree, path+dn.Name+"/"); err != nil {
				return err
			}
			if err := s.conn.W.Write(proto.TDirEnd); err != nil {
				return err
			}
		}
	}
	return nil
}

// mapTrie is the tree of directories a mapped restore sends: the
// components of each destination, with the snapshot's source directory at
// each destination.
type mapTrie struct {
	children map[string]*mapTrie
	to       string // set on a destination: its full path
}

func newMapTrie(m *Mapping) *mapTrie {
	root := &mapTrie{children: map[string]*mapTrie{}}
	for _, p := range m.Maps {
		t := root
		for _, name := range strings.Split(strings.Trim(p.To, "/"), "/") {
			c := t.children[name]
			if c == nil {
				c = &mapTrie{children: map[string]*mapTrie{}}
				t.children[name] = c
			}
			t = c
		}
		t.to = p.To
	}
	return root
}

// sendMapped sends the directories leading to each destination (made up:
// they are the target's, not the snapshot's), and at each destination the
// source directory's node, renamed, with its whole subtree.
func (s *agentSession) sendMapped(ctx context.Context, t *mapTrie, path string) error {
	names := make([]string, 0, len(t.children))
	for name := range t.children {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c := t.children[name]
		var n *proto.Node
		if c.to != "" {
			src := s.sources[c.to]
			var ok bool
			n, ok = fromResticNode(src)
			if !ok {
				return fmt.Errorf("snapshot %s: %s is not a directory", s.sn.ID.Str(), c.to)
			}
			n.Name = []byte(name)
		} else {
			n = &proto.Node{Name: []byte(name), Type: proto.NodeDir, Mode: uint32(os.ModeDir | 0o755), MTime: unixNano(s.sn.Time)}
		}
		b, err := proto.Encode(n)
		if err != nil {
			return fmt.Errorf("%s%s: %w", path, name, err)
		}
		if err := s.conn.W.Write(proto.TNode, b); err != nil {
			return err
		}
		s.end.Dirs++
		if c.to != "" {
			err = s.sendDir(ctx, *s.sources[c.to].Subtree, path+name+"/")
		} else {
			err = s.sendMapped(ctx, c, path+name+"/")
		}
		if err != nil {
			return err
		}
		if err := s.conn.W.Write(proto.TDirEnd); err != nil {
			return err
		}
	}
	return nil
}

// fromResticNode converts a snapshot node for the wire. Irregular nodes
// and nodes whose backup failed are not sent.
func fromResticNode(dn *data.Node) (*proto.Node, bool) {
	switch dn.Type {
	case data.NodeTypeFile, data.NodeTypeDir, data.NodeTypeSymlink, data.NodeTypeDev,
		data.NodeTypeCharDev, data.NodeTypeFifo, data.NodeTypeSocket:
	default:
		return nil, false
	}
	n := &proto.Node{
		Name:     []byte(dn.Name),
		Type:     string(dn.Type),
		Mode:     uint32(dn.Mode),
		UID:      dn.UID,
		GID:      dn.GID,
		User:     dn.User,
		Group:    dn.Group,
		MTime:    unixNano(dn.ModTime),
		ATime:    unixNano(dn.AccessTime),
		CTime:    unixNano(dn.ChangeTime),
		Inode:    dn.Inode,
		DeviceID: dn.DeviceID,
		Links:    dn.Links,
		Device:   dn.Device,
	}
	if dn.Type == data.NodeTypeSymlink {
		n.LinkTarget = []byte(dn.LinkTarget)
		if len(dn.LinkTargetRaw) > 0 {
			n.LinkTarget = dn.LinkTargetRaw
		}
	}
	if dn.Type == data.NodeTypeFile {
		n.Size = dn.Size
		n.Chunks = make([]proto.ChunkRef, len(dn.Content))
		for i, id := range dn.Content {
			n.Chunks[i] = proto.ChunkRef{ID: proto.ID(id)}
		}
	}
	return n, true
}

// chunkLengths fills in each chunk's plain length from the index: restic's
// tree lists only the IDs, the agent needs the offsets.
func (s *agentSession) chunkLengths(n *proto.Node, path string) error {
	for i := range n.Chunks {
		size, ok := s.repo.LookupBlobSize(restic.DataBlob, restic.ID(n.Chunks[i].ID))
		if !ok {
			return fmt.Errorf("snapshot %s: %s%s needs chunk %s, which the repository's index lacks (run `restic check`)", s.sn.ID.Str(), path, n.Name, n.Chunks[i].ID.Short())
		}
		n.Chunks[i].Length = uint32(size)
	}
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// idQueue is an unbounded FIFO of wanted IDs, so the frame reader never
// blocks on the chunk loaders (the agent may still be sending wants while
// it waits for chunks).
type idQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	ids    []proto.ID
	closed bool
	ctx    context.Context
}

func newIDQueue(ctx context.Context) *idQueue {
	q := &idQueue{ctx: ctx}
	q.cond = sync.NewCond(&q.mu)
	context.AfterFunc(ctx, q.close)
	return q
}

func (q *idQueue) push(ids []proto.ID) {
	q.mu.Lock()
	q.ids = append(q.ids, ids...)
	q.mu.Unlock()
	q.cond.Broadcast()
}

func (q *idQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// pop returns one ID; ok is false once the queue is closed and empty.
func (q *idQueue) pop() (proto.ID, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ids) == 0 && !q.closed {
		q.cond.Wait()
	}
	if err := q.ctx.Err(); err != nil {
		return proto.ID{}, false, err
	}
	if len(q.ids) == 0 {
		return proto.ID{}, false, nil
	}
	id := q.ids[0]
	q.ids = q.ids[1:]
	return id, true, nil
}

type chunkFrame struct {
	hdr, body []byte
	plain     int
}

// sendChunks loads the wanted chunks from the repository in parallel,
// compresses them, and sends them; then the commit.
func (s *agentSession) sendChunks(ctx context.Context) error {
	workers := max(2, min(runtime.GOMAXPROCS(0), 8))
	frames := make(chan chunkFrame, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.loadChunks(ctx, frames); err != nil {
				s.fail(err)
			}
		}()
	}
	go func() { wg.Wait(); close(frames) }()

	var werr error
	for f := range frames {
		if werr != nil {
			continue // drain so the loaders finish
		}
		werr = s.conn.W.Write(proto.TChunk, f.hdr, f.body)
		if werr == nil && len(frames) == 0 {
			werr = s.conn.W.Flush()
		}
		s.res.ChunksSent++
		s.res.ChunkBytes += int64(f.plain)
		s.transferCounts()
	}
	if werr != nil {
		return werr
	}
	if err := s.err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.logf("%s: %d chunks sent (%d bytes); the agent verifies and swaps", s.target(), s.res.ChunksSent, s.res.ChunkBytes)
	// What the agent does now, until it names its steps (progress frames,
	// taken from here on).
	switch {
	case s.agentProgress.Enabled:
		s.prog.Phase("commit")
	case s.opts.DryRun:
		s.prog.Phase("verify")
	default:
		s.prog.Phase("verify+swap")
	}
	s.committed.Store(true)
	return s.conn.Send(proto.TRestoreCommit, &proto.RestoreCommit{})
}

// transferCounts reports the chunks sent of those asked for; totals once
// the agent's wants have ended.
func (s *agentSession) transferCounts() {
	if s.wantsDone.Load() {
		s.prog.Counts(s.res.ChunkBytes, s.wantBytes.Load(), s.res.ChunksSent, s.wantChunks.Load())
	} else {
		s.prog.Counts(s.res.ChunkBytes, -1, s.res.ChunksSent, -1)
	}
}

func (s *agentSession) loadChunks(ctx context.Context, out chan<- chunkFrame) error {
	br, err := newBlobReader(s.repo)
	if err != nil {
		return err
	}
	defer func() {
		br.close()
		s.mu.Lock()
		s.res.ChunksAsStored += br.storedN
		s.mu.Unlock()
	}()
	for {
		id, ok, err := s.queue.pop()
		if err != nil || !ok {
			return err
		}
		hdr, body, plain, err := br.frame(ctx, id)
		if err != nil {
			return err
		}
		select {
		case out <- chunkFrame{hdr: hdr, body: body, plain: plain}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// MarkReady writes the agent's ready marker over a restore session without
// restoring anything (TMark). snapshot and host, if set, are recorded in
// the marker.
func MarkReady(ctx context.Context, conn transport.Connecter, snapshot, host string) (*proto.RestoreResult, error) {
	sess, err := transport.Dial(ctx, conn, "restore", transport.Hello{})
	if err != nil {
		return nil, fmt.Errorf("mark ready: %w", err)
	}
	c := sess.Conn
	res, err := func() (*proto.RestoreResult, error) {
		if err := c.Send(proto.TMark, &proto.Mark{Snapshot: snapshot, Host: host}); err != nil {
			return nil, err
		}
		var r proto.RestoreResult
		if err := c.Expect(proto.TRestoreResult, &r); err != nil {
			return nil, err
		}
		return &r, nil
	}()
	_ = sess.Wire.Close()
	if err != nil {
		return nil, fmt.Errorf("mark ready: %w", sess.AgentSaid(err))
	}
	return res, nil
}
