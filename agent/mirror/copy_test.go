package mirror

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"golang.org/x/sys/unix"
)

func randomFile(t testing.TB, p string, size int64) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	f, err := os.Create(p)
	must(t, err)
	_, err = io.CopyN(f, rand.Reader, size)
	must(t, err)
	must(t, f.Close())
}

func pwrite(t testing.TB, p string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(b, off)
	must(t, err)
	must(t, f.Close())
}

func syncStats(t testing.TB, m *Mirror, src string) Stats {
	t.Helper()
	st, err := m.Sync(context.Background(), []string{src})
	must(t, err)
	sameTree(t, src, m)
	return st
}

func allocated(t testing.TB, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	return st.Blocks * 512
}

// TestPatchWritesOnlyChangedBlocks: a one-byte change rewrites one block
// of the mirror's copy, in place; shrinking and growing stay exact.
func TestPatchWritesOnlyChangedBlocks(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "data")
	f := filepath.Join(src, "db.sqlite")
	randomFile(t, f, 8<<20+123)
	m, err := Open(filepath.Join(root, "mirror"), filepath.Join(root, "mirror.index"))
	must(t, err)
	m.NoReflink = true // the patch path, whatever /tmp is
	syncStats(t, m, src)

	var before unix.Stat_t
	must(t, unix.Stat(m.mirrorPath(f), &before))
	pwrite(t, f, []byte{0x42}, 5<<20+7)
	st := syncStats(t, m, src)
	if st.Patched != 1 || st.BytesCopied != blockSize {
		t.Fatalf("one-byte change: patched %d, wrote %d bytes; want 1 and %d", st.Patched, st.BytesCopied, blockSize)
	}
	var after unix.Stat_t
	must(t, unix.Stat(m.mirrorPath(f), &after))
	if after.Ino != before.Ino {
		t.Fatal("the copy was replaced, not patched")
	}

	must(t, os.Truncate(f, 3<<20+17))
	if st := syncStats(t, m, src); st.BytesCopied != 0 {
		t.Fatalf("truncation wrote %d bytes", st.BytesCopied)
	}
	g, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = g.Write(bytes.Repeat([]byte("tail"), 3000))
	must(t, err)
	must(t, g.Close())
	if st := syncStats(t, m, src); st.BytesCopied > 3*blockSize+12000 {
		t.Fatalf("appending 12000 bytes wrote %d", st.BytesCopied)
	}
}

// TestSparseFilesStaySparse: holes are neither read nor written, in a new
// copy and in a patched one; a hole punched in the source is punched in
// the mirror.
func TestSparseFilesStaySparse(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "data")
	f := filepath.Join(src, "sparse.img")
	must(t, os.MkdirAll(src, 0o755))
	must(t, os.WriteFile(f, nil, 0o644))
	must(t, os.Truncate(f, 256<<20))
	pwrite(t, f, bytes.Repeat([]byte{1}, 64<<10), 0)
	pwrite(t, f, bytes.Repeat([]byte{2}, 64<<10), 128<<20)
	m, err := Open(filepath.Join(root, "mirror"), filepath.Join(root, "mirror.index"))
	must(t, err)
	m.NoReflink = true
	st := syncStats(t, m, src)
	if st.BytesCopied != 128<<10 {
		t.Fatalf("sparse copy wrote %d bytes, want its 128 KiB of data", st.BytesCopied)
	}
	if a := allocated(t, m.mirrorPath(f)); a > allocated(t, f)+64<<10 {
		t.Fatalf("mirror copy allocates %d bytes, source %d", a, allocated(t, f))
	}
	pwrite(t, f, []byte{3}, 200<<20)
	if st := syncStats(t, m, src); st.Patched != 1 || st.BytesCopied != blockSize {
		t.Fatalf("write into a hole: %+v", st)
	}
	must(t, unix.Fallocate(openRW(t, f), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 64<<10))
	syncStats(t, m, src)
	if a := allocated(t, m.mirrorPath(f)); a > allocated(t, f)+64<<10 {
		t.Fatalf("after punching the source: mirror allocates %d bytes, source %d", a, allocated(t, f))
	}
}

func openRW(t testing.TB, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	must(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// xfsDir mounts a fresh XFS file system (reflinks on, as mkfs.xfs makes it
// since xfsprogs 5.1) from an image in a temporary dir, for the duration of
// the test.
func xfsDir(t testing.TB) string {
	t.Helper()
	testenv.Require(t, "mkfs.xfs", "apt-get install -y xfsprogs")
	if os.Geteuid() != 0 {
		t.Skip("mounting a loop device needs root")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o700))
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(1<<30))
	f.Close()
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v\n%s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

// TestReflinkOnXFS: where the data and the mirror share a reflink-capable
// file system, a changed file is cloned: nothing is written.
func TestReflinkOnXFS(t *testing.T) {
	root := xfsDir(t)
	src := filepath.Join(root, "data")
	f := filepath.Join(src, "db.sqlite")
	randomFile(t, f, 32<<20)
	m, err := Open(filepath.Join(root, "mirror"), filepath.Join(root, "mirror.index"))
	must(t, err)
	if st := syncStats(t, m, src); st.Cloned != 1 || st.BytesCopied != 0 {
		t.Fatalf("first sync: %+v; want one clone, nothing written", st)
	}
	pwrite(t, f, []byte{0x42}, 17<<20)
	if st := syncStats(t, m, src); st.Cloned != 1 || st.BytesCopied != 0 {
		t.Fatalf("one-byte change: %+v; want one clone, nothing written", st)
	}
	// The source's later writes do not reach the clone.
	pwrite(t, f, []byte{0x43}, 1<<20)
	b, err := os.ReadFile(m.mirrorPath(f))
	must(t, err)
	if b[1<<20] == 0x43 || b[17<<20] != 0x42 {
		t.Fatal("the clone shares writes with its source")
	}
}
