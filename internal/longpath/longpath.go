// Package longpath makes the few by-path file operations the agent needs
// work on absolute paths of any length. Linux refuses paths of PATH_MAX
// (4096) bytes or more, and the agent's mirror puts its own prefix before a
// data path's files, so a 4095-byte path on the host is longer in the
// mirror. Paths that fit go straight to the kernel; longer ones are
// resolved one component at a time by os.Root.
package longpath

import (
	"os"
	"strings"
)

// pathMax is Linux's PATH_MAX, counting the terminating NUL.
const pathMax = 4096

func fits(p string) bool { return len(p) < pathMax }

// Lstat is os.Lstat for paths of any length.
func Lstat(p string) (os.FileInfo, error) {
	if fits(p) {
		return os.Lstat(p)
	}
	root, rel, err := below(p)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Lstat(rel)
}

// Open is os.Open for paths of any length.
func Open(p string) (*os.File, error) {
	if fits(p) {
		return os.Open(p)
	}
	root, rel, err := below(p)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Open(rel)
}

// Readlink is os.Readlink for paths of any length.
func Readlink(p string) (string, error) {
	if fits(p) {
		return os.Readlink(p)
	}
	root, rel, err := below(p)
	if err != nil {
		return "", err
	}
	defer root.Close()
	return root.Readlink(rel)
}

func below(p string) (*os.Root, string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, "", &os.PathError{Op: "open", Path: p, Err: os.ErrInvalid}
	}
	root, err := os.OpenRoot("/")
	return root, strings.TrimLeft(p, "/"), err
}
