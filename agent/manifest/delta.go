package manifest

import (
	"github.com/cespare/xxhash/v2"
	"github.com/haulproject/haul/proto"
)

// Deltas: each file's blocks are hashed while it is chunked (no second
// read). When the puller confirms a session (Promote), the versions seen in
// it become the bases. A changed chunk is then described against its
// file's base: blocks whose hash is unchanged at the same file offset are
// copied from the base's chunks, which the puller holds; the rest is sent
// literally. SQLite rewrites pages in place, so offsets are stable; a grown
// log keeps its old bytes where they were.
//
// The hash only picks candidates: the puller verifies the rebuilt chunk's
// SHA-256, and a wrong guess costs one fallback to the whole chunk. That is
// why a fast 64-bit hash (xxhash) suffices. Cost: 8 bytes per 4 KiB block,
// 2 MiB per GiB of data, kept twice (this walk and the bases).

// blockHasher hashes consecutive DeltaBlock-sized blocks of a stream.
type blockHasher struct {
	buf    [proto.DeltaBlock]byte
	n      int
	hashes []uint64
}

func (h *blockHasher) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if h.n == 0 && len(p) >= proto.DeltaBlock {
			h.hashes = append(h.hashes, xxhash.Sum64(p[:proto.DeltaBlock]))
			p = p[proto.DeltaBlock:]
			continue
		}
		k := copy(h.buf[h.n:], p)
		h.n += k
		p = p[k:]
		if h.n == proto.DeltaBlock {
			h.hashes = append(h.hashes, xxhash.Sum64(h.buf[:]))
			h.n = 0
		}
	}
	return total, nil
}

func (h *blockHasher) finish() []uint64 {
	if h.n > 0 {
		h.hashes = append(h.hashes, xxhash.Sum64(h.buf[:h.n]))
		h.n = 0
	}
	return h.hashes
}

// Promote makes the versions of the last walk the delta bases: the puller
// has confirmed that it stored every chunk of them.
func (c *Cache) Promote() error {
	if err := writeCacheFile(c.bases, c.pol, c.new, c.walk); err != nil {
		return err
	}
	c.base, c.baseWalk = c.new, c.walk
	return nil
}

// Bases are the file versions the puller last confirmed, read-only: what
// the chunk sender describes deltas against while the walker owns the
// Cache.
type Bases struct{ files map[string]cacheEntry }

// Bases returns the delta bases as they are now. Take them before the walk
// starts; Promote replaces the cache's bases, never changes these.
func (c *Cache) Bases() *Bases { return &Bases{files: c.base} }

// Delta describes the chunk plain, found at loc, as copies from its file's
// base version plus literals. It returns nil when there is no usable base
// or when nothing matches.
func (b *Bases) Delta(loc Location, plain []byte) (ops []proto.DeltaOp, literal int) {
	if loc.version == nil || loc.version.Blocks == nil {
		return nil, 0
	}
	cur := *loc.version
	base, ok := b.files[loc.Rel]
	if !ok || base.Blocks == nil {
		return nil, 0
	}
	off := loc.Offset
	end := off + int64(len(plain))
	matched := 0
	for pos := off; pos < end; {
		blk := pos / proto.DeltaBlock
		next := min((blk+1)*proto.DeltaBlock, end)
		if sameBlock(cur, base, blk) {
			ops = appendCopies(ops, base, pos, next-pos)
			matched += int(next - pos)
		} else {
			ops = appendLiteral(ops, plain[pos-off:next-off])
			literal += int(next - pos)
		}
		pos = next
	}
	if matched == 0 {
		return nil, 0
	}
	return ops, literal
}

// sameBlock reports whether block blk has the same length and hash in both
// versions.
func sameBlock(cur, base cacheEntry, blk int64) bool {
	if blk >= int64(len(cur.Blocks)) || blk >= int64(len(base.Blocks)) {
		return false
	}
	if blockLen(cur.Size, blk) != blockLen(base.Size, blk) {
		return false
	}
	return cur.Blocks[blk] == base.Blocks[blk]
}

func blockLen(size, blk int64) int64 {
	return min(size-blk*proto.DeltaBlock, proto.DeltaBlock)
}

// appendCopies maps the file range [pos, pos+n) of the base version onto
// its chunks, merging with the previous op when contiguous.
func appendCopies(ops []proto.DeltaOp, base cacheEntry, pos, n int64) []proto.DeltaOp {
	var start int64
	for _, ch := range base.Chunks {
		chEnd := start + int64(ch.Length)
		if n > 0 && pos < chEnd && pos >= start {
			k := min(chEnd-pos, n)
			o := proto.DeltaOp{Base: ch.ID, Offset: uint32(pos - start), Length: uint32(k)}
			if l := len(ops); l > 0 && !ops[l-1].Literal() && ops[l-1].Base == o.Base && ops[l-1].Offset+ops[l-1].Length == o.Offset {
				ops[l-1].Length += o.Length
			} else {
				ops = append(ops, o)
			}
			pos += k
			n -= k
		}
		start = chEnd
		if n == 0 {
			break
		}
	}
	return ops
}

func appendLiteral(ops []proto.DeltaOp, b []byte) []proto.DeltaOp {
	if l := len(ops); l > 0 && ops[l-1].Literal() {
		ops[l-1].Data = append(ops[l-1].Data, b...)
		ops[l-1].Length += uint32(len(b))
		return ops
	}
	return append(ops, proto.DeltaOp{Length: uint32(len(b)), Data: append([]byte(nil), b...)})
}
