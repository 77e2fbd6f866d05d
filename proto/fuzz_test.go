package proto

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzDecode feeds arbitrary bytes to the frame reader and every message
// decoder: none may panic, allocate past the limits, or accept a chunk whose
// bytes do not hash to its ID.
func FuzzDecode(f *testing.F) {
	var seed bytes.Buffer
	w := NewWriter(&seed)
	b, _ := Encode(&Node{Name: []byte("acme.json"), Type: NodeFile, Mode: 0o600, Size: 1, Chunks: []ChunkRef{{ID: Hash([]byte("x")), Length: 1}}})
	_ = w.Write(TNode, b)
	_ = w.Write(TDirEnd)
	_ = w.Write(TWant, EncodeWant([]ID{Hash([]byte("x"))}))
	_ = w.Write(TChunk, ChunkHeader(Hash([]byte("x")), EncRaw, 1), []byte("x"))
	hb, _ := Encode(&Hello{Versions: []int{1}, ChunkerPolynomial: "3da3358b4dc173"})
	_ = w.Write(THello, hb)
	_ = w.Flush()
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 1, byte(TDone)})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxChunk*2), zstd.WithDecodeAllCapLimit(true))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in))
		for {
			typ, p, err := r.Read()
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.Is(err, ErrFrame) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			switch typ {
			case TNode:
				var n Node
				if Decode(typ, p, &n) == nil && n.Validate() == nil {
					if ValidName(n.Name) != nil {
						t.Fatal("validated node with invalid name")
					}
				}
			case TWant, TRestoreWant:
				if ids, err := DecodeWant(p); err == nil && len(ids) > MaxWantIDs {
					t.Fatal("want over limit accepted")
				}
			case TChunk:
				c, err := DecodeChunk(p)
				if err != nil {
					continue
				}
				plain, err := c.Plain(dec, nil)
				if err == nil && Hash(plain) != c.ID {
					t.Fatal("chunk accepted under a wrong ID")
				}
				if err == nil && len(plain) != int(c.Length) {
					t.Fatal("chunk length not enforced")
				}
			case TDelta:
				d, err := DecodeDelta(p)
				if err != nil {
					continue
				}
				ops, err := d.Ops(dec)
				if err != nil {
					continue
				}
				out, err := ApplyDelta(d.ID, d.Length, ops, func(ID) ([]byte, error) { return make([]byte, 64), nil })
				if err == nil && (Hash(out) != d.ID || len(out) != int(d.Length)) {
					t.Fatal("delta accepted under a wrong ID or length")
				}
			default:
				var m map[string]any
				_ = Decode(typ, p, &m)
			}
		}
	})
}
