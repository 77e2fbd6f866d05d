package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// Must fails the test on a non-nil err.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// WriteFile writes content to path with mode (exactly: the umask does not
// apply), creating the parent directories.
func WriteFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	Must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	Must(t, os.WriteFile(path, []byte(content), mode))
	Must(t, os.Chmod(path, mode))
}
