package proto

import "encoding/binary"

// SingleZstdFrame reports whether b is exactly one zstd frame (RFC 8878,
// section 3.1.1) and nothing else: no skippable frames, no second frame,
// no dictionary, no trailing bytes, and no block that is empty. A chunk
// whose compressed form passes, and is no larger than its plain bytes, can
// be stored as the blob's compressed form as it came; anything else is
// recompressed by the puller, so a peer cannot make the repository store
// padding (a 55 KB chunk in a 6.8 MiB frame).
func SingleZstdFrame(b []byte) bool {
	const magic = 0xFD2FB528
	if len(b) < 6 || binary.LittleEndian.Uint32(b) != magic {
		return false // also rejects skippable frames (0x184D2A5?)
	}
	fhd := b[4]
	if fhd&0x08 != 0 || fhd&0x03 != 0 { // reserved bit; dictionary ID present
		return false
	}
	single := fhd&0x20 != 0
	checksum := fhd&0x04 != 0
	pos := 5
	if !single {
		pos++ // window descriptor
	}
	switch fhd >> 6 { // frame content size field
	case 0:
		if single {
			pos++
		}
	case 1:
		pos += 2
	case 2:
		pos += 4
	case 3:
		pos += 8
	}
	for {
		if pos+3 > len(b) {
			return false
		}
		h := uint32(b[pos]) | uint32(b[pos+1])<<8 | uint32(b[pos+2])<<16
		pos += 3
		last := h&1 != 0
		size := int(h >> 3)
		switch (h >> 1) & 3 {
		case 0: // raw
			if size == 0 && !last {
				return false
			}
			pos += size
		case 1: // RLE: one byte repeated size times
			if size == 0 && !last {
				return false
			}
			pos++
		case 2: // compressed
			if size == 0 {
				return false
			}
			pos += size
		default:
			return false
		}
		if pos > len(b) {
			return false
		}
		if last {
			break
		}
	}
	if checksum {
		pos += 4
	}
	return pos == len(b)
}
