// Package treecmp compares two directory trees the way a restore is judged:
// content, type, mode, mtime, link targets and, optionally, owners.
package treecmp

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// Options chooses what is compared besides type and content.
type Options struct {
	Owner bool // compare uid and gid
	// DirMtime compares directory mtimes too (they change when entries are
	// added, so some callers skip them).
	DirMtime bool
	// Hardlinks checks that files hard-linked in a are hard-linked in b.
	Hardlinks bool
}

// Compare returns the differences between trees a and b, one line each;
// none means equal.
func Compare(a, b string, opts Options) ([]string, error) {
	var diffs []string
	la, err := list(a)
	if err != nil {
		return nil, err
	}
	lb, err := list(b)
	if err != nil {
		return nil, err
	}
	linksA := map[uint64][]string{}
	linksB := map[uint64]string{}
	for _, rel := range sortedKeys(la, lb) {
		fa, okA := la[rel]
		fb, okB := lb[rel]
		switch {
		case !okA:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", rel, b))
			continue
		case !okB:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s", rel, a))
			continue
		}
		if fa.Mode().Type() != fb.Mode().Type() {
			diffs = append(diffs, fmt.Sprintf("%s: type %v vs %v", rel, fa.Mode().Type(), fb.Mode().Type()))
			continue
		}
		if fa.Mode().Type() != os.ModeSymlink && fa.Mode() != fb.Mode() {
			diffs = append(diffs, fmt.Sprintf("%s: mode %v vs %v", rel, fa.Mode(), fb.Mode()))
		}
		sa, sb := fa.Sys().(*syscall.Stat_t), fb.Sys().(*syscall.Stat_t)
		if opts.Owner && (sa.Uid != sb.Uid || sa.Gid != sb.Gid) {
			diffs = append(diffs, fmt.Sprintf("%s: owner %d:%d vs %d:%d", rel, sa.Uid, sa.Gid, sb.Uid, sb.Gid))
		}
		if (!fa.IsDir() || opts.DirMtime) && !fa.ModTime().Equal(fb.ModTime()) {
			diffs = append(diffs, fmt.Sprintf("%s: mtime %v vs %v", rel, fa.ModTime(), fb.ModTime()))
		}
		switch {
		case fa.Mode().IsRegular():
			if fa.Size() != fb.Size() {
				diffs = append(diffs, fmt.Sprintf("%s: size %d vs %d", rel, fa.Size(), fb.Size()))
			} else if ha, hb, err := hash2(filepath.Join(a, rel), filepath.Join(b, rel)); err != nil {
				return nil, err
			} else if !bytes.Equal(ha, hb) {
				diffs = append(diffs, fmt.Sprintf("%s: content differs", rel))
			}
			if opts.Hardlinks && sa.Nlink > 1 {
				linksA[sa.Ino] = append(linksA[sa.Ino], rel)
				linksB[sb.Ino] = linksB[sb.Ino] + "|" + rel
			}
		case fa.Mode().Type() == os.ModeSymlink:
			ta, _ := os.Readlink(filepath.Join(a, rel))
			tb, _ := os.Readlink(filepath.Join(b, rel))
			if ta != tb {
				diffs = append(diffs, fmt.Sprintf("%s: link target %q vs %q", rel, ta, tb))
			}
		}
	}
	if opts.Hardlinks {
		for _, group := range linksA {
			if len(group) < 2 {
				continue
			}
			var ino0 uint64
			for i, rel := range group {
				fi := lb[rel]
				ino := fi.Sys().(*syscall.Stat_t).Ino
				if i == 0 {
					ino0 = ino
				} else if ino != ino0 {
					diffs = append(diffs, fmt.Sprintf("%s: not hard-linked to %s in %s", rel, group[0], b))
				}
			}
		}
	}
	return diffs, nil
}

func list(root string) (map[string]os.FileInfo, error) {
	m := map[string]os.FileInfo{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." {
			m[rel] = fi
		}
		return nil
	})
	return m, err
}

func sortedKeys(a, b map[string]os.FileInfo) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range []map[string]os.FileInfo{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

func hash2(a, b string) ([]byte, []byte, error) {
	ha, err := hashFile(a)
	if err != nil {
		return nil, nil, err
	}
	hb, err := hashFile(b)
	return ha, hb, err
}

func hashFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
