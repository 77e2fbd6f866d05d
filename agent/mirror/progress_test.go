package mirror

import (
	"os"
	"path/filepath"
	"testing"
)

// TestProgressAndExpected: Progress counts every regular file a sync goes
// through, copied or not, with its bytes; Expected is unknown before the
// first sync, then what the last sync went through, and for a new
// process what the index recorded.
func TestProgressAndExpected(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	write(t, filepath.Join(src, "a"), "12345")
	write(t, filepath.Join(src, "sub", "b"), "123")
	if err := os.Symlink("a", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	check := func(what string, gotF, gotB, wantF, wantB int64) {
		t.Helper()
		if gotF != wantF || gotB != wantB {
			t.Errorf("%s: %d files %d bytes, want %d and %d", what, gotF, gotB, wantF, wantB)
		}
	}
	idx := filepath.Join(base, "index")
	m, err := Open(filepath.Join(base, "mirror"), idx)
	if err != nil {
		t.Fatal(err)
	}
	f, b := m.Expected()
	check("expected before any sync", f, b, -1, -1)
	sync(t, m, src)
	f, b = m.Progress()
	check("progress of the first sync", f, b, 2, 8)
	f, b = m.Expected()
	check("expected after it", f, b, 2, 8)

	write(t, filepath.Join(src, "c"), "1234567")
	sync(t, m, src) // nothing else changed: still counted
	f, b = m.Progress()
	check("progress of the second sync", f, b, 3, 15)
	m.ResetProgress()
	f, b = m.Progress()
	check("progress reset", f, b, 0, 0)

	m, err = Open(filepath.Join(base, "mirror"), idx)
	if err != nil {
		t.Fatal(err)
	}
	f, b = m.Expected()
	check("expected from the index", f, b, 3, 15)
}
