package backup_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/transport"
)

// An evil agent is a compromised VPS speaking haul's protocol: it follows
// the protocol as far as it likes and then does what a scenario says. The
// same scenario runs in-process, as a local process over the exec
// transport, and as the forced command of a real sshd: the test binary
// re-executes itself as `backup.test hostile-agent NAME` (see TestMain).
type evil struct {
	version int // protocol version it answers with (default 1)
	paths   []string
	// manifest writes nodes and dir-ends below /data (which is opened and
	// closed around it); nil sends an empty /data.
	manifest func(w *proto.Writer) error
	end      proto.ManifestEnd
	// onWant answers a want or want-full; nil sends nothing.
	onWant func(w *proto.Writer, t proto.Type, ids []proto.ID)
	// stall: after the manifest, send nothing and wait for the puller to
	// hang up.
	stall bool
	// errorFrame is sent instead of the manifest, when set.
	errorFrame *proto.Error
	// die: hang up instead of the manifest (its stderr is then shown).
	die    bool
	stderr string
	// features are listed in the hello-reply; progress frames are sent
	// between freeze and frozen (a phase name, or a frame's JSON).
	features []string
	progress []string
}

// evils is the scenario registry, shared by the test and its re-executed
// agents, so both sides agree on every byte.
var evils = map[string]evil{}

func init() {
	evils["empty-files"] = evil{manifest: func(w *proto.Writer) error {
		return manyFiles(w, 1001, 4)
	}}
	evils["deep"] = evil{manifest: func(w *proto.Writer) error {
		return nested(w, 60)
	}}
	evils["entries"] = evil{manifest: func(w *proto.Writer) error {
		for d := 0; d < 3; d++ {
			if err := dirNode(w, fmt.Sprintf("d%d", d)); err != nil {
				return err
			}
			if err := manyFiles(w, 400, 4); err != nil {
				return err
			}
			if err := w.Write(proto.TDirEnd); err != nil {
				return err
			}
		}
		return nil
	}}
	evils["chunk-refs"] = evil{manifest: func(w *proto.Writer) error {
		for f := 0; f < 10; f++ {
			n := proto.Node{Name: []byte(fmt.Sprintf("f%02d", f)), Type: proto.NodeFile, Mode: 0o644, Size: 200}
			for c := 0; c < 200; c++ {
				n.Chunks = append(n.Chunks, proto.ChunkRef{ID: proto.Hash([]byte(fmt.Sprint(f, c))), Length: 1})
			}
			if err := node(w, &n); err != nil {
				return err
			}
		}
		return nil
	}}
	evils["long-names"] = evil{manifest: func(w *proto.Writer) error {
		return longNames(w, 2000)
	}}
	evils["quota"] = evil{
		manifest: func(w *proto.Writer) error {
			for i := 0; i < 20; i++ {
				b := randomBytes(uint64(i), 64<<10)
				n := proto.Node{Name: []byte(fmt.Sprintf("f%02d", i)), Type: proto.NodeFile, Mode: 0o644, Size: uint64(len(b)),
					Chunks: []proto.ChunkRef{{ID: proto.Hash(b), Length: uint32(len(b))}}}
				if err := node(w, &n); err != nil {
					return err
				}
			}
			return nil
		},
		onWant: func(w *proto.Writer, _ proto.Type, ids []proto.ID) {
			for _, id := range ids {
				for i := 0; i < 20; i++ {
					if b := randomBytes(uint64(i), 64<<10); proto.Hash(b) == id {
						_ = w.Write(proto.TChunk, proto.ChunkHeader(id, proto.EncRaw, len(b)), b)
					}
				}
			}
		},
	}
	evils["stall"] = evil{
		manifest: func(w *proto.Writer) error {
			b := []byte("never sent")
			return node(w, &proto.Node{Name: []byte("f"), Type: proto.NodeFile, Mode: 0o644, Size: uint64(len(b)),
				Chunks: []proto.ChunkRef{{ID: proto.Hash(b), Length: uint32(len(b))}}})
		},
		stall: true,
	}
	evils["trickle"] = evil{manifest: func(w *proto.Writer) error {
		// Never idle, never done: one node every 50 ms.
		for i := 0; ; i++ {
			if err := node(w, &proto.Node{Name: []byte(fmt.Sprintf("f%08d", i)), Type: proto.NodeFile, Mode: 0o644}); err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
	}}
	evils["lying-counts"] = evil{end: proto.ManifestEnd{Files: 12345, Dirs: 678, Bytes: 5 << 30}}
	evils["terminal-injection"] = evil{
		errorFrame: &proto.Error{Code: "io\x1b[2J", Message: "disk on fire\x1b]52;c;cm0gLXJmIH4=\a\n\x1b[1A\x1b[2Kvps  snapshot 1234abcd  OK"},
	}
	evils["terminal-injection-stderr"] = evil{die: true, stderr: "haul-agent: \x1b[31mred\x1b[0m\rOVERWRITTEN\n"}
	evils["padded-zstd"] = evil{
		manifest: func(w *proto.Writer) error {
			b := compressible()
			return node(w, &proto.Node{Name: []byte("access.log"), Type: proto.NodeFile, Mode: 0o644, Size: uint64(len(b)),
				Chunks: []proto.ChunkRef{{ID: proto.Hash(b), Length: uint32(len(b))}}})
		},
		onWant: func(w *proto.Writer, _ proto.Type, ids []proto.ID) {
			b := compressible()
			frame := zstdAll(b)
			// A skippable frame (magic 0x184D2A50) of 4 MiB of padding:
			// decoders skip it, and a puller storing the frame as sent
			// would store it too.
			pad := make([]byte, 8+4<<20)
			binary.LittleEndian.PutUint32(pad, 0x184D2A50)
			binary.LittleEndian.PutUint32(pad[4:], 4<<20)
			frame = append(frame, pad...)
			_ = w.Write(proto.TChunk, proto.ChunkHeader(ids[0], proto.EncZstd, len(b)), frame)
		},
	}
	// The delta amplification of the audit: first the bases (8 chunks the
	// host really sends), then a chunk of 4 104 bytes sent as 4 104
	// one-byte copies rotating over the 8 bases, then (v2) a 64 KiB chunk
	// copying 4 KiB blocks from eight 3 MiB bases: within the op bound,
	// but its bases are far larger than a delta of 64 KiB needs.
	evils["delta-bases"] = evil{version: 2,
		manifest: func(w *proto.Writer) error {
			for i := 0; i < 8; i++ {
				b := deltaBase(i)
				if err := node(w, &proto.Node{Name: []byte(fmt.Sprintf("base%d", i)), Type: proto.NodeFile, Mode: 0o644, Size: uint64(len(b)),
					Chunks: []proto.ChunkRef{{ID: proto.Hash(b), Length: uint32(len(b))}}}); err != nil {
					return err
				}
			}
			return nil
		},
		onWant: func(w *proto.Writer, _ proto.Type, ids []proto.ID) {
			for _, id := range ids {
				for i := 0; i < 8; i++ {
					if b := deltaBase(i); proto.Hash(b) == id {
						_ = w.Write(proto.TChunk, proto.ChunkHeader(id, proto.EncRaw, len(b)), b)
					}
				}
			}
		},
	}
	for _, tc := range []struct {
		name string
		size int
		op   func(i int) proto.DeltaOp
	}{
		{"delta-one-byte-copies", 4104, func(i int) proto.DeltaOp {
			return proto.DeltaOp{Base: deltaBaseID(i % 8), Offset: uint32(i), Length: 1}
		}},
		{"delta-huge-bases", 64 << 10, func(i int) proto.DeltaOp {
			return proto.DeltaOp{Base: deltaBaseID(i % 8), Offset: uint32(i * 4096), Length: 4096}
		}},
	} {
		// Built on first use: the registry is filled in every process.
		build := sync.OnceValues(func() ([]proto.DeltaOp, []byte) {
			var ops []proto.DeltaOp
			var plain []byte
			for i := 0; len(plain) < tc.size; i++ {
				o := tc.op(i)
				ops = append(ops, o)
				plain = append(plain, deltaBase(i % 8)[o.Offset:o.Offset+o.Length]...)
			}
			return ops, plain
		})
		evils[tc.name] = evil{version: 2,
			manifest: func(w *proto.Writer) error {
				_, plain := build()
				return node(w, &proto.Node{Name: []byte("db.sqlite"), Type: proto.NodeFile, Mode: 0o644, Size: uint64(len(plain)),
					Chunks: []proto.ChunkRef{{ID: proto.Hash(plain), Length: uint32(len(plain))}}})
			},
			onWant: func(w *proto.Writer, t proto.Type, ids []proto.ID) {
				ops, plain := build()
				if t == proto.TWant {
					raw := proto.AppendDeltaOps(nil, ops)
					_ = w.Write(proto.TDelta, proto.DeltaHeader(ids[0], len(plain), len(raw)), zstdAll(raw))
					return
				}
				_ = w.Write(proto.TChunk, proto.ChunkHeader(ids[0], proto.EncRaw, len(plain)), plain)
			},
		}
	}
}

var (
	deltaBases   [8]func() []byte
	deltaBaseIDs [8]func() proto.ID
)

func init() {
	for i := range deltaBases {
		deltaBases[i] = sync.OnceValue(func() []byte { return randomBytes(uint64(100+i), 3<<20) })
		deltaBaseIDs[i] = sync.OnceValue(func() proto.ID { return proto.Hash(deltaBases[i]()) })
	}
}

func deltaBaseID(i int) proto.ID { return deltaBaseIDs[i]() }

func deltaBase(i int) []byte { return deltaBases[i]() }

func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

func compressible() []byte {
	return bytes.Repeat([]byte("GET /api/v1/resources 200 0.3ms\n"), 2048)
}

func node(w *proto.Writer, n *proto.Node) error {
	b, err := proto.Encode(n)
	if err != nil {
		return err
	}
	return w.Write(proto.TNode, b)
}

func dirNode(w *proto.Writer, name string) error {
	return node(w, &proto.Node{Name: []byte(name), Type: proto.NodeDir, Mode: uint32(os.ModeDir | 0o755)})
}

// manyFiles writes n empty files with names of width digits.
func manyFiles(w *proto.Writer, n, width int) error {
	for i := 0; i < n; i++ {
		if err := node(w, &proto.Node{Name: []byte(fmt.Sprintf("%0*d", width, i)), Type: proto.NodeFile, Mode: 0o644}); err != nil {
			return err
		}
	}
	return nil
}

// longNames writes n empty files with 255-byte names.
func longNames(w *proto.Writer, n int) error {
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%08d", i) + strings.Repeat("x", 247)
		if err := node(w, &proto.Node{Name: []byte(name), Type: proto.NodeFile, Mode: 0o644}); err != nil {
			return err
		}
	}
	return nil
}

// nested writes depth directories, each inside the last.
func nested(w *proto.Writer, depth int) error {
	for i := 0; i < depth; i++ {
		if err := dirNode(w, "d"); err != nil {
			return err
		}
	}
	for i := 0; i < depth; i++ {
		if err := w.Write(proto.TDirEnd); err != nil {
			return err
		}
	}
	return nil
}

// serve runs the scenario on one session's stream.
func (e evil) serve(in io.Reader, out io.Writer) error {
	version := max(e.version, 1)
	paths := e.paths
	if paths == nil {
		paths = []string{"/data"}
	}
	c := proto.NewConn(in, out)
	var h proto.Hello
	if err := c.Expect(proto.THello, &h); err != nil {
		return err
	}
	_ = c.Send(proto.THelloReply, &proto.HelloReply{Version: version, Agent: "evil-agent", Verb: "backup", DataPaths: paths, Features: e.features})
	if err := c.Expect(proto.TFreeze, nil); err != nil {
		return err
	}
	for _, p := range e.progress {
		var m any = &proto.Progress{Phase: p}
		if strings.HasPrefix(p, "{") {
			m = json.RawMessage(p) // a whole frame, counts and all
		}
		if err := c.Send(proto.TProgress, m); err != nil {
			return err
		}
	}
	_ = c.Send(proto.TFrozen, &proto.Frozen{Mode: "none"})
	if err := c.Expect(proto.TWalk, nil); err != nil {
		return err
	}
	if e.errorFrame != nil {
		return c.Send(proto.TError, e.errorFrame)
	}
	if e.die {
		return nil
	}
	// The puller's wants are read while the manifest is written: it
	// flushes them per file and must never block on them.
	wants := make(chan frame, 1<<16)
	go func() {
		defer close(wants)
		for {
			t, p, err := c.R.Read()
			if err != nil {
				return
			}
			wants <- frame{t, append([]byte(nil), p...)}
		}
	}()
	if err := dirNode(c.W, "data"); err != nil {
		return err
	}
	if e.manifest != nil {
		if err := e.manifest(c.W); err != nil {
			return err
		}
	}
	_ = c.W.Write(proto.TDirEnd)
	if err := c.Send(proto.TManifestEnd, &e.end); err != nil {
		return err
	}
	if e.stall {
		for range wants { // until the puller hangs up
		}
		return nil
	}
	for f := range wants {
		switch f.t {
		case proto.TWant, proto.TWantFull:
			if e.onWant != nil {
				ids, _ := proto.DecodeWant(f.p)
				e.onWant(c.W, f.t, ids)
				_ = c.W.Flush()
			}
		case proto.TDone:
			return c.Send(proto.TBye, &proto.Bye{})
		}
	}
	return nil
}

type frame struct {
	t proto.Type
	p []byte
}

// runEvilAgent is the re-executed test binary's main.
func runEvilAgent(name string) int {
	e, ok := evils[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no scenario %q\n", name)
		return 2
	}
	if e.stderr != "" {
		fmt.Fprint(os.Stderr, e.stderr)
	}
	if err := e.serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "evil agent: %v\n", err)
		return 1
	}
	return 0
}

// inProcess runs the scenario on pipes.
func (e evil) inProcess() transport.Connecter {
	return peer(func(ctx context.Context, in io.Reader, out io.Writer) error { return e.serve(in, out) })
}
