package manifest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
)

// resticChunks is the reference: restic's chunker over data.
func resticChunks(t testing.TB, data []byte, pol chunker.Pol) []proto.ChunkRef {
	t.Helper()
	var refs []proto.ChunkRef
	ch := chunker.New(bytes.NewReader(data), pol)
	buf := make([]byte, 0, chunker.MaxSize)
	for {
		c, err := ch.Next(buf)
		if err == io.EOF {
			return refs
		}
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, proto.ChunkRef{ID: proto.Hash(c.Data), Length: uint32(c.Length)})
	}
}

// cutChunks runs the cutter over data fed in pieces of the sizes step
// returns, with the look-behind read keeps.
func cutChunks(data []byte, pol chunker.Pol, step func() int) []proto.ChunkRef {
	c := newCutter(pol)
	for off := 0; off < len(data); {
		k := min(step(), len(data)-off)
		lb := min(off, cutLookBehind)
		c.feed(data[off-lb:off+k], lb)
		off += k
	}
	c.Close()
	return c.refs
}

func testData(r *rand.Rand) map[string][]byte {
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	pattern := bytes.Repeat(random(7), (17<<20)/7) // no cut but MaxSize, or a periodic one
	mixed := append(append(append(random(3<<20), make([]byte, 5<<20)...), random(2<<20)...), bytes.Repeat([]byte("abc"), 1<<20)...)
	cases := map[string][]byte{}
	// Random bytes, then zeros, whose fingerprint is a cut everywhere:
	// the cut must be the first zero window, wherever it falls in the
	// lanes of a round.
	for _, k := range []int{-64, 0, 100, cutLane + 7, 2*cutLane + 40000, 3*cutLane - 1, 4*cutLane + 5} {
		cases[fmt.Sprintf("zeros from MinSize%+d", k)] = append(random(chunker.MinSize+k), make([]byte, 2<<20)...)
	}
	for k, v := range map[string][]byte{
		"empty":           nil,
		"one byte":        {42},
		"under MinSize":   random(chunker.MinSize - 1),
		"exactly MinSize": random(chunker.MinSize),
		"MinSize+1":       random(chunker.MinSize + 1),
		"random 9 MiB":    random(9 << 20),
		"random 9 MiB+3":  random(9<<20 + 3),
		"zeros 9 MiB":     make([]byte, 9<<20),
		"7-byte pattern":  pattern,
		"mixed":           mixed,
	} {
		cases[k] = v
	}
	return cases
}

func TestCutterMatchesChunker(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pols := []chunker.Pol{0x3DA3358B4DC173}
	for range 1 {
		p, err := chunker.RandomPolynomial() // named in any failure
		if err != nil {
			t.Fatal(err)
		}
		pols = append(pols, p)
	}
	for name, data := range testData(r) {
		for _, pol := range pols {
			want := resticChunks(t, data, pol)
			steps := map[string]func() int{
				"whole":   func() int { return len(data) + 1 },
				"1 byte":  func() int { return 1 },
				"odd":     func() int { return 1 + r.IntN(70000) },
				"256 KiB": func() int { return 256 << 10 },
			}
			if len(data) > 4<<20 {
				// slow (under -race), and "odd" covers them
				delete(steps, "1 byte")
				delete(steps, "whole")
			}
			for sname, step := range steps {
				got := cutChunks(data, pol, step)
				if len(got) != len(want) {
					t.Fatalf("%s, pol %v, writes %s: %d chunks, restic %d", name, pol, sname, len(got), len(want))
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s, pol %v, writes %s: chunk %d is %x/%d, restic's %x/%d", name, pol, sname, i, got[i].ID[:4], got[i].Length, want[i].ID[:4], want[i].Length)
					}
				}
			}
		}
	}
}

// FuzzCutter runs at parallel_test's small chunking parameters (chunks of
// 8–64 KiB), so an input of a few hundred KiB has many cuts and each run
// is quick; TestCutterMatchesChunker covers restic's own sizes.
func FuzzCutter(f *testing.F) {
	f.Add([]byte("seed"), uint16(1), uint32(200<<10))
	f.Add(make([]byte, 100), uint16(7), uint32(100<<10))
	f.Fuzz(func(t *testing.T, seed []byte, step uint16, size uint32) {
		small(t)
		// Grow the fuzzer's bytes to chunk-sized data by repeating them
		// with a counter mixed in, so that cuts happen.
		size %= 384 << 10
		if len(seed) == 0 {
			seed = []byte{0}
		}
		data := make([]byte, size)
		for i := range data {
			data[i] = seed[i%len(seed)] ^ byte(i/len(seed)*31)
		}
		want, _ := reference(t, data)
		k := int(step) + 1
		got := cutChunks(data, testPol, func() int { return k })
		if len(got) != len(want) {
			t.Fatalf("%d chunks, restic %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("chunk %d differs", i)
			}
		}
	})
}
