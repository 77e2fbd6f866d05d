package proto

import (
	"encoding/binary"
	"fmt"
)

// Deltas (protocol version 2). For a chunk the puller lacks, the agent may
// send the chunk as a delta: byte ranges copied from chunks the puller
// already holds (blocks of the previous version of the same file) plus
// literal bytes. The puller rebuilds the chunk, checks its SHA-256 against
// the announced ID exactly as for a whole chunk, and stores an ordinary
// restic blob. A delta it cannot apply (a base it does not hold, a range out
// of bounds, bytes that do not hash to the ID) is answered with a
// want-full for that chunk; nothing is stored from it.

// DeltaVersion is the first protocol version with deltas: a peer that
// negotiated an older version never sends or expects them.
const DeltaVersion = 2

// DeltaBlock is the granularity of the agent's block hashes: SQLite's
// default page size and the file system's block size, so an updated
// database page is exactly one block.
const DeltaBlock = 4096

// Delta frame types (protocol version 2).
const (
	TDelta    Type = 14 // agent → puller: a chunk as copy and literal ops
	TWantFull Type = 15 // puller → agent: send these chunks whole
)

func init() {
	typeNames[TDelta] = "delta"
	typeNames[TWantFull] = "want-full"
}

// MaxDeltaOps bounds the ops of one delta: a chunk of MaxChunk bytes needs
// at most two ops per block.
const MaxDeltaOps = 2*MaxChunk/DeltaBlock + 8

// MaxDeltaOpsFor bounds the ops of a delta for a chunk of plainLen bytes,
// so the work of applying it is proportional to the chunk: every block the
// chunk touches is one copy or literal, split in two where the base's
// chunks end. An agent builds its deltas that way; a delta with more ops is
// not applied (the puller asks for the chunk whole).
func MaxDeltaOpsFor(plainLen uint32) int {
	blocks := (int(plainLen) + DeltaBlock - 1) / DeltaBlock
	return min(2*blocks+8, MaxDeltaOps)
}

// DeltaOp is one step of a delta: either copy Length bytes from base chunk
// Base at Offset, or (Base zero) take the literal Data.
type DeltaOp struct {
	Base   ID
	Offset uint32
	Length uint32
	Data   []byte // literal bytes; nil for a copy
}

// Literal reports whether the op carries its bytes.
func (o DeltaOp) Literal() bool { return o.Data != nil }

const (
	opCopy    byte = 'C'
	opLiteral byte = 'L'
)

// AppendDeltaOps encodes ops (before compression).
func AppendDeltaOps(b []byte, ops []DeltaOp) []byte {
	for _, o := range ops {
		if o.Literal() {
			b = append(b, opLiteral)
			b = binary.BigEndian.AppendUint32(b, uint32(len(o.Data)))
			b = append(b, o.Data...)
			continue
		}
		b = append(b, opCopy)
		b = append(b, o.Base[:]...)
		b = binary.BigEndian.AppendUint32(b, o.Offset)
		b = binary.BigEndian.AppendUint32(b, o.Length)
	}
	return b
}

// DecodeDeltaOps parses an op stream that must produce exactly plainLen
// bytes. Literal data aliases b.
func DecodeDeltaOps(b []byte, plainLen uint32) ([]DeltaOp, error) {
	var ops []DeltaOp
	var total uint64
	maxOps := MaxDeltaOpsFor(plainLen)
	for len(b) > 0 {
		if len(ops) >= maxOps {
			return nil, frameErr("delta: more than %d ops for a chunk of %d bytes", maxOps, plainLen)
		}
		switch b[0] {
		case opCopy:
			if len(b) < 1+32+8 {
				return nil, frameErr("delta: truncated copy op")
			}
			var o DeltaOp
			copy(o.Base[:], b[1:33])
			o.Offset = binary.BigEndian.Uint32(b[33:])
			o.Length = binary.BigEndian.Uint32(b[37:])
			if o.Length == 0 || o.Length > MaxChunk || uint64(o.Offset)+uint64(o.Length) > MaxChunk {
				return nil, frameErr("delta: copy of %d bytes at %d out of range", o.Length, o.Offset)
			}
			total += uint64(o.Length)
			ops = append(ops, o)
			b = b[41:]
		case opLiteral:
			if len(b) < 5 {
				return nil, frameErr("delta: truncated literal op")
			}
			n := binary.BigEndian.Uint32(b[1:])
			if n == 0 || uint64(n) > uint64(len(b)-5) {
				return nil, frameErr("delta: literal of %d bytes, %d left", n, len(b)-5)
			}
			ops = append(ops, DeltaOp{Length: n, Data: b[5 : 5+n]})
			total += uint64(n)
			b = b[5+n:]
		default:
			return nil, frameErr("delta: unknown op %#x", b[0])
		}
		if total > uint64(plainLen) {
			return nil, frameErr("delta: ops produce more than the announced %d bytes", plainLen)
		}
	}
	if total != uint64(plainLen) {
		return nil, frameErr("delta: ops produce %d bytes, announced %d", total, plainLen)
	}
	return ops, nil
}

// ApplyDelta rebuilds a chunk from ops. base returns the plain bytes of a
// chunk the receiver holds (and is willing to use as a base), or an error.
// The result is verified against id; on any failure nothing is returned.
func ApplyDelta(id ID, plainLen uint32, ops []DeltaOp, base func(ID) ([]byte, error)) ([]byte, error) {
	out := make([]byte, 0, plainLen)
	for _, o := range ops {
		if o.Literal() {
			out = append(out, o.Data...)
			continue
		}
		b, err := base(o.Base)
		if err != nil {
			return nil, fmt.Errorf("delta for %s: base %s: %w", id.Short(), o.Base.Short(), err)
		}
		if uint64(o.Offset)+uint64(o.Length) > uint64(len(b)) {
			return nil, frameErr("delta for %s: copy [%d, %d) beyond base %s of %d bytes", id.Short(), o.Offset, o.Offset+o.Length, o.Base.Short(), len(b))
		}
		out = append(out, b[o.Offset:o.Offset+o.Length]...)
	}
	if len(out) != int(plainLen) {
		return nil, frameErr("delta for %s: produced %d bytes, announced %d", id.Short(), len(out), plainLen)
	}
	if Hash(out) != id {
		return nil, fmt.Errorf("delta for %s: %w", id.Short(), ErrChunkMismatch)
	}
	return out, nil
}

// DeltaHeaderSize is the size of a delta frame's header: chunk ID, plain
// length, and the length of the ops before compression.
const DeltaHeaderSize = 32 + 4 + 4

// DeltaHeader encodes a TDelta header; zstd-compressed ops follow.
func DeltaHeader(id ID, plainLen, opsLen int) []byte {
	h := make([]byte, DeltaHeaderSize)
	copy(h, id[:])
	binary.BigEndian.PutUint32(h[32:], uint32(plainLen))
	binary.BigEndian.PutUint32(h[36:], uint32(opsLen))
	return h
}

// Delta is a decoded TDelta frame before decompression.
type Delta struct {
	ID       ID
	Length   uint32 // plain length of the chunk
	OpsLen   uint32 // length of the op stream before compression
	Compress []byte // zstd-compressed op stream
}

// DecodeDelta parses a TDelta payload's header.
func DecodeDelta(payload []byte) (Delta, error) {
	if len(payload) < DeltaHeaderSize {
		return Delta{}, frameErr("delta: %d bytes is shorter than its header", len(payload))
	}
	var d Delta
	copy(d.ID[:], payload)
	d.Length = binary.BigEndian.Uint32(payload[32:])
	d.OpsLen = binary.BigEndian.Uint32(payload[36:])
	d.Compress = payload[DeltaHeaderSize:]
	if d.Length == 0 || d.Length > MaxChunk {
		return Delta{}, frameErr("delta %s: plain length %d out of range", d.ID.Short(), d.Length)
	}
	// Ops are never much longer than the chunk: literals plus 41 bytes per
	// copy op.
	if d.OpsLen == 0 || d.OpsLen > MaxChunk+MaxDeltaOps*41 {
		return Delta{}, frameErr("delta %s: ops length %d out of range", d.ID.Short(), d.OpsLen)
	}
	return d, nil
}

// Ops decompresses and decodes the delta's op stream.
func (d Delta) Ops(dec Decompressor) ([]DeltaOp, error) {
	raw, err := dec.DecodeAll(d.Compress, make([]byte, 0, d.OpsLen))
	if err != nil {
		return nil, frameErr("delta %s: decompress: %v", d.ID.Short(), err)
	}
	if len(raw) != int(d.OpsLen) {
		return nil, frameErr("delta %s: %d op bytes, header says %d", d.ID.Short(), len(raw), d.OpsLen)
	}
	return DecodeDeltaOps(raw, d.Length)
}
