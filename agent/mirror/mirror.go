// Package mirror keeps a consistent copy of the agent's data paths in its
// state directory, copying only what changed since the last sync.
//
// The agent syncs twice per backup: once while the services run (most bytes
// move then), and once while they are quiesced, when only what changed in
// between is copied. The second sync is the freeze window, so it must do
// little more than stat every file.
package mirror

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Stats counts what one sync did.
type Stats struct {
	Files       int64 // regular files seen
	Dirs        int64
	Copied      int64 // files copied
	BytesCopied int64
	Removed     int64 // entries removed from the mirror
	Updated     int64 // metadata-only updates
}

// fileState is what the last sync saw of a source file. ctime catches
// rewrites that keep size and mtime.
type fileState struct {
	Dev, Ino    uint64
	Size        int64
	MTime, CTim int64
}

// Mirror syncs source directories into Root.
type Mirror struct {
	Root      string // the mirror directory
	IndexPath string // where the change index is persisted

	// Defer moves the durability of copied files out of Sync into Commit:
	// the copies are fsynced, and the index saved, once the caller is done
	// (after the freeze window, while the chunks travel). Until Commit the
	// index stays marked dirty, so a crash in between makes the next sync
	// recopy everything rather than trust copies that may not be on disk.
	Defer bool

	index   map[string]fileState
	next    map[string]fileState
	links   map[[2]uint64]string // source (dev, ino) → first mirror path this sync
	stats   Stats
	pending []string // copies not yet fsynced (Defer)
}

// Open loads the mirror's index. A missing index (first run) or one left
// dirty by a crash makes the next sync compare every file by content size,
// mtime and a fresh copy.
func Open(root, indexPath string) (*Mirror, error) {
	m := &Mirror{Root: root, IndexPath: indexPath, index: map[string]fileState{}}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create mirror %s: %w", root, err)
	}
	if _, err := os.Stat(indexPath + ".dirty"); err == nil {
		return m, nil // crashed mid-sync: trust nothing
	}
	f, err := os.Open(indexPath)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := gob.NewDecoder(f).Decode(&m.index); err != nil {
		m.index = map[string]fileState{} // unreadable index: recopy
	}
	return m, nil
}

// Sync makes the mirror equal to the sources: content, type, mode, owner,
// mtime, link targets and hard links. Unless Defer is set, the copies and the
// index are durable when it returns.
func (m *Mirror) Sync(ctx context.Context, sources []string) (Stats, error) {
	m.stats = Stats{}
	m.next = make(map[string]fileState, len(m.index))
	m.links = map[[2]uint64]string{}
	if err := os.WriteFile(m.IndexPath+".dirty", nil, 0o600); err != nil {
		return m.stats, fmt.Errorf("mark mirror index dirty: %w", err)
	}
	for _, src := range sources {
		if err := m.syncAncestors(src); err != nil {
			return m.stats, err
		}
		if err := m.sync(ctx, src, m.mirrorPath(src)); err != nil {
			return m.stats, err
		}
	}
	if err := m.removeStale(sources); err != nil {
		return m.stats, err
	}
	// Only copied content must be durable before the index records it.
	// Everything else is checked against the mirror itself on every sync.
	// No syncfs: it would flush every other writer's dirty pages on the
	// filesystem, inside the freeze window.
	m.index = m.next
	if m.Defer {
		return m.stats, nil
	}
	return m.stats, m.Commit()
}

// Commit makes the copies of the syncs since the last Commit durable, then
// saves the index and clears its dirty mark.
func (m *Mirror) Commit() error {
	for _, p := range m.pending {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // replaced or removed by a later sync
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync mirror copy %s: %w", p, err)
		}
	}
	m.pending = nil
	if err := m.saveIndex(); err != nil {
		return err
	}
	return os.Remove(m.IndexPath + ".dirty")
}

func (m *Mirror) mirrorPath(src string) string {
	return filepath.Join(m.Root, strings.TrimPrefix(src, "/"))
}

// syncAncestors gives the mirror's copies of the directories above a data
// path the sources' metadata, so snapshots carry them as restic would.
func (m *Mirror) syncAncestors(src string) error {
	parts := strings.Split(strings.Trim(src, "/"), "/")
	for i := 1; i < len(parts); i++ {
		s := "/" + strings.Join(parts[:i], "/")
		d := m.mirrorPath(s)
		var st unix.Stat_t
		if err := unix.Stat(s, &st); err != nil {
			return fmt.Errorf("stat %s: %w", s, err)
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := m.applyMeta(d, &st, false); err != nil {
			return err
		}
	}
	return nil
}

// removeStale removes mirror entries that are no longer below any source
// (a data path removed from the config).
func (m *Mirror) removeStale(sources []string) error {
	keep := map[string]bool{}
	for _, s := range sources {
		p := strings.Trim(s, "/")
		for {
			keep[p] = true
			i := strings.LastIndexByte(p, '/')
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	var walk func(rel string) error
	walk = func(rel string) error {
		ents, err := os.ReadDir(filepath.Join(m.Root, rel))
		if err != nil {
			return err
		}
		for _, e := range ents {
			r := filepath.Join(rel, e.Name())
			isSource := false
			for _, s := range sources {
				if strings.Trim(s, "/") == r {
					isSource = true
				}
			}
			switch {
			case isSource:
			case keep[r] && e.IsDir():
				if err := walk(r); err != nil {
					return err
				}
			default:
				if err := os.RemoveAll(filepath.Join(m.Root, r)); err != nil {
					return err
				}
				m.stats.Removed++
			}
		}
		return nil
	}
	return walk("")
}

func (m *Mirror) sync(ctx context.Context, src, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// vanished between readdir and lstat: treat as deleted
			return removeIfExists(dst)
		}
		return fmt.Errorf("lstat %s: %w", src, err)
	}
	var dt unix.Stat_t
	dstErr := unix.Lstat(dst, &dt)
	dstExists := dstErr == nil
	if dstExists && dt.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		dstExists = false
	}

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m.stats.Dirs++
		if !dstExists {
			if err := os.Mkdir(dst, 0o700); err != nil {
				return err
			}
		}
		if err := m.syncDir(ctx, src, dst); err != nil {
			return err
		}
		return m.applyMeta(dst, &st, false)
	case unix.S_IFREG:
		m.stats.Files++
		return m.syncFile(src, dst, &st, dstExists, &dt)
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("readlink %s: %w", src, err)
		}
		if dstExists {
			if cur, err := os.Readlink(dst); err == nil && cur == target {
				return m.applyMeta(dst, &st, true)
			}
			if err := os.Remove(dst); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
		m.stats.Updated++
		return m.applyMeta(dst, &st, true)
	default: // fifo, devices, sockets: recreate as nodes of the same kind
		if dstExists && dt.Rdev == st.Rdev {
			return m.applyMeta(dst, &st, false)
		}
		if dstExists {
			if err := os.Remove(dst); err != nil {
				return err
			}
		}
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", dst, err)
		}
		return m.applyMeta(dst, &st, false)
	}
}

func (m *Mirror) syncDir(ctx context.Context, src, dst string) error {
	srcNames, err := readNames(src)
	if err != nil {
		return fmt.Errorf("read dir %s: %w", src, err)
	}
	dstNames, err := readNames(dst)
	if err != nil {
		return fmt.Errorf("read mirror dir %s: %w", dst, err)
	}
	have := make(map[string]bool, len(srcNames))
	for _, n := range srcNames {
		have[n] = true
	}
	for _, n := range dstNames {
		if !have[n] {
			if err := os.RemoveAll(filepath.Join(dst, n)); err != nil {
				return err
			}
			m.stats.Removed++
		}
	}
	for _, n := range srcNames {
		if err := m.sync(ctx, filepath.Join(src, n), filepath.Join(dst, n)); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mirror) syncFile(src, dst string, st *unix.Stat_t, dstExists bool, dt *unix.Stat_t) error {
	state := fileState{Dev: st.Dev, Ino: st.Ino, Size: st.Size, MTime: st.Mtim.Nano(), CTim: st.Ctim.Nano()}
	if st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := m.links[key]; ok {
			var ft unix.Stat_t
			if err := unix.Lstat(first, &ft); err != nil {
				return err
			}
			if dstExists && dt.Ino == ft.Ino && dt.Dev == ft.Dev {
				return nil
			}
			if dstExists {
				if err := os.Remove(dst); err != nil {
					return err
				}
			}
			m.stats.Updated++
			return os.Link(first, dst)
		}
		m.links[key] = dst
	}
	m.next[src] = state
	unchanged := dstExists && m.index[src] == state && dt.Size == st.Size && dt.Mtim == st.Mtim
	if unchanged && dt.Nlink > 1 && st.Nlink == 1 {
		unchanged = false // the mirror copy is still linked to a path the source unlinked
	}
	if unchanged {
		return m.applyMeta(dst, st, false)
	}
	n, err := copyFile(src, dst, st, !m.Defer)
	if err != nil {
		return err
	}
	if m.Defer {
		m.pending = append(m.pending, dst)
	}
	m.stats.Copied++
	m.stats.BytesCopied += n
	return m.applyMeta(dst, st, false)
}

// copyFile copies src to a temporary file beside dst and renames it over
// dst, so the mirror never holds a half-written file under its name.
func copyFile(src, dst string, st *unix.Stat_t, durable bool) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	tmp := filepath.Join(filepath.Dir(dst), ".haul-tmp-"+filepath.Base(dst))
	_ = os.Remove(tmp)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", tmp, err)
	}
	n, err := io.Copy(out, in)
	if err == nil && durable {
		// Durable before the index says the mirror holds this version: a
		// crash that lost the data would otherwise go unnoticed, since
		// size and mtime are applied after the copy.
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return n, fmt.Errorf("copy %s to mirror: %w", src, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return n, err
	}
	return n, nil
}

// applyMeta gives dst the owner, mode and times of st, touching only what
// differs.
func (m *Mirror) applyMeta(dst string, st *unix.Stat_t, symlink bool) error {
	var dt unix.Stat_t
	if err := unix.Lstat(dst, &dt); err != nil {
		return err
	}
	changed := false
	if dt.Uid != st.Uid || dt.Gid != st.Gid {
		if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, syscall.EPERM) {
			return fmt.Errorf("chown %s: %w", dst, err)
		}
		changed = true
	}
	if !symlink && dt.Mode&0o7777 != st.Mode&0o7777 {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", dst, err)
		}
		changed = true
	}
	// atime is not compared: reading a file changes it, and rewriting it
	// would change the mirror's ctime and invalidate the chunk cache.
	if changed || dt.Mtim != st.Mtim {
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %s: %w", dst, err)
		}
		if changed {
			m.stats.Updated++
		}
	}
	return nil
}

func (m *Mirror) saveIndex() error {
	tmp := m.IndexPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := gob.NewEncoder(f).Encode(m.index); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, m.IndexPath)
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func removeIfExists(p string) error {
	err := os.RemoveAll(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
