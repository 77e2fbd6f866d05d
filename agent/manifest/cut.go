package manifest

import (
	"crypto/sha256"
	"hash"
	"sync"

	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
)

// cutter finds the chunk boundaries restic's chunker finds and hashes each
// chunk as its bytes pass: no chunk is ever held. restic's Chunker.Next
// returns each chunk's bytes in one slice (up to chunker.MaxSize, 8 MiB,
// grown by append past the caller's buffer); on a large database two such
// slices were live at once while one grew, half of the agent's heap at
// its peak.
//
// The boundaries are restic's (github.com/restic/chunker v0.4.0,
// chunker.go): a chunk starting at s ends at the first e in
// [s+MinSize, s+MaxSize] where the Rabin fingerprint of the 64 bytes
// before e, modulo the repository's polynomial, has its low 20 bits
// (chunkBits) zero; at s+MaxSize if there is none; at the end of the
// stream if that comes first. restic computes that fingerprint by rolling it over each chunk
// from a reset; it depends only on the 64 bytes, so here it is rolled in
// four lanes over four stretches of candidates at once: one rolling hash
// is a chain of dependent table lookups, and four independent chains keep
// the CPU busy (~2x the rate on this machine's cores). The first match in
// lane order is the cut; a lane's work past it is discarded.
// TestCutterMatchesChunker and FuzzCutter compare every boundary with
// chunker.Next's at restic's sizes, parallel_test.go at shrunk ones.
type cutter struct {
	tab      *cutTables
	polShift uint

	start int64 // stream offset where the current chunk starts
	next  int64 // the next candidate end not yet checked
	fed   int64 // bytes of the stream hashed into sum so far

	// chunkMin, chunkMax and the mask of chunkBits, when the cutter was made
	min, max int64
	mask     uint64

	sum  hash.Hash
	refs []proto.ChunkRef
}

const (
	cutWindow = 64
	// cutLane is how many candidates each lane checks per round: long
	// enough that the 64-byte warm-up of each lane costs little, short
	// enough that little is discarded after a cut.
	cutLane = 16 << 10
)

type cutTables struct {
	out, mod [256]uint64
}

var cutTablesCache sync.Map // chunker.Pol -> *cutTables

// tablesFor computes (once per polynomial) what slides a byte out of the
// window and what reduces the fingerprint's top byte modulo pol.
func tablesFor(pol chunker.Pol) *cutTables {
	if t, ok := cutTablesCache.Load(pol); ok {
		return t.(*cutTables)
	}
	t := &cutTables{}
	k := uint(pol.Deg())
	for b := range 256 {
		// out[b]: the fingerprint of b followed by 63 zero bytes; adding
		// it cancels b leaving the window.
		h := chunker.Pol(b).Mod(pol)
		for range cutWindow - 1 {
			h = (h << 8).Mod(pol)
		}
		t.out[b] = uint64(h)
		// mod[b]: b·x^k mod pol, plus b·x^k itself to clear the top byte.
		t.mod[b] = uint64((chunker.Pol(b) << k).Mod(pol) | chunker.Pol(b)<<k)
	}
	cutTablesCache.Store(pol, t)
	return t
}

func newCutter(pol chunker.Pol) *cutter {
	return &cutter{tab: tablesFor(pol), polShift: uint(pol.Deg() - 8), sum: sha256.New(),
		min: int64(chunkMin), max: int64(chunkMax), mask: 1<<chunkBits - 1, next: int64(chunkMin)}
}

// cutLookBehind is how many bytes before the new ones feed needs.
const cutLookBehind = cutWindow

// feed takes the stream's next bytes: data[lb:] are new, data[:lb] the
// cutLookBehind bytes before them (fewer at the stream's start). The chunks
// it completes are appended to c.refs.
func (c *cutter) feed(data []byte, lb int) {
	base := c.fed - int64(lb) // stream offset of data[0]
	end := base + int64(len(data))
	for {
		// Candidate ends e with data[e-base] present (e == end is
		// checked by the next feed, or is the stream's end).
		lo, hi := max(c.next, c.start+c.min), min(c.start+c.max, end-1)
		if lo > hi {
			break
		}
		e, ok := c.scan(data, int(lo-base), int(hi-base))
		if !ok && hi == c.start+c.max {
			e, ok = int(hi-base), true
		}
		if !ok {
			c.next = hi + 1
			break
		}
		cut := base + int64(e)
		c.sum.Write(data[c.fed-base : cut-base])
		c.fed = cut
		c.emit(cut - c.start)
		c.start, c.next = cut, cut+c.min
	}
	c.sum.Write(data[c.fed-base:])
	c.fed = end
}

// Close ends the stream: what is left is its last chunk. The stream's end
// is also the one candidate feed leaves unchecked: a cut there or not, the
// chunk ends there.
func (c *cutter) Close() {
	if c.fed > c.start {
		c.emit(c.fed - c.start)
	}
}

func (c *cutter) emit(length int64) {
	var id proto.ID
	c.sum.Sum(id[:0])
	c.sum.Reset()
	c.refs = append(c.refs, proto.ChunkRef{ID: id, Length: uint32(length)})
}

// scan returns the first e in [lo, hi] (indices into data, lo >= 64)
// where the fingerprint of data[e-64:e] is a cut.
func (c *cutter) scan(data []byte, lo, hi int) (int, bool) {
	for lo <= hi {
		n := hi - lo + 1
		if n < 4*cutWindow {
			return c.scan1(data, lo, hi)
		}
		m := min(n/4, cutLane)
		if e, ok := c.scan4(data, lo, m); ok {
			return e, true
		}
		lo += 4 * m
	}
	return 0, false
}

// warm returns the fingerprint of data[e-64:e].
func (c *cutter) warm(data []byte, e int) uint64 {
	tab, shift := c.tab, c.polShift
	var d uint64
	for _, b := range data[e-cutWindow : e] {
		d = (d<<8 | uint64(b)) ^ tab.mod[uint8(d>>shift)]
	}
	return d
}

func (c *cutter) scan1(data []byte, lo, hi int) (int, bool) {
	tab, shift := c.tab, c.polShift
	d := c.warm(data, lo)
	for e := lo; ; e++ {
		if d&c.mask == 0 {
			return e, true
		}
		if e == hi {
			return 0, false
		}
		d ^= tab.out[data[e-cutWindow]]
		d = (d<<8 | uint64(data[e])) ^ tab.mod[uint8(d>>shift)]
	}
}

// scan4 checks the 4m candidates from lo in four lanes of m.
func (c *cutter) scan4(data []byte, lo, m int) (int, bool) {
	tab, shift, mask := c.tab, c.polShift, c.mask
	s0, s1, s2, s3 := lo, lo+m, lo+2*m, lo+3*m
	d0, d1, d2, d3 := c.warm(data, s0), c.warm(data, s1), c.warm(data, s2), c.warm(data, s3)
	f0, f1, f2, f3 := -1, -1, -1, -1
	// Each lane's bytes in and out, as slices the compiler can check once.
	in0, in1, in2, in3 := data[s0:s0+m], data[s1:s1+m], data[s2:s2+m], data[s3:s3+m]
	out0, out1, out2, out3 := data[s0-cutWindow:s0-cutWindow+m], data[s1-cutWindow:s1-cutWindow+m], data[s2-cutWindow:s2-cutWindow+m], data[s3-cutWindow:s3-cutWindow+m]
	for i := range m {
		if d0&mask == 0 && f0 < 0 {
			f0 = i
		}
		if d1&mask == 0 && f1 < 0 {
			f1 = i
		}
		if d2&mask == 0 && f2 < 0 {
			f2 = i
		}
		if d3&mask == 0 && f3 < 0 {
			f3 = i
		}
		d0 ^= tab.out[out0[i]]
		d1 ^= tab.out[out1[i]]
		d2 ^= tab.out[out2[i]]
		d3 ^= tab.out[out3[i]]
		d0 = (d0<<8 | uint64(in0[i])) ^ tab.mod[uint8(d0>>shift)]
		d1 = (d1<<8 | uint64(in1[i])) ^ tab.mod[uint8(d1>>shift)]
		d2 = (d2<<8 | uint64(in2[i])) ^ tab.mod[uint8(d2>>shift)]
		d3 = (d3<<8 | uint64(in3[i])) ^ tab.mod[uint8(d3>>shift)]
	}
	switch {
	case f0 >= 0:
		return s0 + f0, true
	case f1 >= 0:
		return s1 + f1, true
	case f2 >= 0:
		return s2 + f2, true
	case f3 >= 0:
		return s3 + f3, true
	}
	return 0, false
}
