package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/agent/restore"
	"github.com/haulproject/haul/proto"
	"golang.org/x/sys/unix"
)

// These tests play the puller's side of a restore session by hand, so they
// can send what a real puller never would: hostile names, unrequested or
// corrupt chunks, a disk that fills up mid-restore.

// restoreHost is an agent config with one data path, /srv/data below a
// temporary root.
type restoreHost struct {
	root, data, state string
	cfg               *Config
}

func newRestoreHost(t *testing.T, base string) *restoreHost {
	t.Helper()
	if base == "" {
		base = t.TempDir()
	}
	// The state dir is apart from root, so "nothing changed below root" is
	// not confused by the session's lock file.
	h := &restoreHost{root: base, data: filepath.Join(base, "srv", "data"), state: filepath.Join(t.TempDir(), "state")}
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`{"host":"test","data_paths":[%q],"state_dir":%q}`, h.data, h.state)), "test")
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg
	return h
}

// file is a file of the test snapshot, split into chunks of the given
// sizes (the last takes the rest).
type tfile struct {
	content []byte
	chunks  []int
}

// tnode builds a proto.Node.
func tnode(name, typ string, mode os.FileMode, mtime time.Time) *proto.Node {
	return &proto.Node{Name: []byte(name), Type: typ, Mode: uint32(mode), MTime: mtime.UnixNano(), ATime: mtime.UnixNano(), UID: 0, GID: 0}
}

func fileNode(name string, mode os.FileMode, mtime time.Time, content []byte, chunkSizes ...int) (*proto.Node, map[proto.ID][]byte) {
	n := tnode(name, proto.NodeFile, mode, mtime)
	n.Size = uint64(len(content))
	blobs := map[proto.ID][]byte{}
	rest := content
	for len(rest) > 0 {
		size := len(rest)
		if len(chunkSizes) > 0 {
			size = min(chunkSizes[0], len(rest))
			chunkSizes = chunkSizes[1:]
		}
		c := rest[:size]
		rest = rest[size:]
		id := proto.Hash(c)
		blobs[id] = c
		n.Chunks = append(n.Chunks, proto.ChunkRef{ID: id, Length: uint32(len(c))})
	}
	return n, blobs
}

// item is one frame of the tree stream: a node or, when nil, a dir end.
type item = *proto.Node

// puller is the test's side of a session.
type puller struct {
	t      *testing.T
	c      *proto.Conn
	done   chan error
	hello  proto.HelloReply
	blobs  map[proto.ID][]byte
	cancel context.CancelFunc
	in     io.Closer // the agent's stdin: closing it is the puller going away
	host   *restoreHost
}

// startRestore runs an agent session for verb restore and does hello.
func startRestore(t *testing.T, h *restoreHost, q quiesce.Quiescer) *puller {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{Config: h.cfg, AllowRestore: true, In: inR, Out: outW, Log: io.Discard, Quiescer: q}
	p := &puller{t: t, c: proto.NewConn(outR, inW), done: make(chan error, 1), blobs: map[proto.ID][]byte{}, cancel: cancel, in: inW}
	go func() {
		err := srv.Serve(ctx, VerbRestore)
		outW.CloseWithError(io.EOF)
		inR.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		inW.Close()
		outR.Close()
	})
	if err := p.c.Send(proto.THello, &proto.Hello{Versions: []int{proto.Version}, Client: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Expect(proto.THelloReply, &p.hello); err != nil {
		t.Fatal(err)
	}
	return p
}

// dataTree is the stream for data path dataPath: the directories leading
// to it from "/", the data path, children inside it, and the dir ends.
func dataTree(dataPath string, mtime time.Time, children ...item) []item {
	var out []item
	parts := strings.Split(strings.Trim(dataPath, "/"), "/")
	for i, name := range parts {
		mode := os.ModeDir | 0o755
		if i == len(parts)-1 {
			mode = os.ModeDir | 0o750
		}
		out = append(out, tnode(name, proto.NodeDir, mode, mtime))
	}
	out = append(out, children...)
	for range parts {
		out = append(out, nil)
	}
	return out
}

// send sends begin and the tree, counting as the puller does.
func (p *puller) send(begin proto.RestoreBegin, tree []item) error {
	if err := p.c.Send(proto.TRestoreBegin, &begin); err != nil {
		return err
	}
	var end proto.ManifestEnd
	for _, n := range tree {
		if n == nil {
			if err := p.c.W.Write(proto.TDirEnd); err != nil {
				return err
			}
			continue
		}
		switch n.Type {
		case proto.NodeFile:
			end.Files++
			end.Bytes += int64(n.Size)
		case proto.NodeDir:
			end.Dirs++
		}
		b, err := proto.Encode(n)
		if err != nil {
			return err
		}
		if err := p.c.W.Write(proto.TNode, b); err != nil {
			return err
		}
	}
	return p.c.Send(proto.TManifestEnd, &end)
}

// wants reads the agent's wants up to the end marker.
func (p *puller) wants() ([]proto.ID, error) {
	var ids []proto.ID
	for {
		t, b, err := p.c.R.Read()
		if err != nil {
			return nil, err
		}
		if t == proto.TError {
			return nil, proto.DecodeAs(t, b, proto.TRestoreWant, nil)
		}
		if t != proto.TRestoreWant {
			return nil, fmt.Errorf("got %s, want restore-want", t)
		}
		if len(b) == 0 {
			return ids, nil
		}
		got, err := proto.DecodeWant(b)
		if err != nil {
			return nil, err
		}
		ids = append(ids, got...)
	}
}

func (p *puller) chunk(id proto.ID, data []byte) error {
	return p.c.W.Write(proto.TChunk, proto.ChunkHeader(id, proto.EncRaw, len(data)), data)
}

// finish sends the wanted chunks, commits and returns the result.
func (p *puller) finish(ids []proto.ID) (*proto.RestoreResult, error) {
	for _, id := range ids {
		data, ok := p.blobs[id]
		if !ok {
			return nil, fmt.Errorf("agent wants unknown chunk %s", id.Short())
		}
		if err := p.chunk(id, data); err != nil {
			return nil, err
		}
	}
	if err := p.c.Send(proto.TRestoreCommit, &proto.RestoreCommit{}); err != nil {
		return nil, err
	}
	return p.result()
}

func (p *puller) result() (*proto.RestoreResult, error) {
	var r proto.RestoreResult
	err := p.c.Expect(proto.TRestoreResult, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// restore runs a whole session; on failure it returns the agent's error.
func (p *puller) restore(begin proto.RestoreBegin, tree []item) (*proto.RestoreResult, error) {
	if err := p.send(begin, tree); err != nil {
		return nil, p.agentErr(err)
	}
	ids, err := p.wants()
	if err != nil {
		return nil, p.agentErr(err)
	}
	r, err := p.finish(ids)
	if err != nil {
		return nil, p.agentErr(err)
	}
	return r, nil
}

// agentErr prefers the agent's report over the broken pipe it caused.
func (p *puller) agentErr(err error) error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return err
	}
	for {
		t, b, rerr := p.c.R.Read()
		if rerr != nil {
			break
		}
		if t == proto.TError {
			return proto.DecodeAs(t, b, proto.TRestoreResult, nil)
		}
	}
	select {
	case serr := <-p.done:
		if serr != nil {
			return serr
		}
	case <-time.After(5 * time.Second):
	}
	return err
}

func begin(paths ...string) proto.RestoreBegin {
	return proto.RestoreBegin{Snapshot: "0123456789abcdef", Host: "old", Time: time.Now(), Paths: paths}
}

// replacing is begin for a host whose unmarked data paths already hold
// data (--replace-live-data).
func replacing(paths ...string) proto.RestoreBegin {
	b := begin(paths...)
	b.ReplaceLiveData = true
	return b
}

// snapshot is a test tree with its chunks.
type snapshot struct {
	tree  []item
	blobs map[proto.ID][]byte
	mtime time.Time
}

func richSnapshot(t *testing.T, dataPath string) *snapshot {
	t.Helper()
	mt := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	s := &snapshot{blobs: map[proto.ID][]byte{}, mtime: mt}
	add := func(n *proto.Node, b map[proto.ID][]byte) *proto.Node {
		for k, v := range b {
			s.blobs[k] = v
		}
		return n
	}
	big := make([]byte, 300<<10)
	rand.Read(big)
	shared := bytes.Repeat([]byte("same chunk "), 1000)
	acme, ab := fileNode("acme.json", 0o600, mt, []byte(`{"certs":[]}`))
	db, dbb := fileNode("db.sqlite", 0o644, mt.Add(time.Second), append(append([]byte{}, big...), shared...), 100<<10, 200<<10)
	empty, eb := fileNode("empty", 0o640, mt, nil)
	dup, db2 := fileNode("dup", 0o644, mt, shared)
	link := tnode("current", proto.NodeSymlink, os.ModeSymlink|0o777, mt)
	link.LinkTarget = []byte("/etc/passwd") // absolute: stored, never followed
	fifo := tnode("fifo", proto.NodeFifo, os.ModeNamedPipe|0o620, mt)
	hard1, hb := fileNode("hard1", 0o644, mt, []byte("linked"))
	hard1.Links, hard1.Inode, hard1.DeviceID = 2, 77, 5
	hard2, _ := fileNode("hard2", 0o644, mt, []byte("linked"))
	hard2.Links, hard2.Inode, hard2.DeviceID = 2, 77, 5
	sub := tnode("sub", proto.NodeDir, os.ModeDir|os.ModeSetgid|0o750, mt.Add(-time.Hour))
	deep, deb := fileNode("deep.txt", 0o400, mt, []byte("deep"))
	if os.Geteuid() == 0 {
		deep.UID, deep.GID = 1234, 5678
	}
	s.tree = dataTree(dataPath, mt,
		add(acme, ab), link, add(db, dbb), add(dup, db2), add(empty, eb), fifo,
		add(hard1, hb), hard2,
		sub, add(deep, deb), nil,
	)
	return s
}

// checkTree compares the restored tree with the snapshot's nodes.
func checkTree(t *testing.T, dir string, s *snapshot) {
	t.Helper()
	stack := []string{"/"}
	for _, n := range s.tree {
		if n == nil {
			stack = stack[:len(stack)-1]
			continue
		}
		p := filepath.Join(stack[len(stack)-1], string(n.Name))
		if n.Type == proto.NodeDir {
			stack = append(stack, p)
		}
		if !strings.HasPrefix(p, dir) {
			continue // above the data path: not restored
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if n.Type != proto.NodeSymlink && fi.Mode() != os.FileMode(n.Mode) {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), os.FileMode(n.Mode))
		}
		if st.Mtim.Nano() != n.MTime {
			t.Errorf("%s: mtime %v, want %v", p, time.Unix(0, st.Mtim.Nano()), time.Unix(0, n.MTime))
		}
		if os.Geteuid() == 0 && (st.Uid != n.UID || st.Gid != n.GID) {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, n.UID, n.GID)
		}
		switch n.Type {
		case proto.NodeFile:
			got, err := os.ReadFile(p)
			if err != nil {
				t.Error(err)
				continue
			}
			var want []byte
			for _, c := range n.Chunks {
				want = append(want, s.blobs[c.ID]...)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: content differs (%d bytes, want %d)", p, len(got), len(want))
			}
		case proto.NodeSymlink:
			if target, _ := os.Readlink(p); target != string(n.LinkTarget) {
				t.Errorf("%s: link target %q, want %q", p, target, n.LinkTarget)
			}
		}
	}
}

func (h *restoreHost) markReady(t *testing.T) {
	t.Helper()
	if wrote, err := MarkReady(h.cfg); err != nil || !wrote {
		t.Fatalf("MarkReady: %v, %v", wrote, err)
	}
}

// listing is every path below dir with type, size, mtime and content: what
// "nothing changed" is checked against.
func listing(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		// Directory mtimes are left out: staging is created and removed
		// beside the data path, which touches its parent's mtime.
		line := fmt.Sprintf("%s %v %d", strings.TrimPrefix(p, dir), fi.Mode(), fi.Size())
		if !fi.IsDir() {
			line += fmt.Sprintf(" %d", fi.ModTime().UnixNano())
		}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x", proto.Hash(b))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestRestoreOntoFreshHost(t *testing.T) {
	h := newRestoreHost(t, "")
	s := richSnapshot(t, h.data)
	p := startRestore(t, h, nil)
	if p.hello.Ready || !p.hello.RestoreAllowed {
		t.Fatalf("hello: ready %v, restore allowed %v", p.hello.Ready, p.hello.RestoreAllowed)
	}
	p.blobs = s.blobs
	res, err := p.restore(begin(h.data), s.tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-p.done; err != nil {
		t.Fatalf("agent: %v", err)
	}
	checkTree(t, h.data, s)
	// Hard links stay hard links.
	a, _ := os.Stat(filepath.Join(h.data, "hard1"))
	b, _ := os.Stat(filepath.Join(h.data, "hard2"))
	if !os.SameFile(a, b) {
		t.Error("hard1 and hard2 are not hard-linked")
	}
	if res.Files != 7 || res.Marker != h.cfg.ReadyMarker || len(res.Kept) != 0 {
		t.Errorf("result: %+v", res)
	}
	// Every distinct chunk is received once, though "shared" is used twice.
	if res.ChunksGot != int64(len(s.blobs)) {
		t.Errorf("received %d chunks, the snapshot has %d distinct ones", res.ChunksGot, len(s.blobs))
	}
	var m ReadyMarker
	if b, err := os.ReadFile(h.cfg.ReadyMarker); err != nil || json.Unmarshal(b, &m) != nil || m.By != "restore" || m.Snapshot != "0123456789abcdef" {
		t.Errorf("ready marker: %s, %v", b, err)
	}
	if _, err := os.Lstat(h.data + restore.StagingSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging left behind: %v", err)
	}
	// The journal carried the marker until it was written, then went.
	if _, err := os.Lstat(h.cfg.restoreHost().SwapJournal); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("swap journal left behind after a complete restore: %v", err)
	}
}

func TestRestoreRefusesReadyHostUnlessAllowed(t *testing.T) {
	h := newRestoreHost(t, "")
	s := richSnapshot(t, h.data)
	if err := os.MkdirAll(h.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.data, "live"), []byte("running data"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.markReady(t)
	before := listing(t, h.root)

	p := startRestore(t, h, nil)
	if !p.hello.Ready {
		t.Fatal("hello does not report the host ready")
	}
	p.blobs = s.blobs
	_, err := p.restore(begin(h.data), s.tree)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeRefused || !strings.Contains(pe.Message, "allow_inplace_restore") {
		t.Fatalf("restore onto a ready host: %v, want a refusal naming allow_inplace_restore", err)
	}
	if after := listing(t, h.root); after != before {
		t.Errorf("a refused restore changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Allowed: the old data is kept as *.prev-*, at most keep_previous
	// copies.
	h.cfg.AllowInplaceRestore = true
	one := 1
	h.cfg.KeepPrevious = &one
	for i := range 2 {
		p := startRestore(t, h, nil)
		p.blobs = s.blobs
		res, err := p.restore(begin(h.data), s.tree)
		if err != nil {
			t.Fatalf("in-place restore %d: %v", i, err)
		}
		if len(res.Kept) != 1 || !strings.HasPrefix(res.Kept[0], h.data+restore.PrevInfix) {
			t.Errorf("restore %d kept %v", i, res.Kept)
		}
		if i == 1 && len(res.Pruned) != 1 {
			t.Errorf("second restore pruned %v, want the first copy", res.Pruned)
		}
		time.Sleep(2 * time.Millisecond) // distinct *.prev-<ms> names
	}
	checkTree(t, h.data, s)
	prevs, _ := filepath.Glob(h.data + restore.PrevInfix + "*")
	if len(prevs) != 1 {
		t.Fatalf("prev copies %v, want 1 (keep_previous 1)", prevs)
	}
	// The kept copy is the previous restore's tree, not the first live data
	// (that one was pruned).
	if _, err := os.Stat(filepath.Join(prevs[0], "acme.json")); err != nil {
		t.Errorf("kept copy: %v", err)
	}
}

func TestRestoreRefusesOtherPaths(t *testing.T) {
	h := newRestoreHost(t, "")
	p := startRestore(t, h, nil)
	_, err := p.restore(begin("/var/lib/other"), dataTree("/var/lib/other", time.Now()))
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeRefused || !strings.Contains(pe.Message, "data_paths") {
		t.Fatalf("got %v, want a refusal about data_paths", err)
	}
}

// TestRestoreRefusesHostileTrees sends streams a compromised repository
// could produce. Each must be refused, leave nothing outside the data
// root, and leave no staging copy.
func TestRestoreRefusesHostileTrees(t *testing.T) {
	mt := time.Now()
	file := func(name string) *proto.Node { n, _ := fileNode(name, 0o644, mt, nil); return n }
	dir := func(name string) *proto.Node { return tnode(name, proto.NodeDir, os.ModeDir|0o755, mt) }
	link := func(name, target string) *proto.Node {
		n := tnode(name, proto.NodeSymlink, os.ModeSymlink|0o777, mt)
		n.LinkTarget = []byte(target)
		return n
	}
	// above returns the stream's directories down to, not including, the
	// data path's own node.
	above := func(dataPath string) []item {
		t := dataTree(filepath.Dir(dataPath), mt)
		return t[:len(t)/2]
	}
	closeAll := func(dataPath string) []item {
		return make([]item, len(strings.Split(strings.Trim(filepath.Dir(dataPath), "/"), "/")))
	}
	cases := []struct {
		name string
		tree func(data, outside string) []item
	}{
		{"dot-dot", func(d, _ string) []item { return dataTree(d, mt, dir(".."), file("escaped"), nil) }},
		{"slash", func(d, o string) []item { return dataTree(d, mt, file(strings.TrimPrefix(o, "/")+"/escaped")) }},
		{"a/b", func(d, _ string) []item { return dataTree(d, mt, file("a/b")) }},
		{"nul", func(d, _ string) []item { return dataTree(d, mt, file("a\x00b")) }},
		{"symlink then dir of the same name", func(d, o string) []item {
			return dataTree(d, mt, link("evil", o), dir("evil"), file("escaped"), nil)
		}},
		{"symlink then file of the same name", func(d, o string) []item {
			return dataTree(d, mt, link("evil", o+"/escaped"), file("evil"))
		}},
		{"out of order", func(d, _ string) []item { return dataTree(d, mt, file("b"), file("a")) }},
		{"outside the data paths", func(d, _ string) []item {
			t := above(d)
			t = append(t, dir("data"), nil, dir("etc"), file("escaped"), nil)
			return append(t, closeAll(d)...)
		}},
		{"data path as a symlink", func(d, o string) []item {
			t := append(above(d), link("data", o))
			return append(t, closeAll(d)...)
		}},
		{"unbalanced", func(d, _ string) []item { t := dataTree(d, mt); return t[:len(t)-1] }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newRestoreHost(t, "")
			outside := filepath.Join(h.root, "outside")
			if err := os.MkdirAll(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			before := listing(t, h.root)
			p := startRestore(t, h, nil)
			_, err := p.restore(begin(h.data), tc.tree(h.data, outside))
			var pe *proto.Error
			if !errors.As(err, &pe) || (pe.Code != proto.CodeRefused && pe.Code != proto.CodeProtocol) {
				t.Fatalf("hostile tree: got %v, want a refusal", err)
			}
			t.Logf("refused: %s", pe.Message)
			if after := listing(t, h.root); after != before {
				t.Errorf("refused restore changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestRestoreRejectsBadChunks(t *testing.T) {
	for _, tc := range []string{"unrequested", "corrupt", "twice", "missing", "puller gone"} {
		t.Run(tc, func(t *testing.T) {
			h := newRestoreHost(t, "")
			s := richSnapshot(t, h.data)
			before := listing(t, h.root)
			p := startRestore(t, h, nil)
			if err := p.send(begin(h.data), s.tree); err != nil {
				t.Fatal(err)
			}
			ids, err := p.wants()
			if err != nil {
				t.Fatal(err)
			}
			switch tc {
			case "unrequested":
				other := []byte("not in the snapshot")
				err = p.chunk(proto.Hash(other), other)
			case "corrupt":
				err = p.chunk(ids[0], []byte("not the chunk's bytes"))
			case "twice":
				err = p.chunk(ids[0], s.blobs[ids[0]])
				if err == nil {
					err = p.chunk(ids[0], s.blobs[ids[0]])
				}
			case "missing":
				err = p.c.Send(proto.TRestoreCommit, &proto.RestoreCommit{})
			case "puller gone":
				if err = p.chunk(ids[0], s.blobs[ids[0]]); err == nil {
					err = p.c.W.Flush()
				}
				p.in.Close()
				go func() { // what the agent still says goes nowhere, as over a cut connection
					for {
						if _, _, err := p.c.R.Read(); err != nil {
							return
						}
					}
				}()
				serr := <-p.done
				if serr == nil || !errors.Is(serr, context.Canceled) {
					t.Errorf("agent after the puller went away: %v", serr)
				}
				if after := listing(t, h.root); after != before {
					t.Errorf("interrupted restore changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
				}
				return
			}
			if err == nil {
				_ = p.c.W.Flush()
				_, err = p.result()
			}
			var pe *proto.Error
			if !errors.As(p.agentErr(err), &pe) {
				t.Fatalf("got %v, want the agent's error", err)
			}
			if after := listing(t, h.root); after != before {
				t.Errorf("rejected restore changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestRestoreDryRunChangesNothing(t *testing.T) {
	h := newRestoreHost(t, "")
	s := richSnapshot(t, h.data)
	before := listing(t, h.root)
	p := startRestore(t, h, nil)
	p.blobs = s.blobs
	b := begin(h.data)
	b.DryRun = true
	res, err := p.restore(b, s.tree)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Files != 7 || res.Marker != "" {
		t.Errorf("dry run result %+v", res)
	}
	<-p.done
	if after := listing(t, h.root); after != before {
		t.Errorf("dry run changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestMarkOverTheWire(t *testing.T) {
	h := newRestoreHost(t, "")
	p := startRestore(t, h, nil)
	if err := p.c.Send(proto.TMark, &proto.Mark{Snapshot: "abc", Host: "old"}); err != nil {
		t.Fatal(err)
	}
	res, err := p.result()
	if err != nil {
		t.Fatal(err)
	}
	if res.Marker != h.cfg.ReadyMarker || !h.cfg.Ready() {
		t.Errorf("mark: %+v, ready %v", res, h.cfg.Ready())
	}
	if wrote, err := MarkReady(h.cfg); wrote || err != nil {
		t.Errorf("MarkReady on a ready host: wrote %v, %v", wrote, err)
	}
}

// recordingQuiescer notes when it quiesced and resumed.
type recordingQuiescer struct {
	mu                             sync.Mutex
	quiesced, resumed              time.Time
	planErr, quiesceErr, resumeErr error
}

func (q *recordingQuiescer) Plan(context.Context) ([]quiesce.Target, error) { return nil, q.planErr }
func (q *recordingQuiescer) Quiesce(context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.quiesced = time.Now()
	return q.quiesceErr
}
func (q *recordingQuiescer) Resume(context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.resumed = time.Now()
	return q.resumeErr
}
func (q *recordingQuiescer) Describe() string { return "recording" }

func TestRestoreQuiescesOnlyForTheSwap(t *testing.T) {
	h := newRestoreHost(t, "")
	s := richSnapshot(t, h.data)
	if err := os.MkdirAll(h.data, 0o755); err != nil {
		t.Fatal(err)
	}
	q := &recordingQuiescer{}
	p := startRestore(t, h, q)
	p.blobs = s.blobs
	if err := p.send(begin(h.data), s.tree); err != nil {
		t.Fatal(err)
	}
	ids, err := p.wants()
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	res, err := p.finish(ids)
	if err != nil {
		t.Fatal(err)
	}
	if q.quiesced.Before(sent) || q.resumed.Before(q.quiesced) || q.resumed.After(res.SwapEnded) || q.quiesced.Before(res.SwapStarted) {
		t.Errorf("quiesced %v, resumed %v; chunks sent %v, swap %v–%v", q.quiesced, q.resumed, sent, res.SwapStarted, res.SwapEnded)
	}

	// A quiesce failure leaves the live data as it was and resumes.
	q2 := &recordingQuiescer{quiesceErr: errors.New("docker is down")}
	h.cfg.AllowInplaceRestore = true
	before := listing(t, h.data)
	p = startRestore(t, h, q2)
	p.blobs = s.blobs
	_, err = p.restore(begin(h.data), s.tree)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeFreeze || !strings.Contains(pe.Message, "untouched") {
		t.Fatalf("quiesce failure: %v", err)
	}
	if q2.resumed.IsZero() {
		t.Error("targets not resumed after a failed quiesce")
	}
	if after := listing(t, h.data); after != before {
		t.Errorf("failed restore changed the data")
	}
	if _, err := os.Lstat(h.data + restore.StagingSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging left behind: %v", err)
	}
}

// mountTmpfs mounts a size-limited tmpfs at dir for the test.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

func TestRestoreDiskFull(t *testing.T) {
	big := func(name string, size int) (*proto.Node, map[proto.ID][]byte) {
		b := make([]byte, size)
		rand.Read(b)
		return fileNode(name, 0o644, time.Now(), b, 512<<10, 512<<10, 512<<10, 512<<10)
	}
	t.Run("does not fit", func(t *testing.T) {
		base := t.TempDir()
		mountTmpfs(t, base, "4m")
		h := newRestoreHost(t, base)
		os.MkdirAll(h.data, 0o755)
		os.WriteFile(filepath.Join(h.data, "live"), bytes.Repeat([]byte("x"), 1<<20), 0o644)
		before := listing(t, h.data)
		n, blobs := big("huge", 3<<20)
		p := startRestore(t, h, nil)
		p.blobs = blobs
		_, err := p.restore(replacing(h.data), dataTree(h.data, time.Now(), n))
		var pe *proto.Error
		if !errors.As(err, &pe) || pe.Code != proto.CodeNoSpace || !strings.Contains(pe.Message, "disk full on "+h.data) || !strings.Contains(pe.Message, "needs 3.0 MiB") {
			t.Fatalf("got %v, want a disk-full error naming %s and the space needed", err, h.data)
		}
		if after := listing(t, h.data); after != before {
			t.Errorf("live data changed")
		}
		if _, err := os.Lstat(h.data + restore.StagingSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging left behind: %v", err)
		}
	})
	t.Run("fills up while writing", func(t *testing.T) {
		base := t.TempDir()
		mountTmpfs(t, base, "4m")
		h := newRestoreHost(t, base)
		os.MkdirAll(h.data, 0o755)
		os.WriteFile(filepath.Join(h.data, "live"), []byte("live"), 0o644)
		before := listing(t, h.data)
		n, blobs := big("big", 2<<20)
		p := startRestore(t, h, nil)
		p.blobs = blobs
		if err := p.send(replacing(h.data), dataTree(h.data, time.Now(), n)); err != nil {
			t.Fatal(err)
		}
		ids, err := p.wants()
		if err != nil {
			t.Fatal(err)
		}
		// Something else takes the space after the agent checked it.
		filler := bytes.Repeat([]byte("f"), 3<<20)
		_ = os.WriteFile(filepath.Join(base, "filler"), filler, 0o644)
		_, err = p.finish(ids)
		var pe *proto.Error
		if !errors.As(p.agentErr(err), &pe) || pe.Code != proto.CodeNoSpace || !strings.Contains(pe.Message, "disk full on "+h.data) {
			t.Fatalf("got %v, want a disk-full error", err)
		}
		if after := listing(t, h.data); after != before {
			t.Errorf("live data changed")
		}
		if _, err := os.Lstat(h.data + restore.StagingSuffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("staging left behind: %v", err)
		}
	})
}

// TestRestoreFreshHostWithoutTargets: on a host that is not ready, the
// stack's containers may not exist yet. A quiesce plan that fails there is
// a warning, and the restore that lets the stack start goes through; on a
// ready host the same failure stops the restore.
func TestRestoreFreshHostWithoutTargets(t *testing.T) {
	h := newRestoreHost(t, "")
	s := richSnapshot(t, h.data)
	q := &recordingQuiescer{planErr: errors.New("no such container: pangolin")}
	p := startRestore(t, h, q)
	p.blobs = s.blobs
	res, err := p.restore(begin(h.data), s.tree)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) == 0 || !strings.Contains(strings.Join(res.Warnings, " "), "no such container") {
		t.Errorf("warnings %q, want the failed plan", res.Warnings)
	}
	if !q.quiesced.IsZero() {
		t.Error("quiesced after a failed plan")
	}
	checkTree(t, h.data, s)

	h.cfg.AllowInplaceRestore = true
	before := listing(t, h.data)
	p = startRestore(t, h, q)
	p.blobs = s.blobs
	_, err = p.restore(begin(h.data), s.tree)
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeFreeze {
		t.Fatalf("ready host, failed plan: %v, want a freeze error", err)
	}
	if after := listing(t, h.data); after != before {
		t.Error("failed restore changed the data")
	}
}

// liveDataPaths decides whether an unmarked host needs --replace-live-data:
// only a missing path or an empty directory counts as fresh.
func TestLiveDataPaths(t *testing.T) {
	dir := t.TempDir()
	missing := dir + "/missing"
	empty := dir + "/empty"
	full := dir + "/full"
	file := dir + "/file"
	emptyFile := dir + "/empty-file"
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{full + "/db.sqlite", file} {
		if err := os.WriteFile(f, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(emptyFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got := liveDataPaths([]string{missing, empty, full, file, emptyFile})
	want := []string{full, file, emptyFile}
	if !slices.Equal(got, want) {
		t.Errorf("live data paths %v, want %v (a file where a data directory should be is not a fresh host)", got, want)
	}
}
