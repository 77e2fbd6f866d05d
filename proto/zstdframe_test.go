package proto

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestSingleZstdFrame(t *testing.T) {
	plain := bytes.Repeat([]byte("GET /api 200\n"), 10000)
	var frames [][]byte
	for _, opts := range [][]zstd.EOption{nil, {zstd.WithEncoderCRC(false)}, {zstd.WithSingleSegment(true)}, {zstd.WithEncoderLevel(zstd.SpeedBestCompression)}} {
		enc, err := zstd.NewWriter(nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, enc.EncodeAll(plain, nil), enc.EncodeAll([]byte("x"), nil))
		enc.Close()
	}
	for i, f := range frames {
		if !SingleZstdFrame(f) {
			t.Errorf("frame %d, as klauspost/compress writes it, refused", i)
		}
	}
	f := frames[0]
	skip := make([]byte, 8+100)
	binary.LittleEndian.PutUint32(skip, 0x184D2A50)
	binary.LittleEndian.PutUint32(skip[4:], 100)
	for name, bad := range map[string][]byte{
		"skippable after":  append(append([]byte(nil), f...), skip...),
		"skippable before": append(append([]byte(nil), skip...), f...),
		"two frames":       append(append([]byte(nil), f...), f...),
		"trailing byte":    append(append([]byte(nil), f...), 0),
		"truncated":        f[:len(f)-1],
		"empty":            nil,
	} {
		if SingleZstdFrame(bad) {
			t.Errorf("%s: accepted", name)
		}
	}
}
