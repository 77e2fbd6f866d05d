package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// A changed file reaches the mirror the cheapest way the file systems allow:
//
//  1. A reflink (FICLONE) into a new file, renamed over the old copy: no
//     data is read or written, the copy shares the source's extents until
//     either side changes (btrfs, XFS with reflink=1, bcachefs). The first
//     refusal (another file system, or one without reflinks) turns this off
//     for that source device for the rest of the sync.
//  2. A patch in place of the previous copy: both are read, and only the
//     4 KiB blocks that differ are written. Writes, and the fsync that
//     makes them durable, scale with the change; reads still cover the
//     file. Only for a copy that no other name links to.
//  3. A new copy, renamed over the old one (or, for a file the mirror did
//     not have, written under its name).
//
// Holes stay holes in all three: the source's data is found with
// SEEK_DATA/SEEK_HOLE and only data ranges are read or written; a range
// that became a hole is punched in the patched copy.

// errShrunk stops a copy at the source's new end: a file truncated while it
// is copied (while the services run) has a ctime the index did not record,
// so the next sync copies it again.
var errShrunk = errors.New("source shrank while copied")

// blockSize is the unit a patch compares and writes.
const blockSize = 4096

// bufSize bounds the memory a copy uses, whatever the file's size.
const bufSize = 256 << 10

func (m *Mirror) copy(src int, st *unix.Stat_t, e entry, dstExists bool, dt *unix.Stat_t) (int64, error) {
	if !m.NoReflink && !m.noClone[st.Dev] {
		done, err := m.clone(src, e)
		if done || err != nil {
			return 0, err
		}
		m.noClone[st.Dev] = true
	}
	if !m.NoPatch && dstExists && dt.Nlink == 1 && st.Nlink == 1 {
		return m.patch(src, st.Size, e)
	}
	if !dstExists {
		return m.create(src, st.Size, e)
	}
	return m.fresh(src, st.Size, e)
}

// create writes a file the mirror did not have under its own name: no
// rename needed, for no older copy must stay readable meanwhile. A crash
// part way leaves the index dirty, so the next sync compares it again.
func (m *Mirror) create(src int, size int64, e entry) (int64, error) {
	fd, err := unix.Openat(e.dstDir, e.name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create mirror copy of %s: %w", strconv.Quote(e.src), err)
	}
	var n int64
	if size > 0 {
		n, err = m.copyData(src, fd, size)
	}
	if err == nil && !m.Defer {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("copy %s to mirror: %w", strconv.Quote(e.src), err)
	}
	return n, nil
}

// newTmp creates an empty file in the temporary dir.
func (m *Mirror) newTmp() (int, string, error) {
	m.tmpSeq++
	name := strconv.Itoa(m.tmpSeq)
	_ = unix.Unlinkat(m.tmpFD, name, 0)
	fd, err := unix.Openat(m.tmpFD, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, "", fmt.Errorf("create mirror temporary file: %w", err)
	}
	return fd, name, nil
}

// install makes the temporary file tmp (open as fd) the mirror's entry:
// fsynced first unless deferred, so the index never names a copy that a
// crash could lose.
func (m *Mirror) install(fd int, tmp string, e entry) error {
	var err error
	if !m.Defer {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(m.tmpFD, tmp, e.dstDir, e.name)
	}
	if err != nil {
		_ = unix.Unlinkat(m.tmpFD, tmp, 0)
		return fmt.Errorf("copy %s to mirror: %w", strconv.Quote(e.src), err)
	}
	return nil
}

// clone copies by reflink; done is false when the file systems cannot.
func (m *Mirror) clone(src int, e entry) (done bool, err error) {
	fd, tmp, err := m.newTmp()
	if err != nil {
		return false, err
	}
	if err := unix.IoctlFileClone(fd, src); err != nil {
		unix.Close(fd)
		_ = unix.Unlinkat(m.tmpFD, tmp, 0)
		switch {
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EXDEV),
			errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			return false, nil
		}
		return false, fmt.Errorf("reflink %s into mirror: %w", strconv.Quote(e.src), err)
	}
	m.stats.Cloned++
	return true, m.install(fd, tmp, e)
}

// fresh writes a new copy of src's data ranges and renames it into place.
func (m *Mirror) fresh(src int, size int64, e entry) (int64, error) {
	fd, tmp, err := m.newTmp()
	if err != nil {
		return 0, err
	}
	n, err := m.copyData(src, fd, size)
	if err != nil {
		unix.Close(fd)
		_ = unix.Unlinkat(m.tmpFD, tmp, 0)
		return n, fmt.Errorf("copy %s to mirror: %w", strconv.Quote(e.src), err)
	}
	return n, m.install(fd, tmp, e)
}

func (m *Mirror) copyData(src, dst int, size int64) (int64, error) {
	if err := unix.Ftruncate(dst, size); err != nil {
		return 0, err
	}
	var written int64
	if size == 0 {
		return 0, nil
	}
	err := dataRanges(src, size, func(off, end int64) error {
		for off < end {
			o, w := off, off
			n, err := unix.CopyFileRange(src, &o, dst, &w, int(min(end-off, 1<<30)), 0)
			if err != nil {
				// Not between these file systems: read and write.
				return m.copyRange(src, dst, off, end, &written)
			}
			if n == 0 {
				return errShrunk
			}
			off += int64(n)
			written += int64(n)
		}
		return nil
	}, nil)
	if errors.Is(err, errShrunk) {
		err = nil
	}
	return written, err
}

func (m *Mirror) buffers() {
	if m.bufA == nil {
		m.bufA = make([]byte, bufSize)
		m.bufB = make([]byte, bufSize)
	}
}

func (m *Mirror) copyRange(src, dst int, off, end int64, written *int64) error {
	m.buffers()
	for off < end {
		n, err := unix.Pread(src, m.bufA[:min(end-off, bufSize)], off)
		if err != nil {
			return err
		}
		if n == 0 {
			return errShrunk
		}
		if err := pwriteAll(dst, m.bufA[:n], off); err != nil {
			return err
		}
		off += int64(n)
		*written += int64(n)
	}
	return nil
}

// patch rewrites the blocks of the mirror's copy that differ from src.
func (m *Mirror) patch(src int, size int64, e entry) (int64, error) {
	dst, err := unix.Openat(e.dstDir, e.name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open mirror copy of %s: %w", strconv.Quote(e.src), err)
	}
	m.stats.Patched++
	n, err := m.patchData(src, dst, size)
	if err == nil && !m.Defer {
		err = unix.Fsync(dst)
	}
	if cerr := unix.Close(dst); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("update mirror copy of %s: %w", strconv.Quote(e.src), err)
	}
	return n, nil
}

func (m *Mirror) patchData(src, dst int, size int64) (int64, error) {
	m.buffers()
	var cur unix.Stat_t
	if err := unix.Fstat(dst, &cur); err != nil {
		return 0, err
	}
	if cur.Size != size {
		if err := unix.Ftruncate(dst, size); err != nil {
			return 0, err
		}
	}
	var written int64
	err := dataRanges(src, size, func(off, end int64) error {
		for off < end {
			want := min(end-off, bufSize)
			n, err := unix.Pread(src, m.bufA[:want], off)
			if err != nil {
				return err
			}
			if n == 0 {
				return errShrunk
			}
			a := m.bufA[:n]
			b := m.bufB[:n]
			k, err := unix.Pread(dst, b, off)
			if err != nil {
				return err
			}
			clear(b[k:]) // past the copy's old end
			// Write each run of differing blocks with one pwrite.
			for i := 0; i < n; {
				j := min(i+blockSize, n)
				if bytes.Equal(a[i:j], b[i:j]) {
					i = j
					continue
				}
				run := i
				for i = j; i < n; i = j {
					j = min(i+blockSize, n)
					if bytes.Equal(a[i:j], b[i:j]) {
						break
					}
				}
				if err := pwriteAll(dst, a[run:i], off+int64(run)); err != nil {
					return err
				}
				written += int64(i - run)
			}
			off += int64(n)
		}
		return nil
	}, func(off, end int64) error {
		return punch(dst, off, end)
	})
	if errors.Is(err, errShrunk) {
		err = nil
	}
	return written, err
}

// punch makes [off, end) of fd a hole, unless it holds no data already.
func punch(fd int, off, end int64) error {
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) || (err == nil && d >= end) {
		return nil
	}
	err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, end-off)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// No holes here: zeros, written only where they differ.
		return writeZeros(fd, off, end)
	}
	return err
}

func writeZeros(fd int, off, end int64) error {
	zero := make([]byte, blockSize)
	buf := make([]byte, blockSize)
	for ; off < end; off += blockSize {
		n := int(min(end-off, blockSize))
		k, err := unix.Pread(fd, buf[:n], off)
		if err != nil {
			return err
		}
		if bytes.Equal(buf[:k], zero[:k]) {
			continue
		}
		if err := pwriteAll(fd, zero[:n], off); err != nil {
			return err
		}
	}
	return nil
}

// dataRanges calls data for each range of fd below size that holds data,
// and hole (when not nil) for each range between them. A file system
// without SEEK_DATA reports the whole file as data.
func dataRanges(fd int, size int64, data, hole func(off, end int64) error) error {
	var off int64
	for off < size {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			d = size // only a hole is left
		case errors.Is(err, unix.EINVAL):
			return data(off, size)
		case err != nil:
			return err
		}
		d = min(d, size)
		if d > off && hole != nil {
			if err := hole(off, d); err != nil {
				return err
			}
		}
		if d >= size {
			return nil
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		h = min(h, size)
		if err := data(d, h); err != nil {
			return err
		}
		off = h
	}
	return nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			return err
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}
