package manifest

import (
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
)

// testPol is restic's test polynomial.
const testPol = chunker.Pol(0x3DA3358B4DC173)

// reference chunks data as restic does, with a new chunker, and hashes its
// blocks directly: what a read must return.
func reference(t testing.TB, data []byte) ([]proto.ChunkRef, []uint64) {
	t.Helper()
	ch := chunker.NewWithBoundaries(bytes.NewReader(data), testPol, chunkMin, chunkMax)
	ch.SetAverageBits(chunkBits)
	var refs []proto.ChunkRef
	for {
		c, err := ch.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, proto.ChunkRef{ID: proto.Hash(c.Data), Length: uint32(c.Length)})
	}
	var blocks []uint64
	for off := 0; off < len(data); off += proto.DeltaBlock {
		blocks = append(blocks, xxhash.Sum64(data[off:min(off+proto.DeltaBlock, len(data))]))
	}
	return refs, blocks
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestReadAllReusesChunker: one walker reads file after file with the same
// chunker and buffers, each as a new chunker would.
func TestReadAllReusesChunker(t *testing.T) {
	w := &Walker{Pol: testPol}
	for i, data := range [][]byte{randomBytes(1, 3<<20+17), make([]byte, 1<<20), nil, randomBytes(2, 5000), randomBytes(3, 2<<20)} {
		refs, blocks, err := w.readAll(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		wantRefs, wantBlocks := reference(t, data)
		if !slices.Equal(refs, wantRefs) || !slices.Equal(blocks, wantBlocks) {
			t.Errorf("file %d (%d bytes): %d chunks, %d blocks; want %d, %d", i, len(data), len(refs), len(blocks), len(wantRefs), len(wantBlocks))
		}
	}
}
