package beneath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenBeneathRefusesSymlinks checks the restore's second line of
// defence under the stream's order check: even with a symlink planted in
// staging, nothing is opened or created through it, with openat2 or without.
func TestOpenBeneathRefusesSymlinks(t *testing.T) {
	for _, walk := range []bool{false, true} {
		if walk {
			defer WithoutOpenat2()()
		}
		refusesSymlinks(t)
	}
}

func refusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "evil")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, rel := range []string{"evil/x", "evil", "../" + filepath.Base(outside), "/etc/passwd"} {
		if f, err := Open(fd, rel, unix.O_RDONLY, Refuse); err == nil {
			unix.Close(f)
			t.Errorf("Open(%q) succeeded", rel)
		}
	}
	// Creating a file where the symlink is fails instead of writing
	// through it.
	if f, err := unix.Openat(fd, "evil", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600); err == nil {
		unix.Close(f)
		t.Error("O_EXCL|O_NOFOLLOW create over a symlink succeeded")
	}
	if err := unix.Mkdirat(fd, "evil", 0o700); !errors.Is(err, unix.EEXIST) {
		t.Errorf("mkdirat over a symlink: %v, want EEXIST", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("something was created outside: %v", ents)
	}
}
