package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/klauspost/compress/zstd"
)

// These tests play a hostile puller in a backup session: one that asks
// for a second freeze, or floods the agent's want queue.

// testPol is a valid chunker polynomial (restic's test suite uses it).
const testPol = 0x3DA3358B4DC173

func startBackup(t *testing.T) (*puller, *fakeQuiescer) {
	t.Helper()
	h := newRestoreHost(t, "")
	if err := os.MkdirAll(h.data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(filepath.Join(h.data, fmt.Sprintf("f%d", i)), []byte(strings.Repeat(strconv.Itoa(i), 1000+i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return startBackupOn(t, h)
}

func startBackupOn(t *testing.T, h *restoreHost) (*puller, *fakeQuiescer) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	q := &fakeQuiescer{}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{Config: h.cfg, In: inR, Out: outW, Log: io.Discard, Quiescer: q}
	p := &puller{t: t, c: proto.NewConn(outR, inW), done: make(chan error, 1), cancel: cancel, in: inW, host: h}
	go func() {
		err := srv.Serve(ctx, VerbBackup)
		outW.CloseWithError(io.EOF)
		inR.Close()
		p.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		inW.Close()
		outR.Close()
	})
	must(p.c.Send(proto.THello, &proto.Hello{Versions: []int{proto.Version}, Client: "test", ChunkerPolynomial: strconv.FormatUint(testPol, 16)}))
	must(p.c.Expect(proto.THelloReply, &p.hello))
	return p, q
}

// expectError reads frames until the agent's error and checks its text.
func (p *puller) expectError(want string) {
	p.t.Helper()
	for {
		t, payload, err := p.c.R.Read()
		if err != nil {
			p.t.Fatalf("connection ended without an error frame: %v", err)
		}
		if t != proto.TError {
			continue
		}
		var e proto.Error
		if err := proto.Decode(t, payload, &e); err != nil {
			p.t.Fatal(err)
		}
		if e.Code != proto.CodeProtocol || !strings.Contains(e.Message, want) {
			p.t.Fatalf("agent error %q (%s), want one saying %q", e.Message, e.Code, want)
		}
		if err := <-p.done; err == nil {
			p.t.Fatal("session ended without error")
		}
		return
	}
}

// TestSecondFreezeRefused: each freeze stops or pauses the services, so a
// session gets one; a second (or one after the walk began) ends it.
func TestSecondFreezeRefused(t *testing.T) {
	p, q := startBackup(t)
	h := p.host
	var fr proto.Frozen
	if err := p.c.Send(proto.TFreeze, &proto.Freeze{}); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Expect(proto.TFrozen, &fr); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Send(proto.TFreeze, &proto.Freeze{}); err != nil {
		t.Fatal(err)
	}
	p.expectError("freeze requested twice")
	if got := strings.Count(q.got(), "quiesce"); got != 1 {
		t.Fatalf("services quiesced %d times in one session (%s)", got, q.got())
	}

	// The same host, its mirror made by the first session: the walk
	// would run, the freeze must not.
	p, _ = startBackupOn(t, h)
	if err := p.c.Send(proto.TWalk, &proto.Walk{}); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Send(proto.TFreeze, &proto.Freeze{}); err != nil {
		t.Fatal(err)
	}
	p.expectError("after the walk began")
}

// walked sends freeze and walk and reads the manifest, returning its
// chunk IDs.
func (p *puller) walked() []proto.ID {
	p.t.Helper()
	var fr proto.Frozen
	if err := p.c.Send(proto.TFreeze, &proto.Freeze{}); err != nil {
		p.t.Fatal(err)
	}
	if err := p.c.Expect(proto.TFrozen, &fr); err != nil {
		p.t.Fatal(err)
	}
	if err := p.c.Send(proto.TWalk, &proto.Walk{}); err != nil {
		p.t.Fatal(err)
	}
	var ids []proto.ID
	for {
		t, payload, err := p.c.R.Read()
		if err != nil {
			p.t.Fatal(err)
		}
		switch t {
		case proto.TNode:
			var n proto.Node
			if err := proto.Decode(t, payload, &n); err != nil {
				p.t.Fatal(err)
			}
			for _, c := range n.Chunks {
				ids = append(ids, c.ID)
			}
		case proto.TManifestEnd:
			return ids
		}
	}
}

// TestWantFloodRefused: a puller may ask for each chunk reference of the
// manifest once (and once more whole); more, or an ID the manifest does
// not hold, ends the session with an error saying so, before the queue
// grows.
func TestWantFloodRefused(t *testing.T) {
	p, _ := startBackup(t)
	ids := p.walked()
	if len(ids) != 3 {
		t.Fatalf("manifest has %d chunks, want 3", len(ids))
	}
	// Legitimate: each once, and one again whole.
	if err := p.c.W.Write(proto.TWant, proto.EncodeWant(ids)); err != nil {
		t.Fatal(err)
	}
	if err := p.c.W.Write(proto.TWantFull, proto.EncodeWant(ids[:1])); err != nil {
		t.Fatal(err)
	}
	// The flood: the same chunk 4096 times.
	flood := make([]proto.ID, proto.MaxWantIDs)
	for i := range flood {
		flood[i] = ids[0]
	}
	if err := p.c.W.Write(proto.TWant, proto.EncodeWant(flood)); err != nil {
		t.Fatal(err)
	}
	if err := p.c.W.Flush(); err != nil {
		t.Fatal(err)
	}
	p.expectError("each may be asked for once")

	p, _ = startBackup(t)
	p.walked()
	if err := p.c.W.Write(proto.TWant, proto.EncodeWant([]proto.ID{proto.Hash([]byte("not in the manifest"))})); err != nil {
		t.Fatal(err)
	}
	if err := p.c.W.Flush(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatal(err)
	}
	p.expectError("not in the manifest")
}

// TestWantBeforeWalkRefused: a want or a want-full before the walk (no
// manifest to check it against) ends the session, each with its own words.
func TestWantBeforeWalkRefused(t *testing.T) {
	for typ, want := range map[proto.Type]string{proto.TWant: "want before walk", proto.TWantFull: "unexpected want-full"} {
		p, _ := startBackup(t)
		if err := p.c.W.Write(typ, proto.EncodeWant([]proto.ID{proto.Hash([]byte("x"))})); err != nil {
			t.Fatal(err)
		}
		if err := p.c.W.Flush(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			t.Fatal(err)
		}
		p.expectError(want)
	}
}

// TestSlowWireCompressesHarder: while the wire is behind (a chunk budget
// or a full frame queue waiting), the agent compresses at zstd's better
// level (fewer bytes for a slow link), and at the fastest while the wire
// keeps up.
func TestSlowWireCompressesHarder(t *testing.T) {
	// Log-like text: one chunk per file (under chunker.MinSize), which
	// the better level compresses smaller than the fastest.
	words := strings.Fields("GET POST /api/v1/resource /auth/login 200 302 404 client=10.0.0. user agent Mozilla curl pangolin traefik newt gerbil session expired refreshed")
	files := map[proto.ID][]byte{}
	r := uint32(1)
	for range 60 {
		var b strings.Builder
		for b.Len() < 64<<10 {
			r = r*1664525 + 1013904223
			fmt.Fprintf(&b, "%d %s %s %d\n", r%100000, words[r>>8%uint32(len(words))], words[r>>16%uint32(len(words))], r>>20)
		}
		files[proto.Hash([]byte(b.String()))] = []byte(b.String())
	}
	fastEnc, err := newChunkEncoder(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	betterEnc, err := newChunkEncoder(zstd.SpeedBetterCompression)
	if err != nil {
		t.Fatal(err)
	}
	fastLen, betterLen := map[proto.ID]int{}, map[proto.ID]int{}
	var slowest time.Duration // one chunk at the better level, on this machine (-race is slow)
	for id, b := range files {
		start := time.Now()
		fastLen[id], betterLen[id] = len(fastEnc.EncodeAll(b, nil)), len(betterEnc.EncodeAll(b, nil))
		slowest = max(slowest, time.Since(start))
	}
	// received counts the chunks that came at each level, and says
	// which came last.
	received := func(delay time.Duration) (fast, better int, last string) {
		h := newRestoreHost(t, "")
		if err := os.MkdirAll(h.data, 0o755); err != nil {
			t.Fatal(err)
		}
		i := 0
		for _, b := range files {
			if err := os.WriteFile(filepath.Join(h.data, fmt.Sprintf("log%02d", i)), b, 0o644); err != nil {
				t.Fatal(err)
			}
			i++
		}
		p, _ := startBackupOn(t, h)
		ids := p.walked()
		if len(ids) != len(files) {
			t.Fatalf("manifest has %d chunks, want %d", len(ids), len(files))
		}
		if err := p.c.W.Write(proto.TWant, proto.EncodeWant(ids)); err != nil {
			t.Fatal(err)
		}
		if err := p.c.W.Flush(); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(ids); {
			typ, payload, err := p.c.R.Read()
			if err != nil {
				t.Fatal(err)
			}
			if typ != proto.TChunk {
				continue
			}
			got++
			var id proto.ID
			copy(id[:], payload)
			plain := files[id]
			body := len(payload) - len(proto.ChunkHeader(id, proto.EncZstd, len(plain)))
			switch body {
			case fastLen[id]:
				fast++
				last += "f"
			case betterLen[id]:
				better++
				last += "b"
			default:
				t.Fatalf("chunk %s: %d bytes, neither level's size", id.Short(), body)
			}
			time.Sleep(delay)
		}
		return fast, better, last
	}
	// A reader that keeps up gets mostly the fastest level; a few runs of
	// behindFor chunks at the better one are the scheduler letting the
	// queue fill for a moment.
	if f, b, seq := received(0); b > len(files)/2 {
		t.Errorf("read at once: %d chunks at the fastest level, %d at the better one (%s); want most fastest", f, b, seq)
	}
	// A reader slower than compressing: once the frame queue, the writer
	// and the buffers between them are full and the agent has watched it
	// drain for a second (chunkLevel: about 25 chunks here), the rest go
	// at the better level.
	if f, b, seq := received(max(40*time.Millisecond, 5*slowest)); !strings.HasSuffix(seq, "bbbbbb") {
		t.Errorf("read slowly: %d chunks at the fastest level, %d at the better one (%s, in order); want the last six better", f, b, seq)
	}
}

// TestChunkLevelWeighsTheDrainRate: the better level only while the wire
// is behind and drains slower than half what the better level produces.
func TestChunkLevelWeighsTheDrainRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	run := func(drainPerSec int64, behind bool) (got []bool) {
		var c chunkLevel
		for i := range 12 {
			now := t0.Add(time.Duration(i) * drainSample)
			if behind {
				c.fellBehind()
			} else {
				c.keptUp()
			}
			b := c.better(now, int64(i)*drainPerSec*int64(drainSample)/int64(time.Second))
			if b {
				c.encoded(true, 1<<20, 100*time.Millisecond) // 10 MiB/s
			} else {
				c.encoded(false, 1<<20, 25*time.Millisecond) // 40 MiB/s
			}
			got = append(got, b)
		}
		return got
	}
	count := func(bs []bool) (n int) {
		for _, b := range bs {
			if b {
				n++
			}
		}
		return n
	}
	if got := run(1<<20, false); count(got) != 0 {
		t.Errorf("wire keeping up: better level %v, want never", got)
	}
	if got := run(1<<20, true); got[0] || got[1] || !got[len(got)-1] {
		t.Errorf("wire behind at 1 MiB/s, the better level making 10: %v, want not before the drain rate is known, then yes", got)
	}
	// Behind but draining at 8 MiB/s: the better level (10 MiB/s) would
	// not keep it fed; after trying it twice (8 < 40/4), stay fast.
	if got := run(8<<20, true); count(got) != 2 {
		t.Errorf("wire behind at 8 MiB/s, the better level making 10: %v, want only the two tries", got)
	}
	// Behind but draining at 12 MiB/s, over a quarter of the fastest
	// level's 40: the better level is never even tried.
	if got := run(12<<20, true); count(got) != 0 {
		t.Errorf("wire behind at 12 MiB/s, the fastest level making 40: %v, want the better level never tried", got)
	}
}
