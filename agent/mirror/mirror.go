// Package mirror keeps a consistent copy of the agent's data paths in its
// state directory, copying only what changed since the last sync.
//
// The agent syncs twice per backup: once while the services run (most bytes
// move then), and once while they are quiesced, when only what changed in
// between is copied. The second sync is the freeze window, so it must do
// little more than stat every file, and a changed file costs the bytes that
// changed, not its size (see copy.go).
//
// The data paths are written by containers that may be compromised, so the
// walk never follows a symlink and never resolves a path twice: every entry
// is reached with openat(O_NOFOLLOW) from its parent's open directory, and
// what was opened must be what was lstat'ed (device, inode, type) — the
// check restic's archiver makes before reading a file. An entry that was
// swapped between the two is skipped and reported (Stats.Warnings), never
// followed; the mirror keeps its previous copy and the next sync retries.
// Working from directory fds also lifts the PATH_MAX limit: a 4095-byte
// data path lands in the mirror below a longer prefix.
package mirror

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/haulproject/haul/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// Stats counts what one sync did.
type Stats struct {
	Files  int64 // regular files seen
	Dirs   int64
	Copied int64 // files whose content was updated
	// BytesCopied is what the updates wrote into the mirror: the changed
	// blocks of a file patched in place, a new file's data (holes are not
	// written), nothing for a reflinked copy.
	BytesCopied int64
	Cloned      int64 // files copied as reflinks (FICLONE)
	Patched     int64 // files updated in place, only their changed blocks written
	Removed     int64 // entries removed from the mirror
	Updated     int64 // metadata-only updates
	// Skipped counts entries that changed type or identity between lstat
	// and open (a file or directory swapped for a symlink, say). They are
	// not followed; the mirror keeps what it had for them.
	Skipped int64
	// Warnings describe the first MaxWarnings skips, paths quoted.
	Warnings []string
}

// MaxWarnings bounds Stats.Warnings: a container can make any number of
// entries race.
const MaxWarnings = 20

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

	// NoReflink and NoPatch turn off the cheaper copy methods (benchmarks
	// compare them with whole-file copies).
	NoReflink, NoPatch bool

	index   map[string]fileState
	next    map[string]fileState
	links   map[[2]uint64]string // source (dev, ino) → first mirror path (relative to Root) this sync
	stats   Stats
	pending []string // mirror paths (relative to Root) not yet fsynced (Defer)

	// seenFiles and seenBytes count the regular files the sync in
	// progress has gone through and their sizes (see Progress); lastFiles
	// and lastBytes are the totals of the last sync that completed (-1:
	// none in this process yet).
	seenFiles, seenBytes atomic.Int64
	lastFiles, lastBytes int64

	root       *os.Root // Root, for the rare lookups by path (hard links)
	tmpFD      int      // tmpDir, open for the duration of a sync
	tmpSeq     int
	noClone    map[uint64]bool // source devices where FICLONE failed
	bufA, bufB []byte
}

// tmpDir holds copies being written, below Root so a rename moves them into
// place, with short names of their own so they fit NAME_MAX whatever the
// source's name is. The manifest and the sftp view show only data paths.
const tmpDir = ".haul-tmp"

// Open loads the mirror's index. A missing index (first run) or one left
// dirty by a crash makes the next sync compare every file's content.
func Open(root, indexPath string) (*Mirror, error) {
	m := &Mirror{Root: root, IndexPath: indexPath, index: map[string]fileState{}, lastFiles: -1, lastBytes: -1}
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

// Progress reports how far the sync in progress has got: regular files
// gone through (copied or not) and their bytes. It may be called from
// another goroutine while Sync runs.
func (m *Mirror) Progress() (files, bytes int64) {
	return m.seenFiles.Load(), m.seenBytes.Load()
}

// ResetProgress sets Progress back to zero, for a display that follows
// the next Sync from its start (Sync does too, when it begins).
func (m *Mirror) ResetProgress() {
	m.seenFiles.Store(0)
	m.seenBytes.Store(0)
}

// Expected estimates what the next Sync goes through, the totals for
// Progress: what the last sync of this process went through, else what
// the index recorded of the sync before (it holds one entry per file, so
// hard links beyond the first name are not in it). Negative: no estimate
// (first sync, or the index was distrusted). Call it between syncs.
func (m *Mirror) Expected() (files, bytes int64) {
	if m.lastFiles >= 0 {
		return m.lastFiles, m.lastBytes
	}
	if len(m.index) == 0 {
		return -1, -1
	}
	for _, st := range m.index {
		bytes += st.Size
	}
	return int64(len(m.index)), bytes
}

// Sync makes the mirror equal to the sources: content, type, mode, owner,
// mtime, link targets and hard links. Unless Defer is set, the copies and the
// index are durable when it returns.
func (m *Mirror) Sync(ctx context.Context, sources []string) (Stats, error) {
	m.stats = Stats{}
	m.ResetProgress()
	m.next = make(map[string]fileState, len(m.index))
	m.links = map[[2]uint64]string{}
	if m.noClone == nil {
		m.noClone = map[uint64]bool{}
	}
	if err := os.WriteFile(m.IndexPath+".dirty", nil, 0o600); err != nil {
		return m.stats, fmt.Errorf("mark mirror index dirty: %w", err)
	}
	if err := m.openTmp(); err != nil {
		return m.stats, err
	}
	defer func() {
		unix.Close(m.tmpFD)
		m.root.Close()
	}()
	for _, src := range sources {
		if err := m.syncSource(ctx, src); err != nil {
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
	m.lastFiles, m.lastBytes = m.Progress()
	if m.Defer {
		return m.stats, nil
	}
	return m.stats, m.Commit()
}

// openTmp opens Root and an empty tmpDir below it (a crash may have left
// copies there).
func (m *Mirror) openTmp() error {
	var err error
	if m.root, err = os.OpenRoot(m.Root); err != nil {
		return fmt.Errorf("open mirror: %w", err)
	}
	tmp := filepath.Join(m.Root, tmpDir)
	if err := os.RemoveAll(tmp); err != nil {
		m.root.Close()
		return fmt.Errorf("clear mirror's temporary dir: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		m.root.Close()
		return err
	}
	if m.tmpFD, err = unix.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
		m.root.Close()
		return fmt.Errorf("open %s: %w", tmp, err)
	}
	return nil
}

// syncSource syncs one data path. Its parent is opened by path: the
// directories above a data path belong to the host, not to a container.
func (m *Mirror) syncSource(ctx context.Context, src string) error {
	if err := m.syncAncestors(src); err != nil {
		return err
	}
	parent, name := filepath.Dir(src), filepath.Base(src)
	sfd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", parent, err)
	}
	defer unix.Close(sfd)
	mp := m.mirrorPath(parent)
	dfd, err := unix.Open(mp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mirror dir %s: %w", mp, err)
	}
	defer unix.Close(dfd)
	return m.sync(ctx, entry{srcDir: sfd, dstDir: dfd, name: name, src: src, rel: strings.TrimPrefix(src, "/")})
}

// syncfsAbove is the number of pending copies above which Commit flushes
// the mirror's file system at once.
const syncfsAbove = 256

// Commit makes the copies of the syncs since the last Commit durable, then
// saves the index and clears its dirty mark.
func (m *Mirror) Commit() error {
	if len(m.pending) > syncfsAbove {
		// One syncfs instead of a fsync per file: it also flushes other
		// writers' dirty pages, but this runs after the freeze window, and
		// a first sync of a big tree would otherwise take a disk flush per
		// file.
		fd, err := unix.Open(m.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Syncfs(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("syncfs mirror %s: %w", m.Root, err)
		}
	} else if len(m.pending) > 0 {
		root, err := os.OpenRoot(m.Root)
		if err != nil {
			return err
		}
		defer root.Close()
		for _, p := range m.pending {
			// os.Root resolves one component at a time: mirror paths may
			// be longer than PATH_MAX.
			f, err := root.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ELOOP) {
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
		if err := applyMeta(unix.AT_FDCWD, d, &st, false, &m.stats); err != nil {
			return err
		}
	}
	return nil
}

// removeStale removes mirror entries that are no longer below any source
// (a data path removed from the config).
func (m *Mirror) removeStale(sources []string) error {
	keep := map[string]bool{tmpDir: true}
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
			case isSource || r == tmpDir:
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

// entry is one name being synced, in open source and mirror directories.
type entry struct {
	srcDir, dstDir int
	name           string
	src            string // the source's path: the index key, and for messages
	rel            string // its mirror path relative to Root
}

// skip records a race: the entry is left as the mirror has it.
func (m *Mirror) skip(e entry, why string) error {
	m.stats.Skipped++
	if len(m.stats.Warnings) < MaxWarnings {
		m.stats.Warnings = append(m.stats.Warnings,
			fmt.Sprintf("%s %s; not followed, the mirror keeps its previous copy (retried next backup)", strconv.Quote(e.src), why))
	}
	return nil
}

// sameInode reports whether an opened entry is the one lstat'ed.
func sameInode(a, b *unix.Stat_t) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Mode&unix.S_IFMT == b.Mode&unix.S_IFMT
}

func (m *Mirror) sync(ctx context.Context, e entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(e.srcDir, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// vanished between readdir and lstat: treat as deleted
			return m.remove(e)
		}
		return fmt.Errorf("lstat %s: %w", e.src, err)
	}
	var dt unix.Stat_t
	dstExists := unix.Fstatat(e.dstDir, e.name, &dt, unix.AT_SYMLINK_NOFOLLOW) == nil

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return m.syncDir(ctx, e, &st, dstExists, &dt)
	case unix.S_IFREG:
		m.stats.Files++
		err := m.syncFile(e, &st, dstExists, &dt)
		m.seenFiles.Add(1)
		m.seenBytes.Add(st.Size)
		return err
	case unix.S_IFLNK:
		target, err := readlinkat(e.srcDir, e.name)
		if errors.Is(err, unix.ENOENT) {
			return m.remove(e)
		}
		if errors.Is(err, unix.EINVAL) {
			return m.skip(e, "stopped being a symlink while it was read")
		}
		if err != nil {
			return fmt.Errorf("readlink %s: %w", e.src, err)
		}
		// A link's target is only data: the mirror never follows it.
		if dstExists && dt.Mode&unix.S_IFMT == unix.S_IFLNK {
			if cur, err := readlinkat(e.dstDir, e.name); err == nil && cur == target {
				return applyMeta(e.dstDir, e.name, &st, true, &m.stats)
			}
		}
		if err := m.clear(e, dstExists); err != nil {
			return err
		}
		if err := unix.Symlinkat(target, e.dstDir, e.name); err != nil {
			return fmt.Errorf("symlink %s in mirror: %w", e.src, err)
		}
		m.stats.Updated++
		return applyMeta(e.dstDir, e.name, &st, true, &m.stats)
	default: // fifo, devices, sockets: recreate as nodes of the same kind
		if dstExists && dt.Mode&unix.S_IFMT == st.Mode&unix.S_IFMT && dt.Rdev == st.Rdev {
			return applyMeta(e.dstDir, e.name, &st, false, &m.stats)
		}
		if err := m.clear(e, dstExists); err != nil {
			return err
		}
		if err := unix.Mknodat(e.dstDir, e.name, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod %s in mirror: %w", e.src, err)
		}
		return applyMeta(e.dstDir, e.name, &st, false, &m.stats)
	}
}

// remove deletes the mirror's copy of a source entry that is gone.
func (m *Mirror) remove(e entry) error {
	var dt unix.Stat_t
	if unix.Fstatat(e.dstDir, e.name, &dt, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return nil
	}
	m.stats.Removed++
	return removeAllAt(e.dstDir, e.name)
}

// clear removes the mirror's entry before another kind takes its name.
func (m *Mirror) clear(e entry, exists bool) error {
	if !exists {
		return nil
	}
	if err := removeAllAt(e.dstDir, e.name); err != nil {
		return fmt.Errorf("replace %s in mirror: %w", e.src, err)
	}
	return nil
}

func (m *Mirror) syncDir(ctx context.Context, e entry, st *unix.Stat_t, dstExists bool, dt *unix.Stat_t) error {
	fd, err := unix.Openat(e.srcDir, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return m.remove(e)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		return m.skip(e, "was replaced by a symlink or file between lstat and open")
	case err != nil:
		return fmt.Errorf("open dir %s: %w", e.src, err)
	}
	defer unix.Close(fd)
	var ft unix.Stat_t
	if err := unix.Fstat(fd, &ft); err != nil {
		return fmt.Errorf("stat dir %s: %w", e.src, err)
	}
	if !sameInode(st, &ft) {
		return m.skip(e, "was replaced by another directory between lstat and open")
	}
	m.stats.Dirs++
	if dstExists && dt.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := m.clear(e, true); err != nil {
			return err
		}
		dstExists = false
	}
	if !dstExists {
		if err := unix.Mkdirat(e.dstDir, e.name, 0o700); err != nil {
			return fmt.Errorf("mkdir %s in mirror: %w", e.src, err)
		}
	}
	dfd, err := unix.Openat(e.dstDir, e.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open mirror dir of %s: %w", e.src, err)
	}
	defer unix.Close(dfd)

	srcNames, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("read dir %s: %w", e.src, err)
	}
	dstNames, err := readNames(dfd)
	if err != nil {
		return fmt.Errorf("read mirror dir of %s: %w", e.src, err)
	}
	// Both lists are sorted: a merge finds what the source lost without a
	// set of a huge directory's names.
	i := 0
	for _, n := range dstNames {
		for i < len(srcNames) && srcNames[i] < n {
			i++
		}
		if i < len(srcNames) && srcNames[i] == n {
			continue
		}
		if err := removeAllAt(dfd, n); err != nil {
			return fmt.Errorf("remove %s from mirror: %w", strconv.Quote(e.src+"/"+n), err)
		}
		m.stats.Removed++
	}
	dstNames = nil
	for _, n := range srcNames {
		c := entry{srcDir: fd, dstDir: dfd, name: n, src: e.src + "/" + n, rel: e.rel + "/" + n}
		if err := m.sync(ctx, c); err != nil {
			return err
		}
	}
	// The opened directory's metadata, not the lstat's: it is the inode
	// whose entries were copied.
	return applyMeta(e.dstDir, e.name, &ft, false, &m.stats)
}

func (m *Mirror) syncFile(e entry, st *unix.Stat_t, dstExists bool, dt *unix.Stat_t) error {
	if dstExists && dt.Mode&unix.S_IFMT != unix.S_IFREG {
		if err := m.clear(e, true); err != nil {
			return err
		}
		dstExists = false
	}
	key := [2]uint64{st.Dev, st.Ino}
	if st.Nlink > 1 {
		if first, ok := m.links[key]; ok {
			return m.link(e, first, dstExists, dt)
		}
	}
	state := fileState{Dev: st.Dev, Ino: st.Ino, Size: st.Size, MTime: st.Mtim.Nano(), CTim: st.Ctim.Nano()}
	unchanged := dstExists && m.index[e.src] == state && dt.Size == st.Size && dt.Mtim == st.Mtim
	if unchanged && dt.Nlink > 1 && st.Nlink == 1 {
		unchanged = false // the mirror copy is still linked to a path the source unlinked
	}
	if unchanged {
		m.next[e.src] = state
		if st.Nlink > 1 {
			m.links[key] = e.rel
		}
		return applyMeta(e.dstDir, e.name, st, false, &m.stats)
	}

	// O_NONBLOCK|O_NOCTTY: should a fifo or device be swapped in after the
	// lstat, opening it neither blocks nor takes a terminal; the fstat
	// below then refuses it.
	fd, err := unix.Openat(e.srcDir, e.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return m.remove(e)
	case errors.Is(err, unix.ELOOP):
		return m.skip(e, "was replaced by a symlink between lstat and open")
	case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV), errors.Is(err, unix.EISDIR):
		return m.skip(e, "was replaced by a special file or directory between lstat and open")
	case err != nil:
		return fmt.Errorf("open %s: %w", e.src, err)
	}
	defer unix.Close(fd)
	var ft unix.Stat_t
	if err := unix.Fstat(fd, &ft); err != nil {
		return fmt.Errorf("stat %s: %w", e.src, err)
	}
	if !sameInode(st, &ft) {
		return m.skip(e, "was replaced by another file between lstat and open")
	}
	state = fileState{Dev: ft.Dev, Ino: ft.Ino, Size: ft.Size, MTime: ft.Mtim.Nano(), CTim: ft.Ctim.Nano()}
	n, err := m.copy(fd, &ft, e, dstExists, dt)
	if err != nil {
		return err
	}
	if m.Defer {
		m.pending = append(m.pending, e.rel)
	}
	m.next[e.src] = state
	if ft.Nlink > 1 {
		m.links[key] = e.rel
	}
	m.stats.Copied++
	m.stats.BytesCopied += n
	return applyMeta(e.dstDir, e.name, &ft, false, &m.stats)
}

// link makes the mirror's entry a hard link to first, the mirror copy of an
// earlier name of the same source inode.
func (m *Mirror) link(e entry, first string, dstExists bool, dt *unix.Stat_t) error {
	fi, err := m.root.Lstat(first)
	if err != nil {
		return err
	}
	ft := fi.Sys().(*syscall.Stat_t)
	if dstExists && dt.Ino == ft.Ino && dt.Dev == ft.Dev {
		return nil
	}
	if dstExists {
		if err := unix.Unlinkat(e.dstDir, e.name, 0); err != nil {
			return err
		}
	}
	m.stats.Updated++
	// Through Root, for the first name's path may exceed PATH_MAX.
	return m.root.Link(first, e.rel)
}

// applyMeta gives the mirror entry name in dirfd the owner, mode and times
// of st, touching only what differs.
func applyMeta(dirfd int, name string, st *unix.Stat_t, symlink bool, stats *Stats) error {
	var dt unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &dt, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	changed := false
	if dt.Uid != st.Uid || dt.Gid != st.Gid {
		if err := unix.Fchownat(dirfd, name, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("chown %s: %w", name, err)
		}
		changed = true
	}
	if !symlink && dt.Mode&0o7777 != st.Mode&0o7777 {
		// No AT_SYMLINK_NOFOLLOW (Linux refuses it): name is no symlink,
		// and only the agent writes the mirror.
		if err := unix.Fchmodat(dirfd, name, st.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", name, err)
		}
		changed = true
	}
	// atime is not compared: reading a file changes it, and rewriting it
	// would change the mirror's ctime and invalidate the chunk cache.
	if changed || dt.Mtim != st.Mtim {
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %s: %w", name, err)
		}
		if changed {
			stats.Updated++
		}
	}
	return nil
}

func (m *Mirror) saveIndex() error {
	return atomicfile.Write(m.IndexPath, 0o600, func(f *os.File) error { return gob.NewEncoder(f).Encode(m.index) })
}

// readNames lists an open directory, sorted. It reads through a duplicate
// so the caller's fd keeps its offset and stays open.
func readNames(fd int) ([]string, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.Seek(dup, 0, 0); err != nil {
		unix.Close(dup)
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// readlinkat reads a link target of any length Linux allows.
func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// removeAllAt removes name in dirfd and everything below it, never
// following a symlink, at any depth or path length.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readNames(fd)
	if err == nil {
		for _, n := range names {
			if err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
