package mirror

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/treecmp"
)

func sync(t *testing.T, m *Mirror, src string) Stats {
	t.Helper()
	st, err := m.Sync(context.Background(), []string{src})
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := treecmp.Compare(src, m.mirrorPath(src), treecmp.Options{Owner: true, DirMtime: true, Hardlinks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Fatalf("mirror differs from source:\n%s", strings.Join(diffs, "\n"))
	}
	return st
}

func write(t testing.TB, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSyncFollowsEveryKindOfChange: the mirror equals the source after
// each change, and only what changed is copied.
func TestSyncFollowsEveryKindOfChange(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "srv", "data")
	write(t, filepath.Join(src, "a.txt"), "alpha")
	write(t, filepath.Join(src, "sub", "b.txt"), "beta")
	if err := os.Symlink("a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hard")); err != nil {
		t.Fatal(err)
	}
	m, err := Open(filepath.Join(root, "state", "mirror"), filepath.Join(root, "state", "mirror.index"))
	if err != nil {
		t.Fatal(err)
	}
	if st := sync(t, m, src); st.Copied != 2 { // a.txt (hard shares it) and b.txt
		t.Fatalf("first sync copied %d files, want 2", st.Copied)
	}
	if st := sync(t, m, src); st.Copied != 0 {
		t.Fatalf("unchanged sync copied %d files", st.Copied)
	}

	// Same size, same mtime, new content: only ctime tells.
	fi, _ := os.Stat(filepath.Join(src, "sub", "b.txt"))
	write(t, filepath.Join(src, "sub", "b.txt"), "BETA")
	if err := os.Chtimes(filepath.Join(src, "sub", "b.txt"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st := sync(t, m, src); st.Copied != 1 {
		t.Fatalf("same-size same-mtime rewrite: copied %d files, want 1", st.Copied)
	}

	// A file becomes a directory, a link changes target, a file goes away,
	// a mode changes.
	if err := os.Remove(filepath.Join(src, "sub", "b.txt")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(src, "sub", "b.txt", "inner"), "now a dir")
	if err := os.Remove(filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nowhere", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "a.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "sub"), old, old); err != nil {
		t.Fatal(err)
	}
	sync(t, m, src)

	// A crash mid-sync (dirty marker left behind) makes the next sync
	// trust nothing it remembered.
	if err := os.WriteFile(m.IndexPath+".dirty", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m2, err := Open(m.Root, m.IndexPath)
	if err != nil {
		t.Fatal(err)
	}
	if st := sync(t, m2, src); st.Copied == 0 {
		t.Fatal("after a crash the mirror was trusted without copying")
	}
}

// TestSyncRemovesDroppedDataPaths: a data path removed from the config
// leaves the mirror with the next sync.
func TestSyncRemovesDroppedDataPaths(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	write(t, filepath.Join(a, "f"), "a")
	write(t, filepath.Join(b, "f"), "b")
	m, err := Open(filepath.Join(root, "state", "mirror"), filepath.Join(root, "state", "mirror.index"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Sync(context.Background(), []string{a, b}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Sync(context.Background(), []string{a}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.mirrorPath(b)); !os.IsNotExist(err) {
		t.Fatalf("dropped data path still mirrored: %v", err)
	}
	if _, err := os.Stat(filepath.Join(m.mirrorPath(a), "f")); err != nil {
		t.Fatal(err)
	}
}

// TestDeferredCommit: with Defer the index stays dirty until Commit, so a
// crash before it makes the next sync recopy; after Commit it is trusted.
func TestDeferredCommit(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "data")
	write(t, filepath.Join(src, "f"), "content")
	open := func() *Mirror {
		m, err := Open(filepath.Join(root, "mirror"), filepath.Join(root, "mirror.index"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := open()
	m.Defer = true
	sync(t, m, src)
	if _, err := os.Stat(m.IndexPath + ".dirty"); err != nil {
		t.Fatal("index not marked dirty before Commit")
	}
	// "Crash": a new process opens the mirror without Commit.
	if st := sync(t, open(), src); st.Copied != 1 {
		t.Fatalf("uncommitted mirror trusted: copied %d", st.Copied)
	}
	m = open()
	m.Defer = true
	sync(t, m, src)
	if err := m.Commit(); err != nil {
		t.Fatal(err)
	}
	if st := sync(t, open(), src); st.Copied != 0 {
		t.Fatalf("committed mirror not trusted: copied %d", st.Copied)
	}
}
