package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/backend"
	"github.com/haulproject/haul/puller/internal/restic/backend/layout"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/klauspost/compress/zstd"
)

// blobReader turns repository blobs into chunk frames. A format-2
// repository stores most blobs zstd-compressed; their decrypted bytes are
// already a zstd frame the agent can decode, so they are sent as they are:
// no decompressing and recompressing on the NAS, and the repository's
// better compression on the wire. The agent hashes every chunk it decodes,
// so a damaged blob is still caught, there.
type blobReader struct {
	r      *repo.Repo
	layout *layout.DefaultLayout
	enc    *zstd.Encoder // for blobs stored uncompressed
	buf    []byte
	// stored counts the chunks sent as the repository stores them.
	storedN int64
}

func newBlobReader(r *repo.Repo) (*blobReader, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	return &blobReader{r: r, layout: layout.NewDefaultLayout(r.Path, filepath.Join), enc: enc}, nil
}

func (b *blobReader) close() { b.enc.Close() }

// frame returns chunk id's frame header and body, in buffers of their own.
func (b *blobReader) frame(ctx context.Context, id proto.ID) (hdr, body []byte, plain int, err error) {
	if hdr, body, plain, ok := b.stored(id); ok {
		b.storedN++
		return hdr, body, plain, nil
	}
	// The general path: restic loads, decrypts, decompresses and checks.
	b.buf, err = b.r.LoadBlob(ctx, restic.DataBlob, restic.ID(id), b.buf[:0])
	if err != nil {
		return nil, nil, 0, fmt.Errorf("load chunk %s from the repository: %w (run `restic check --read-data`)", id.Short(), err)
	}
	if len(b.buf) == 0 || len(b.buf) > proto.MaxChunk {
		return nil, nil, 0, fmt.Errorf("chunk %s in the repository has %d bytes, outside a restic chunk's range", id.Short(), len(b.buf))
	}
	enc, out := proto.EncZstd, b.enc.EncodeAll(b.buf, make([]byte, 0, len(b.buf)/2+64))
	if len(out) >= len(b.buf) {
		enc, out = proto.EncRaw, append([]byte(nil), b.buf...)
	}
	return proto.ChunkHeader(id, enc, len(b.buf)), out, len(b.buf), nil
}

// stored reads a compressed blob straight from its pack file and decrypts
// it. ok is false when that is not possible (blob stored uncompressed, pack
// not readable there): the caller then loads it the general way.
func (b *blobReader) stored(id proto.ID) (hdr, body []byte, plain int, ok bool) {
	for _, pb := range b.r.LookupBlob(restic.DataBlob, restic.ID(id)) {
		if !pb.IsCompressed() || pb.UncompressedLength > proto.MaxChunk {
			continue
		}
		key := b.r.Key()
		if int(pb.Length) <= key.NonceSize()+key.Overhead() || pb.Length > proto.MaxChunk+proto.MaxChunk/64 {
			continue
		}
		f, err := os.Open(b.layout.Filename(backend.Handle{Type: restic.PackFile, Name: pb.PackID.String()}))
		if err != nil {
			continue
		}
		buf := make([]byte, pb.Length)
		_, err = f.ReadAt(buf, int64(pb.Offset))
		f.Close()
		if err != nil {
			continue
		}
		nonce, ct := buf[:key.NonceSize()], buf[key.NonceSize():]
		frame, err := key.Open(ct[:0], nonce, ct, nil)
		if err != nil {
			continue // the general path reports it
		}
		return proto.ChunkHeader(id, proto.EncZstd, int(pb.UncompressedLength)), frame, int(pb.UncompressedLength), true
	}
	return nil, nil, 0, false
}
