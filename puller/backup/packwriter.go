package backup

import (
	"bytes"
	"context"
	"fmt"

	"github.com/haulproject/haul/puller/internal/restic/backend"
	"github.com/haulproject/haul/puller/internal/restic/crypto"
	"github.com/haulproject/haul/puller/internal/restic/repository/index"
	"github.com/haulproject/haul/puller/internal/restic/repository/pack"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/klauspost/compress/zstd"
)

// packWriter stores chunks that arrive zstd-compressed as they are: the
// agent's frame becomes the blob's compressed form, encrypted and packed
// with restic's own pack and crypto code, and indexed in an index file of
// restic's format. Decompressing the frame (to check the chunk's SHA-256)
// stays; compressing it again, the puller's largest cost, goes. restic
// reads any zstd frame, so `restic check --read-data` and restores treat
// these blobs like its own.
//
// It is used from the session's reader goroutine only.
type packWriter struct {
	be       backend.Backend
	key      *crypto.Key
	packSize uint
	repoVer  uint

	buf   bytes.Buffer
	p     *pack.Packer
	idx   *index.Index
	packs int
	added map[restic.ID]bool

	bytesAdded int64
	blobs      int64
}

func newPackWriter(be backend.Backend, key *crypto.Key, packSize, repoVersion uint) *packWriter {
	return &packWriter{be: be, key: key, packSize: packSize, repoVer: repoVersion, idx: index.NewIndex(), added: map[restic.ID]bool{}}
}

// Add encrypts and packs one compressed chunk whose plain bytes have been
// verified against id.
func (w *packWriter) Add(ctx context.Context, id restic.ID, compressed []byte, plainLen int) error {
	if w.added[id] {
		return nil
	}
	if w.p == nil {
		w.buf.Reset()
		w.p = pack.NewPacker(w.key, &w.buf)
	}
	nonce := crypto.NewRandomNonce()
	ct := make([]byte, 0, crypto.CiphertextLength(len(compressed)))
	ct = append(ct, nonce...)
	ct = w.key.Seal(ct, nonce, compressed, nil)
	// What restic's extra verification checks: the ciphertext opens to the
	// bytes whose decompression was verified.
	plain, err := w.key.Open(nil, ct[:w.key.NonceSize()], ct[w.key.NonceSize():], nil)
	if err != nil || !bytes.Equal(plain, compressed) {
		return fmt.Errorf("encrypting chunk %s did not round-trip: %v", id.Str(), err)
	}
	n, err := w.p.Add(restic.DataBlob, id, ct, plainLen)
	if err != nil {
		return err
	}
	w.added[id] = true
	w.bytesAdded += int64(n)
	w.blobs++
	if w.p.Size() >= w.packSize {
		return w.flushPack(ctx)
	}
	return nil
}

func (w *packWriter) flushPack(ctx context.Context) error {
	if w.p == nil || w.p.Count() == 0 {
		return nil
	}
	if err := w.p.Finalize(); err != nil {
		return err
	}
	data := w.buf.Bytes()
	id := restic.Hash(data)
	h := backend.Handle{Type: restic.PackFile, Name: id.String()}
	if err := w.be.Save(ctx, h, backend.NewByteReader(data, w.be.Hasher())); err != nil {
		return fmt.Errorf("save pack %s: %w", id.Str(), err)
	}
	w.idx.StorePack(id, w.p.Blobs())
	w.packs++
	w.p = nil
	return nil
}

// Close writes the last pack and the index of everything written. It runs
// on failed sessions too: what was received and verified is kept.
func (w *packWriter) Close(ctx context.Context) error {
	if err := w.flushPack(ctx); err != nil {
		return err
	}
	if w.packs == 0 {
		return nil
	}
	w.idx.Finalize()
	_, err := w.idx.SaveIndex(ctx, &unpackedSaver{w: w})
	return err
}

// unpackedSaver writes an unpacked file (the index) as restic does: for
// repository version 2 compressed with a leading version byte, encrypted,
// named by the SHA-256 of the ciphertext.
type unpackedSaver struct{ w *packWriter }

func (u *unpackedSaver) Connections() uint { return u.w.be.Properties().Connections }

func (u *unpackedSaver) SaveUnpacked(ctx context.Context, t restic.FileType, buf []byte) (restic.ID, error) {
	p := buf
	if u.w.repoVer > 1 {
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			return restic.ID{}, err
		}
		p = enc.EncodeAll(buf, []byte{2})
		enc.Close()
	}
	nonce := crypto.NewRandomNonce()
	ct := make([]byte, 0, crypto.CiphertextLength(len(p)))
	ct = append(ct, nonce...)
	ct = u.w.key.Seal(ct, nonce, p, nil)
	id := restic.Hash(ct)
	h := backend.Handle{Type: t, Name: id.String()}
	if err := u.w.be.Save(ctx, h, backend.NewByteReader(ct, u.w.be.Hasher())); err != nil {
		return restic.ID{}, fmt.Errorf("save %v %s: %w", t, id.Str(), err)
	}
	return id, nil
}
