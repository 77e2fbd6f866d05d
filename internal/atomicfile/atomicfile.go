// Package atomicfile replaces a file so that a reader, or the next boot
// after a power cut, sees either the old content or the new, never a mix or
// nothing. Both binaries use it for their state files.
package atomicfile

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data: a temporary file in the same
// directory is written, fsynced and given mode, renamed over path, and the
// directory is fsynced so the rename survives a crash. On failure path is
// unchanged and the temporary file is removed.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return Write(path, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteJSON replaces path with v as indented JSON and a final newline.
func WriteJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(path, append(b, '\n'), mode)
}

// Write replaces path with what fill writes into the temporary file, as
// WriteFile does.
func Write(path string, mode os.FileMode, fill func(*os.File) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp opens with 0600 and O_EXCL: concurrent writers never share
	// a temporary file, and a secret is never readable by others meanwhile.
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes the renames and creations in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems cannot fsync a directory; the rename is done.
	if errors.Is(err, os.ErrInvalid) {
		return nil
	}
	return err
}
