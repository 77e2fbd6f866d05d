package mirror

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// swapperEnv makes the test binary a hostile container instead (see
// TestMain): it swaps the files and directories it is told about with
// symlinks to root-only files outside the data path, as fast as it can.
const swapperEnv = "HAUL_TEST_MIRROR_SWAPPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(swapperEnv); spec != "" {
		Swap(strings.Split(spec, ","))
		return
	}
	os.Exit(m.Run())
}

// Swap exchanges each path with path+".link" (a symlink) in a loop, with
// renameat2(RENAME_EXCHANGE), so that at every moment one of the two names
// is the real entry and the other the symlink, and the walk meets them
// changing between any two system calls.
func Swap(paths []string) {
	for {
		for _, p := range paths {
			_ = unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, p+".link", unix.RENAME_EXCHANGE)
		}
	}
}

// StartSwapper runs Swap in a child process (the test binary), killed when
// the test ends.
func StartSwapper(t testing.TB, paths ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), swapperEnv+"="+strings.Join(paths, ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

// hostileTree makes a data path holding a file and a directory that a
// swapper exchanges with symlinks to a root-only file and directory beside
// it, outside the data path. It returns the data path, the paths to swap
// and the secret every file outside the data path holds.
func hostileTree(t testing.TB, root string) (src string, swap []string, secret []byte) {
	t.Helper()
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	secret = []byte("SECRET-" + hex.EncodeToString(b))
	outside := filepath.Join(root, "host-only")
	must(t, os.MkdirAll(filepath.Join(outside, "dir"), 0o700))
	must(t, os.WriteFile(filepath.Join(outside, "shadow"), secret, 0o600))
	must(t, os.WriteFile(filepath.Join(outside, "dir", "key"), secret, 0o600))

	src = filepath.Join(root, "data")
	write(t, filepath.Join(src, "config.yml"), "server: {}\n")
	write(t, filepath.Join(src, "db", "db.sqlite"), strings.Repeat("page", 4096))
	write(t, filepath.Join(src, "keys", "wg.key"), "wireguard key\n")
	must(t, os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(src, "config.yml.link")))
	must(t, os.Symlink(filepath.Join(outside, "dir"), filepath.Join(src, "keys.link")))
	return src, []string{filepath.Join(src, "config.yml"), filepath.Join(src, "keys")}, secret
}

// TestSyncNeverFollowsSwappedSymlinks: a container swaps a file and a
// directory of the data path for symlinks to root-only files outside it
// while the mirror syncs, hundreds of times. No sync may copy an outside
// file's content into the mirror; every race is skipped and reported.
func TestSyncNeverFollowsSwappedSymlinks(t *testing.T) {
	root := t.TempDir()
	src, swap, secret := hostileTree(t, root)
	m, err := Open(filepath.Join(root, "state", "mirror"), filepath.Join(root, "state", "mirror.index"))
	must(t, err)
	StartSwapper(t, swap...)

	runs := 500
	if testing.Short() {
		runs = 100
	}
	var skipped int64
	sawLink, sawReal := false, false
	for i := 0; i < runs; i++ {
		st, err := m.Sync(context.Background(), []string{src})
		if err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		skipped += st.Skipped
		if st.Skipped > 0 && len(st.Warnings) == 0 {
			t.Fatalf("sync %d skipped %d entries without a warning", i, st.Skipped)
		}
		mirrorHolds(t, m.mirrorPath(src), secret)
		if fi, err := os.Lstat(filepath.Join(m.mirrorPath(src), "keys")); err == nil {
			if fi.Mode()&fs.ModeSymlink != 0 {
				sawLink = true
			} else {
				sawReal = true
			}
		}
	}
	if !sawLink || !sawReal {
		t.Fatalf("the swapper did not race the syncs (mirror saw symlink %v, directory %v)", sawLink, sawReal)
	}
	t.Logf("%d syncs, %d races skipped", runs, skipped)
}

// mirrorHolds fails if any regular file below dir contains secret.
func mirrorHolds(t testing.TB, dir string, secret []byte) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, secret) {
			return fmt.Errorf("mirror file %s holds a file from outside the data path", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSkippedRaceIsReported: an entry whose inode changes between lstat and
// open is not copied, and the sync says which.
func TestSkippedRaceIsReported(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "data")
	write(t, filepath.Join(src, "f"), "one")
	m, err := Open(filepath.Join(root, "mirror"), filepath.Join(root, "mirror.index"))
	must(t, err)
	sync(t, m, src)
	write(t, filepath.Join(src, "f"), "two, longer")
	// Exactly the race: the lstat saw one inode, the open finds another.
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(src, "f"), &st))
	must(t, os.Rename(filepath.Join(src, "f"), filepath.Join(src, "g")))
	write(t, filepath.Join(src, "f"), "attacker's")
	sfd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(sfd)
	dfd, err := unix.Open(m.mirrorPath(src), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(dfd)
	must(t, m.openTmp())
	defer m.root.Close()
	defer unix.Close(m.tmpFD)
	m.stats = Stats{}
	m.next, m.links = map[string]fileState{}, map[[2]uint64]string{}
	var dt unix.Stat_t
	must(t, unix.Fstatat(dfd, "f", &dt, unix.AT_SYMLINK_NOFOLLOW))
	e := entry{srcDir: sfd, dstDir: dfd, name: "f", src: filepath.Join(src, "f"), rel: "f"}
	must(t, m.syncFile(e, &st, true, &dt))
	if m.stats.Skipped != 1 || len(m.stats.Warnings) != 1 || !strings.Contains(m.stats.Warnings[0], `data/f"`) {
		t.Fatalf("race not reported: %+v", m.stats)
	}
	if b, _ := os.ReadFile(filepath.Join(m.mirrorPath(src), "f")); string(b) != "one" {
		t.Fatalf("mirror copy changed to %q; want the previous copy kept", b)
	}
	if _, ok := m.next[e.src]; ok {
		t.Fatal("a skipped file was recorded as synced: the next sync would not retry it")
	}
}

// longTree makes, below dir, a file with a 255-byte name, a file whose
// absolute path is 4095 bytes (PATH_MAX less its NUL), and a directory of
// n entries. It returns the long path.
func longTree(t testing.TB, dir string, n int) string {
	t.Helper()
	write(t, filepath.Join(dir, strings.Repeat("n", 255)), "a name of NAME_MAX bytes")
	p := filepath.Join(dir, "deep")
	for len(p)+1+255 < 4095 {
		p = filepath.Join(p, strings.Repeat("d", 200))
	}
	must(t, os.MkdirAll(p, 0o755))
	p = filepath.Join(p, strings.Repeat("f", 4095-len(p)-1))
	if len(p) != 4095 {
		t.Fatalf("long path is %d bytes", len(p))
	}
	must(t, os.WriteFile(p, []byte("at the end of a 4095-byte path"), 0o640))
	wide := filepath.Join(dir, "wide")
	must(t, os.Mkdir(wide, 0o755))
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(wide, fmt.Sprintf("entry-%06d", i)))
		must(t, err)
		if i%1000 == 0 {
			_, _ = f.WriteString(fmt.Sprint(i))
		}
		f.Close()
	}
	return p
}

// TestSyncLongNamesPathsAndWideDirs: a 255-byte name, a 4095-byte path and
// a wide directory are mirrored exactly, though their mirror
// paths exceed PATH_MAX and a temporary name beside them would not fit.
func TestSyncLongNamesPathsAndWideDirs(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "data")
	n := 20_000 // test/backup mirrors 100 000, judged by restic
	if testing.Short() {
		n = 5000
	}
	long := longTree(t, src, n)
	m, err := Open(filepath.Join(root, "state", "mirror"), filepath.Join(root, "state", "mirror.index"))
	must(t, err)
	m.Defer = true // as the agent syncs
	t0 := time.Now()
	st, err := m.Sync(context.Background(), []string{src})
	must(t, err)
	t.Logf("first sync of %d entries: %v", n, time.Since(t0))
	t0 = time.Now()
	must(t, m.Commit())
	t.Logf("commit: %v", time.Since(t0))
	if st.Files != int64(n)+2 {
		t.Fatalf("synced %d files, want %d", st.Files, n+2)
	}
	t0 = time.Now()
	sameTree(t, src, m)
	t.Logf("compare: %v", time.Since(t0))
	if len(m.mirrorPath(long)) < 4096 {
		t.Fatal("the test's long path fits PATH_MAX in the mirror")
	}
	// Change the deep file and the 255-byte one: both are rewritten.
	must(t, os.WriteFile(long, []byte("changed"), 0o640))
	write(t, filepath.Join(src, strings.Repeat("n", 255)), "changed too")
	st, err = m.Sync(context.Background(), []string{src})
	must(t, err)
	if st.Copied != 2 {
		t.Fatalf("copied %d files, want 2", st.Copied)
	}
	sameTree(t, src, m)
	must(t, m.Commit())
	// Removing them removes their copies, however deep.
	must(t, os.RemoveAll(filepath.Join(src, "deep")))
	_, err = m.Sync(context.Background(), []string{src})
	must(t, err)
	sameTree(t, src, m)
}

// sameTree compares src with its mirror copy: types, modes, sizes, content,
// link targets. The mirror side is read through os.Root, as its paths may
// exceed PATH_MAX.
func sameTree(t testing.TB, src string, m *Mirror) {
	t.Helper()
	r, err := os.OpenRoot(m.Root)
	must(t, err)
	defer r.Close()
	rel := func(p string) string { return strings.TrimPrefix(p, "/") }
	seen := 0
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		seen++
		si, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mi, err := r.Lstat(rel(p))
		if err != nil {
			return fmt.Errorf("mirror lacks %s: %w", p, err)
		}
		if si.Mode() != mi.Mode() || (si.Mode().IsRegular() && si.Size() != mi.Size()) {
			return fmt.Errorf("%s: source %v %d, mirror %v %d", p, si.Mode(), si.Size(), mi.Mode(), mi.Size())
		}
		if si.Mode().IsRegular() && si.Size() > 0 {
			a, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b, err := r.ReadFile(rel(p))
			if err != nil {
				return err
			}
			if !bytes.Equal(a, b) {
				return fmt.Errorf("%s: mirror content differs", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// and nothing more in the mirror
	count := 0
	err = fs.WalkDir(r.FS(), rel(src), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		count++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != seen {
		t.Fatalf("mirror holds %d entries, source %d", count, seen)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
