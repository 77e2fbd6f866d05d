package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	node := &Node{Name: []byte("bad\xffname"), Type: NodeFile, Mode: 0o600, Size: 3, Chunks: []ChunkRef{{ID: Hash([]byte("abc")), Length: 3}}}
	b, err := Encode(node)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(TNode, b); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(TDirEnd); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	typ, p, err := r.Read()
	if err != nil || typ != TNode {
		t.Fatalf("read: %v %v", typ, err)
	}
	var got Node
	if err := Decode(typ, p, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Name, node.Name) || got.Chunks[0].ID != node.Chunks[0].ID {
		t.Fatalf("node changed in transit: %+v", got)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("valid node rejected: %v", err)
	}
	if typ, p, err := r.Read(); err != nil || typ != TDirEnd || len(p) != 0 {
		t.Fatalf("dir-end: %v %q %v", typ, p, err)
	}
	if _, _, err := r.Read(); err != io.EOF {
		t.Fatalf("clean end: want io.EOF, got %v", err)
	}
}

func frameBytes(n uint32, rest ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	return append(b, rest...)
}

func TestBadFrames(t *testing.T) {
	cases := map[string][]byte{
		"zero length":     frameBytes(0),
		"oversize":        frameBytes(MaxFrame + 1),
		"unknown type":    frameBytes(1, 0xEE),
		"huge control":    append(frameBytes(MaxControl+2, byte(TNode)), make([]byte, MaxControl+1)...),
		"truncated frame": frameBytes(10, byte(TNode), '{'),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(in)).Read()
			if err == nil {
				t.Fatal("accepted a bad frame")
			}
			if name == "truncated frame" {
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("want ErrUnexpectedEOF, got %v", err)
				}
				return
			}
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("want ErrFrame, got %v", err)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", "/", "a\x00b", string(make([]byte, 256))} {
		if ValidName([]byte(bad)) == nil {
			t.Errorf("ValidName(%q) accepted", bad)
		}
	}
	for _, good := range []string{"a", "...", "bad\xffname", ".hidden", "acme.json"} {
		if err := ValidName([]byte(good)); err != nil {
			t.Errorf("ValidName(%q): %v", good, err)
		}
	}
}

func TestNodeValidate(t *testing.T) {
	id := Hash([]byte("x"))
	bad := []Node{
		{Name: []byte("f"), Type: NodeFile, Size: 2, Chunks: []ChunkRef{{ID: id, Length: 1}}},
		{Name: []byte("f"), Type: NodeFile, Size: 0, Chunks: []ChunkRef{{ID: id, Length: 0}}},
		{Name: []byte("d"), Type: NodeDir, Chunks: []ChunkRef{{ID: id, Length: 1}}},
		{Name: []byte("l"), Type: NodeSymlink},
		{Name: []byte("x"), Type: "whiteout"},
		{Name: []byte(".."), Type: NodeDir},
	}
	for _, n := range bad {
		if n.Validate() == nil {
			t.Errorf("accepted %+v", n)
		}
	}
}

func TestChunkVerify(t *testing.T) {
	enc, _ := zstd.NewWriter(nil)
	dec, _ := zstd.NewReader(nil, zstd.WithDecodeAllCapLimit(true))
	plain := bytes.Repeat([]byte("pangolin "), 1000)
	id := Hash(plain)
	payload := append(ChunkHeader(id, EncZstd, len(plain)), enc.EncodeAll(plain, nil)...)
	c, err := DecodeChunk(payload)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Plain(dec, nil)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("round trip: %v", err)
	}

	// The same bytes announced under another ID are rejected.
	wrong := append(ChunkHeader(Hash([]byte("other")), EncZstd, len(plain)), enc.EncodeAll(plain, nil)...)
	c, _ = DecodeChunk(wrong)
	if _, err := c.Plain(dec, nil); !errors.Is(err, ErrChunkMismatch) {
		t.Fatalf("want ErrChunkMismatch, got %v", err)
	}
	// A length that lies is rejected before a mismatch could be stored.
	short := append(ChunkHeader(id, EncZstd, len(plain)-1), enc.EncodeAll(plain, nil)...)
	c, _ = DecodeChunk(short)
	if _, err := c.Plain(dec, nil); err == nil {
		t.Fatal("accepted a chunk longer than announced")
	}
	raw := append(ChunkHeader(id, EncRaw, len(plain)+1), plain...)
	if _, err := DecodeChunk(raw); !errors.Is(err, ErrFrame) {
		t.Fatalf("raw length mismatch: %v", err)
	}
}

func TestWantLimits(t *testing.T) {
	if _, err := DecodeWant(make([]byte, 33)); err == nil {
		t.Fatal("accepted a partial ID")
	}
	if _, err := DecodeWant(make([]byte, 32*(MaxWantIDs+1))); err == nil {
		t.Fatal("accepted too many IDs")
	}
	ids := []ID{Hash([]byte("a")), Hash([]byte("b"))}
	got, err := DecodeWant(EncodeWant(ids))
	if err != nil || len(got) != 2 || got[1] != ids[1] {
		t.Fatalf("round trip: %v %v", got, err)
	}
}

func TestDeltaApply(t *testing.T) {
	base := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
	bid := Hash(base)
	want := append(append([]byte("new page"), base[100:4196]...), base[:50]...)
	ops := []DeltaOp{{Length: 8, Data: []byte("new page")}, {Base: bid, Offset: 100, Length: 4096}, {Base: bid, Offset: 0, Length: 50}}
	raw := AppendDeltaOps(nil, ops)
	dec, err := DecodeDeltaOps(raw, uint32(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(id ID) ([]byte, error) {
		if id != bid {
			return nil, errors.New("unknown base")
		}
		return base, nil
	}
	got, err := ApplyDelta(Hash(want), uint32(len(want)), dec, lookup)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("apply: %v", err)
	}
	// Announced under another ID: rejected.
	if _, err := ApplyDelta(Hash([]byte("x")), uint32(len(want)), dec, lookup); !errors.Is(err, ErrChunkMismatch) {
		t.Fatalf("mismatch not detected: %v", err)
	}
	// Ops that produce more or fewer bytes than announced: malformed.
	if _, err := DecodeDeltaOps(raw, uint32(len(want)-1)); !errors.Is(err, ErrFrame) {
		t.Fatalf("overlong delta: %v", err)
	}
	if _, err := DecodeDeltaOps(raw, uint32(len(want)+1)); !errors.Is(err, ErrFrame) {
		t.Fatalf("short delta: %v", err)
	}
	// A copy beyond its base.
	far := []DeltaOp{{Base: bid, Offset: uint32(len(base) - 10), Length: 20}}
	if _, err := ApplyDelta(Hash(want), 20, far, lookup); !errors.Is(err, ErrFrame) {
		t.Fatalf("out-of-range copy: %v", err)
	}
	for _, bad := range [][]byte{{'C', 1, 2}, {'L', 0, 0, 0, 9, 'x'}, {'Z'}} {
		if _, err := DecodeDeltaOps(bad, 1); !errors.Is(err, ErrFrame) {
			t.Fatalf("malformed ops %q accepted: %v", bad, err)
		}
	}
}
