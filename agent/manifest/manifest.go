// Package manifest walks the agent's mirror and describes it as a stream of
// protocol nodes, each file with the chunk IDs restic would give it.
//
// Files are chunked with the repository's polynomial exactly as restic
// chunks them, so the puller's repository deduplicates haul's chunks against
// restic's own. Chunk lists are cached across runs by inode, size, mtime and
// ctime, so an unchanged file is not read again.
package manifest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/haulproject/haul/internal/atomicfile"
	"github.com/haulproject/haul/internal/exclude"
	"github.com/haulproject/haul/internal/longpath"
	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
)

// Location says where a chunk's bytes are in the mirror.
type Location struct {
	Path   string // absolute path in the mirror
	Rel    string // the file's path on the host: its key in the cache
	Offset int64
	Length uint32
	// Cached is true when the chunk list came from the cache instead of a
	// fresh read: the sender verifies such chunks before sending.
	Cached bool
	// version is the file as this walk saw it (size and block hashes, for
	// deltas). The walker never changes it after publishing the Location,
	// so the sender may read it while the walk goes on.
	version *cacheEntry
}

// Visitor receives the manifest in order: a dir node opens a directory,
// Leave closes the most recently opened one.
type Visitor interface {
	Visit(n *proto.Node) error
	Leave() error
}

type cacheEntry struct {
	Ino, Size, MTime, CTime int64
	Chunks                  []proto.ChunkRef
	// Blocks are hashes of the file's proto.DeltaBlock-sized blocks, for
	// deltas against this version (nil in caches written before deltas).
	Blocks []uint64
}

// cacheFile is the cache as written before version 2: one gob value.
type cacheFile struct {
	Polynomial uint64
	Files      map[string]cacheEntry
	// Walk names the walk these entries come from (bases only).
	Walk string
}

// cacheHeader starts a cache file (version 2), followed by Count
// cacheRecords. Its field names are cacheFile's, so an old file decodes
// into it with Version 0.
type cacheHeader struct {
	Version    int
	Polynomial uint64
	Walk       string
	Count      int
}

type cacheRecord struct {
	Path  string
	Entry cacheEntry
}

// Cache remembers each mirror file's chunk list, and the versions the
// puller last confirmed (the bases deltas refer to).
//
// A Cache belongs to one goroutine at a time: the walker while it walks
// (it fills the new entries and saves them), then the session. The chunk
// sender never touches it: it reads the file versions through Location
// and the bases through Bases, neither of which changes during a walk.
type Cache struct {
	path  string
	bases string // where Promote writes the bases
	pol   chunker.Pol
	old   map[string]cacheEntry
	new   map[string]cacheEntry
	base  map[string]cacheEntry
	// baseWalk names the walk the bases come from; walk names this one.
	baseWalk, walk string
}

// OpenCache loads the chunk cache at path and the delta bases at bases;
// either made with another polynomial is discarded.
func OpenCache(path, bases string, pol chunker.Pol) (*Cache, error) {
	c := &Cache{path: path, bases: bases, pol: pol, new: map[string]cacheEntry{}}
	var err error
	if c.old, _, err = loadCacheFile(path, pol); err != nil {
		return nil, fmt.Errorf("open chunk cache: %w", err)
	}
	if c.base, c.baseWalk, err = loadCacheFile(bases, pol); err != nil {
		return nil, fmt.Errorf("open delta bases: %w", err)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	c.walk = hex.EncodeToString(id[:])
	return c, nil
}

// Walk names this walk (see proto.ManifestEnd.Walk).
func (c *Cache) Walk() string { return c.walk }

// BaseWalk names the walk the bases come from ("" if none, or bases
// written before walks were named).
func (c *Cache) BaseWalk() string { return c.baseWalk }

// loadCacheFile reads a cache file; a missing or unreadable one, or one
// made with another polynomial, is empty.
func loadCacheFile(path string, pol chunker.Pol) (map[string]cacheEntry, string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]cacheEntry{}, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	dec := gob.NewDecoder(bufio.NewReader(f))
	var h cacheHeader
	if dec.Decode(&h) != nil || h.Polynomial != uint64(pol) || h.Count < 0 {
		return map[string]cacheEntry{}, "", nil
	}
	if h.Version == 0 {
		// A file written before the records were streamed: one value
		// whose first fields the header just read.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, "", err
		}
		var cf cacheFile
		if err := gob.NewDecoder(bufio.NewReader(f)).Decode(&cf); err == nil && cf.Files != nil {
			return cf.Files, cf.Walk, nil
		}
		return map[string]cacheEntry{}, "", nil
	}
	files := make(map[string]cacheEntry, min(h.Count, 1<<20))
	for range h.Count {
		var r cacheRecord
		if dec.Decode(&r) != nil {
			return map[string]cacheEntry{}, "", nil // cut short: start over
		}
		files[r.Path] = r.Entry
	}
	return files, h.Walk, nil
}

// Forget drops a file's entry, after its cached chunk list proved wrong.
func (c *Cache) Forget(path string) {
	delete(c.old, path)
	delete(c.new, path)
}

// Save writes the entries seen by the last walk.
func (c *Cache) Save() error { return writeCacheFile(c.path, c.pol, c.new, "") }

// writeCacheFile writes a header, then one record per file: gob holds each
// value it encodes whole, and a 1 GiB tree's cache is ~4 MiB (its block
// hashes), which the agent held while the chunk sender's buffers were in
// use; one record is at most one file's.
func writeCacheFile(path string, pol chunker.Pol, files map[string]cacheEntry, walk string) error {
	return atomicfile.Write(path, 0o600, func(f *os.File) error {
		bw := bufio.NewWriter(f)
		enc := gob.NewEncoder(bw)
		if err := enc.Encode(cacheHeader{Version: 2, Polynomial: uint64(pol), Walk: walk, Count: len(files)}); err != nil {
			return err
		}
		for p, e := range files {
			if err := enc.Encode(cacheRecord{Path: p, Entry: e}); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}

// Walker produces the manifest of a mirror.
type Walker struct {
	Root      string   // the mirror directory
	DataPaths []string // absolute paths as on the host; found under Root
	Cache     *Cache
	Pol       chunker.Pol
	// Exclude leaves matching paths out of the walk (nil: none).
	Exclude *exclude.List
	// Workers bounds the goroutines that chunk one large file (see
	// parallel.go); 0 leaves it to GOMAXPROCS and maxWorkers.
	Workers int
	// SameAsBase marks a file whose chunks equal its base version's as
	// Same, without its chunk list (protocol version 3, when the puller
	// holds the base walk).
	SameAsBase bool

	// Locations maps every chunk of the walk to where it can be read.
	Locations map[proto.ID]Location
	Stats     proto.ManifestEnd

	// workers are read's chunkers, kept across files so that reading one
	// allocates no buffers.
	workers []*chunkWorker
	names   nameCache
	mu      sync.Mutex // guards Locations: the sender reads while the walk runs
}

// Lookup returns where chunk id can be read.
func (w *Walker) Lookup(id proto.ID) (Location, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, ok := w.Locations[id]
	return l, ok
}

// Walk streams the manifest to v. The top of the tree is the file system
// root: the directories leading to each data path come first, with the
// mirrored metadata of their originals.
func (w *Walker) Walk(ctx context.Context, v Visitor) error {
	w.mu.Lock()
	w.Locations = map[proto.ID]Location{}
	w.mu.Unlock()
	w.names = nameCache{users: map[uint32]string{}, groups: map[uint32]string{}}
	w.Stats.Walk = w.Cache.Walk()
	t := &trie{children: map[string]*trie{}}
	for _, p := range w.DataPaths {
		n := t
		for _, comp := range strings.Split(strings.Trim(p, "/"), "/") {
			c, ok := n.children[comp]
			if !ok {
				c = &trie{children: map[string]*trie{}}
				n.children[comp] = c
			}
			n = c
		}
		n.data = true
	}
	return w.walkTrie(ctx, v, t, "")
}

type trie struct {
	children map[string]*trie
	data     bool
}

func (w *Walker) walkTrie(ctx context.Context, v Visitor, t *trie, rel string) error {
	names := make([]string, 0, len(t.children))
	for n := range t.children {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		c := t.children[name]
		r := rel + "/" + name
		if c.data {
			if w.Exclude.Excluded(r) {
				w.Stats.Excluded++
				continue
			}
			if err := w.walk(ctx, v, r); err != nil {
				return err
			}
			continue
		}
		n, err := w.node(r)
		if err != nil {
			return err
		}
		if n.Type != proto.NodeDir {
			return fmt.Errorf("%s is not a directory in the mirror", r)
		}
		if err := v.Visit(n); err != nil {
			return err
		}
		if err := w.walkTrie(ctx, v, c, r); err != nil {
			return err
		}
		if err := v.Leave(); err != nil {
			return err
		}
	}
	return nil
}

// walk emits the mirror subtree at rel (a host path such as /srv/data).
func (w *Walker) walk(ctx context.Context, v Visitor, rel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := w.node(rel)
	if err != nil {
		return err
	}
	if n.Type == proto.NodeFile {
		if err := w.chunks(rel, n); err != nil {
			return err
		}
	}
	if err := v.Visit(n); err != nil {
		return err
	}
	if n.Type != proto.NodeDir {
		return nil
	}
	w.Stats.Dirs++
	f, err := longpath.Open(w.abs(rel))
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read mirror dir %s: %w", rel, err)
	}
	sort.Strings(names)
	for _, name := range names {
		if w.Exclude.Excluded(rel + "/" + name) {
			w.Stats.Excluded++
			continue
		}
		if err := w.walk(ctx, v, rel+"/"+name); err != nil {
			return err
		}
	}
	return v.Leave()
}

func (w *Walker) abs(rel string) string { return filepath.Join(w.Root, rel) }

func (w *Walker) node(rel string) (*proto.Node, error) {
	p := w.abs(rel)
	fi, err := longpath.Lstat(p)
	if err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	mask := os.ModePerm | os.ModeType | os.ModeSetuid | os.ModeSetgid | os.ModeSticky
	n := &proto.Node{
		Name:  []byte(filepath.Base(rel)),
		Mode:  uint32(fi.Mode() & mask),
		UID:   st.Uid,
		GID:   st.Gid,
		User:  w.names.user(st.Uid),
		Group: w.names.group(st.Gid),
		MTime: st.Mtim.Nano(),
		ATime: st.Atim.Nano(),
		CTime: st.Ctim.Nano(),
		Inode: st.Ino,
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		n.Type = proto.NodeFile
		n.Size = uint64(st.Size)
		n.Links = uint64(st.Nlink)
	case m.IsDir():
		n.Type = proto.NodeDir
	case m&os.ModeSymlink != 0:
		n.Type = proto.NodeSymlink
		target, err := longpath.Readlink(p)
		if err != nil {
			return nil, err
		}
		n.LinkTarget = []byte(target)
		n.Links = uint64(st.Nlink)
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice != 0:
		n.Type = proto.NodeCharDev
		n.Device = st.Rdev
		n.Links = uint64(st.Nlink)
	case m&os.ModeDevice != 0:
		n.Type = proto.NodeDev
		n.Device = st.Rdev
		n.Links = uint64(st.Nlink)
	case m&os.ModeNamedPipe != 0:
		n.Type = proto.NodeFifo
	case m&os.ModeSocket != 0:
		n.Type = proto.NodeSocket
	default:
		return nil, fmt.Errorf("mirror: %s has unsupported type %v", rel, m)
	}
	if n.Links > 1 && n.Type != proto.NodeDir {
		n.DeviceID = st.Dev // only hard links need it, as restic does
	}
	return n, nil
}

// chunks fills n.Chunks from the cache or by reading the file.
func (w *Walker) chunks(rel string, n *proto.Node) error {
	w.Stats.Files++
	w.Stats.Bytes += int64(n.Size)
	key := cacheEntry{Ino: int64(n.Inode), Size: int64(n.Size), MTime: n.MTime, CTime: n.CTime}
	if e, ok := w.Cache.old[rel]; ok && e.Ino == key.Ino && e.Size == key.Size && e.MTime == key.MTime && e.CTime == key.CTime {
		n.Chunks = e.Chunks
		w.Cache.new[rel] = e
		w.locate(rel, e, true)
		w.same(rel, n)
		return nil
	}
	refs, blocks, err := w.read(rel, int64(n.Size))
	if err != nil {
		return err
	}
	var sum uint64
	for _, r := range refs {
		sum += uint64(r.Length)
	}
	if sum != n.Size {
		// the mirror changed under us: only root can do that, and it means
		// the mirror is not consistent any more
		return fmt.Errorf("mirror file %s changed while it was read (%d bytes, expected %d); rerun the backup", rel, sum, n.Size)
	}
	n.Chunks = refs
	key.Chunks = refs
	key.Blocks = blocks
	w.Cache.new[rel] = key
	w.locate(rel, key, false)
	w.same(rel, n)
	return nil
}

// same drops n's chunk list if the base version of rel has the same one:
// the puller takes it from its snapshot of the base walk.
func (w *Walker) same(rel string, n *proto.Node) {
	if !w.SameAsBase {
		return
	}
	b, ok := w.Cache.base[rel]
	if !ok || len(b.Chunks) != len(n.Chunks) || b.Size != int64(n.Size) {
		return
	}
	for i, c := range n.Chunks {
		if b.Chunks[i] != c {
			return
		}
	}
	n.Chunks, n.Same = nil, true
	w.Stats.Same++
}

// locate publishes where the chunks of file version e are; the sender gets
// its own copy of e, so the cache stays the walker's.
func (w *Walker) locate(rel string, e cacheEntry, cached bool) {
	version := &e
	w.mu.Lock()
	defer w.mu.Unlock()
	var off int64
	for _, r := range e.Chunks {
		if _, ok := w.Locations[r.ID]; !ok {
			w.Locations[r.ID] = Location{Path: w.abs(rel), Rel: rel, Offset: off, Length: r.Length, Cached: cached, version: version}
		}
		off += int64(r.Length)
		w.Stats.Chunks++
	}
}

// restic's chunking parameters (chunker.New's). Tests shrink them so that
// small inputs have many chunks; nothing here depends on their values.
var (
	chunkMin, chunkMax uint = chunker.MinSize, chunker.MaxSize
	chunkBits               = 20 // average chunk: chunkMin + 1<<chunkBits
)

// readBuf is what a chunkWorker reads at a time: the chunks are cut and
// hashed as the bytes pass (cutter), so no chunk is held whole.
const readBuf = 256 << 10

// chunkWorker is what one goroutine chunks with: a cutter and its read
// buffer (256 KiB, kept across files), and the block hashes of what it
// read.
type chunkWorker struct {
	c    *cutter
	r    io.Reader
	buf  []byte
	lb   int // bytes before the new ones in buf, for the cutter's window
	eof  bool
	done int // chunks of c.refs already returned by next
	bh   *blockHasher
}

// worker returns the walker's i-th chunkWorker, made on first use.
func (w *Walker) worker(i int) *chunkWorker {
	for len(w.workers) <= i {
		w.workers = append(w.workers, &chunkWorker{buf: make([]byte, cutLookBehind+readBuf)})
	}
	return w.workers[i]
}

// reset starts cw on a new stream. Its block hashes cover every block it
// reads whole, which may go past the last chunk it returns (it reads
// ahead); the hashes are the file's either way.
func (cw *chunkWorker) reset(r io.Reader, pol chunker.Pol) {
	cw.c = newCutter(pol)
	cw.r, cw.lb, cw.eof, cw.done = r, 0, false, 0
	cw.bh = &blockHasher{}
}

// next returns the stream's next chunk, or io.EOF after the last.
func (cw *chunkWorker) next() (proto.ChunkRef, error) {
	for cw.done == len(cw.c.refs) {
		if cw.eof {
			return proto.ChunkRef{}, io.EOF
		}
		n, err := io.ReadFull(cw.r, cw.buf[cw.lb:cw.lb+readBuf])
		if n > 0 {
			cw.c.feed(cw.buf[:cw.lb+n], cw.lb)
			cw.bh.Write(cw.buf[cw.lb : cw.lb+n])
			keep := min(cw.lb+n, cutLookBehind)
			copy(cw.buf, cw.buf[cw.lb+n-keep:cw.lb+n])
			cw.lb = keep
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			cw.c.Close()
			cw.eof = true
		case err != nil:
			return proto.ChunkRef{}, err
		}
	}
	ref := cw.c.refs[cw.done]
	cw.done++
	return ref, nil
}

// read chunks a file of about size bytes and hashes its blocks for
// deltas, in one pass: a large one on several cores (readSegments).
func (w *Walker) read(rel string, size int64) ([]proto.ChunkRef, []uint64, error) {
	f, err := longpath.Open(w.abs(rel))
	if err != nil {
		return nil, nil, fmt.Errorf("mirror: %w", err)
	}
	defer f.Close()
	w.Stats.FilesRead++
	var refs []proto.ChunkRef
	var blocks []uint64
	if splits := splitPoints(size, w.Workers); splits != nil {
		refs, blocks, err = w.readSegments(f, size, splits)
	} else {
		refs, blocks, err = w.readAll(f)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("chunk %s: %w", rel, err)
	}
	for _, r := range refs {
		w.Stats.BytesRead += int64(r.Length)
	}
	return refs, blocks, nil
}

// readAll chunks r from its start to its end on this goroutine.
func (w *Walker) readAll(r io.Reader) ([]proto.ChunkRef, []uint64, error) {
	cw := w.worker(0)
	cw.reset(r, w.Pol)
	for {
		_, err := cw.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return cw.c.refs, cw.bh.finish(), nil
}

type nameCache struct {
	users, groups map[uint32]string
}

func (c nameCache) user(uid uint32) string {
	if n, ok := c.users[uid]; ok {
		return n
	}
	n := ""
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		n = u.Username
	}
	c.users[uid] = n
	return n
}

func (c nameCache) group(gid uint32) string {
	if n, ok := c.groups[gid]; ok {
		return n
	}
	n := ""
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		n = g.Name
	}
	c.groups[gid] = n
	return n
}
