// Package restore is the agent's side of a restore below the session: the
// snapshot's tree staged beside the live data, its chunks written and
// verified, its metadata applied, and the swap that puts it in place.
// The restore verb in package agent drives it from the session's frames.
package restore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/haulproject/haul/agent/internal/beneath"
	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/proto"
	"golang.org/x/sys/unix"
)

// StagingSuffix names the directory a restore builds beside each data
// path. It is on the same file system as the data path, so the swap is a
// rename.
const StagingSuffix = ".haul-staging"

// maxRestoreDepth bounds directory nesting in a restore stream: every open
// directory holds a file descriptor.
const maxRestoreDepth = 256

// Host is what a restore needs of the agent's config.
type Host struct {
	DataPaths   []string // absolute; each is staged and swapped
	SwapJournal string   // the state dir's record of a swap in progress
	Keep        int      // previous copies kept per data path
	// WriteMarker writes the ready marker a swap's journal carries (see
	// Stage.Swap); FinishSwap calls it once it has rolled a swap forward.
	WriteMarker func(marker json.RawMessage) error
}

// Stage is the snapshot's tree being built beside the live data, one
// staging directory per data path. Everything beneath a staging directory
// is created relative to an open directory descriptor with O_NOFOLLOW and
// O_EXCL (or mkdirat/symlinkat/mknodat, which never follow the last
// component), and every name is a single validated component, so no entry
// of the stream can land outside the staging directory and no symlink from
// the stream is ever followed.
type Stage struct {
	host Host
	root bool // running as root: restore owners and device nodes
	// AllowSpecial creates device nodes and keeps setuid/setgid bits of
	// non-directories; without it they are skipped and cleared, and
	// listed (devices, setid count them). Set it before the first Add.
	AllowSpecial   bool
	devices, setid int
	roots          []*stagingRoot
	nodes          []stagedNode // in stream order: parents before children
	stack          []openDir
	// ancestors holds the snapshot's nodes for the directories above the
	// data paths, by host path; used only to create missing ones.
	ancestors map[string]*proto.Node
	created   []string // ancestor directories this restore created
	// labelFailed: Swap could not rename some old data to its *.prev-*
	// name; the journal stays for FinishSwap.
	labelFailed bool

	need   map[proto.ID][]ChunkLoc // chunks still to receive
	wanted []proto.ID              // need's keys, in first-use order
	links  map[inodeKey]int        // first node of each hard-linked inode

	files, dirs, bytes, chunks int64
	warnings                   []string
}

// stagingRoot is one data path's staging directory.
type stagingRoot struct {
	dataPath string
	staging  string // <dataPath>.haul-staging
	fd       int    // open directory descriptor of staging, -1 when closed
	dev      uint64 // the file system's device
	node     int    // index of the data path's own node
	seen     bool
	bytes    int64 // file bytes to write
	entries  int64
}

// stagedNode is one entry beneath (or being) a staging directory.
type stagedNode struct {
	root   int
	rel    string // path below the staging directory; "" is the directory itself
	n      *proto.Node
	linkOf int // ≥ 0: created as a hard link to nodes[linkOf]
}

// ChunkLoc is where a chunk's bytes go: a file node and an offset.
type ChunkLoc struct {
	node int
	off  int64
}

type inodeKey struct {
	root      int
	dev, inod uint64
}

type dirKind int

const (
	dirTop      dirKind = iota // the stream's "/"
	dirAncestor                // above a data path: nothing is created
	dirData                    // a data path or beneath it: created in staging
)

// openDir is a directory the stream has opened and not yet closed.
type openDir struct {
	kind dirKind
	path string // host path ("" for "/")
	root int
	rel  string
	fd   int // dirData: the created directory, open
	last []byte
}

// NewStage starts a staging tree for h's data paths; nothing is created
// before the first Add.
func NewStage(h Host) *Stage {
	s := &Stage{
		host:      h,
		root:      os.Geteuid() == 0,
		ancestors: map[string]*proto.Node{},
		need:      map[proto.ID][]ChunkLoc{},
		links:     map[inodeKey]int{},
		stack:     []openDir{{kind: dirTop, fd: -1}},
	}
	for _, p := range h.DataPaths {
		s.roots = append(s.roots, &stagingRoot{dataPath: p, staging: p + StagingSuffix, fd: -1, node: -1})
	}
	return s
}

// CheckPaths refuses data paths the swap could not handle, before anything
// is written.
func (s *Stage) CheckPaths() error {
	for _, r := range s.roots {
		fi, err := os.Lstat(r.dataPath)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue // a fresh host: the swap just renames staging into place
		case err != nil:
			return proto.Errorf(proto.CodeIO, "data path %s: %v", r.dataPath, err)
		case !fi.IsDir():
			return proto.Errorf(proto.CodeRefused, "data path %s is a %s, not a directory; set data_paths to the real directory. Nothing was changed", r.dataPath, typeName(fi.Mode()))
		}
		var st, pst unix.Stat_t
		if err := unix.Lstat(r.dataPath, &st); err != nil {
			return proto.Errorf(proto.CodeIO, "data path %s: %v", r.dataPath, err)
		}
		if err := unix.Stat(filepath.Dir(r.dataPath), &pst); err != nil {
			return proto.Errorf(proto.CodeIO, "parent of data path %s: %v", r.dataPath, err)
		}
		if st.Dev != pst.Dev {
			return proto.Errorf(proto.CodeRefused, "data path %s is a mount point: a restore stages beside it and swaps by rename, which cannot cross file systems. "+
				"Make the data path a directory inside the mount (for example %s/data). Nothing was changed", r.dataPath, r.dataPath)
		}
	}
	return nil
}

func typeName(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "file"
	}
	return m.Type().String()
}

// Add takes one node of the stream.
func (s *Stage) Add(n *proto.Node) error {
	if err := n.Validate(); err != nil {
		return proto.Errorf(proto.CodeRefused, "snapshot refused: %v (below %s)", err, s.where())
	}
	top := &s.stack[len(s.stack)-1]
	if bytes.Compare(n.Name, top.last) <= 0 {
		return proto.Errorf(proto.CodeRefused, "snapshot refused: %q in %s is out of order or appears twice", n.Name, s.where())
	}
	top.last = append(top.last[:0], n.Name...)
	path := top.path + "/" + string(n.Name)
	if n.Type == proto.NodeDir {
		s.dirs++
	}
	if top.kind != dirData {
		return s.addAbove(n, path)
	}
	if len(s.stack) > maxRestoreDepth {
		return proto.Errorf(proto.CodeRefused, "snapshot refused: %s is nested deeper than %d directories", path, maxRestoreDepth)
	}
	rel := string(n.Name)
	if top.rel != "" {
		rel = top.rel + "/" + rel
	}
	if !s.AllowSpecial && s.special(n, s.roots[top.root].dataPath+"/"+rel) {
		return nil
	}
	idx := len(s.nodes)
	s.nodes = append(s.nodes, stagedNode{root: top.root, rel: rel, n: n, linkOf: -1})
	r := s.roots[top.root]
	r.entries++
	if err := s.create(top.fd, idx); err != nil {
		return err
	}
	return nil
}

// maxSpecialListed bounds the warnings about special files of each kind.
const maxSpecialListed = 50

// special skips a device node (true: not created) and clears the setuid
// and setgid bits of anything but a directory (on a directory setgid only
// passes its group on to new entries), listing what it did.
func (s *Stage) special(n *proto.Node, path string) bool {
	const setid = uint32(os.ModeSetuid | os.ModeSetgid)
	switch {
	case n.Type == proto.NodeDev || n.Type == proto.NodeCharDev:
		s.devices++
		if s.devices <= maxSpecialListed {
			s.Warn("device node %s skipped (restore it with --allow-special)", path)
		}
		return true
	case n.Type != proto.NodeDir && n.Mode&setid != 0:
		n.Mode &^= setid
		s.setid++
		if s.setid <= maxSpecialListed {
			s.Warn("setuid/setgid bits of %s cleared (keep them with --allow-special)", path)
		}
	}
	return false
}

// SpecialSummary adds the counts past the listed warnings.
func (s *Stage) SpecialSummary() {
	if n := s.devices - maxSpecialListed; n > 0 {
		s.Warn("%d more device nodes skipped", n)
	}
	if n := s.setid - maxSpecialListed; n > 0 {
		s.Warn("setuid/setgid bits of %d more files cleared", n)
	}
}

// where names the directory the stream is in, for errors.
func (s *Stage) where() string {
	p := s.stack[len(s.stack)-1].path
	if p == "" {
		return "/"
	}
	return p
}

// addAbove handles a node at or above the data paths: the directories
// leading to a data path, or a data path itself. Anything else is outside
// the data root and refused.
func (s *Stage) addAbove(n *proto.Node, path string) error {
	for i, r := range s.roots {
		if path != r.dataPath {
			continue
		}
		if n.Type != proto.NodeDir {
			return proto.Errorf(proto.CodeRefused, "snapshot refused: data path %s is a %s in the snapshot, not a directory", path, n.Type)
		}
		if r.seen {
			return proto.Errorf(proto.CodeRefused, "snapshot refused: data path %s appears twice", path)
		}
		r.seen = true
		if err := s.openStaging(i, n); err != nil {
			return err
		}
		r.node = len(s.nodes)
		s.nodes = append(s.nodes, stagedNode{root: i, rel: "", n: n, linkOf: -1})
		s.stack = append(s.stack, openDir{kind: dirData, path: path, root: i, fd: r.fd})
		return nil
	}
	for _, r := range s.roots {
		if strings.HasPrefix(r.dataPath, path+"/") {
			if n.Type != proto.NodeDir {
				return proto.Errorf(proto.CodeRefused, "snapshot refused: %s leads to data path %s but is a %s", path, r.dataPath, n.Type)
			}
			s.ancestors[path] = n
			s.stack = append(s.stack, openDir{kind: dirAncestor, path: path, fd: -1})
			return nil
		}
	}
	return proto.Errorf(proto.CodeRefused, "snapshot refused: it holds %s, which is outside this agent's data paths (%s)", path, strings.Join(s.host.DataPaths, ", "))
}

// Leave closes the directory opened last.
func (s *Stage) Leave() error {
	if len(s.stack) < 2 {
		return proto.Errorf(proto.CodeProtocol, "dir-end without an open directory")
	}
	top := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	// A data path's own descriptor stays open for the rest of the restore;
	// the directories below it are closed when the stream leaves them.
	if top.kind == dirData && top.rel != "" {
		unix.Close(top.fd)
	}
	return nil
}

// openStaging creates the staging directory of data path i: the parents
// of the data path (trusted: they come from the agent's config) are created
// if missing, a staging directory left by an interrupted restore is
// removed.
func (s *Stage) openStaging(i int, n *proto.Node) error {
	r := s.roots[i]
	if err := s.ensureParents(filepath.Dir(r.dataPath)); err != nil {
		return err
	}
	if _, err := os.Lstat(r.staging); err == nil {
		if err := os.RemoveAll(r.staging); err != nil {
			return proto.Errorf(proto.CodeIO, "remove %s left by an interrupted restore: %v", r.staging, err)
		}
	}
	if err := unix.Mkdir(r.staging, 0o700); err != nil {
		return s.ioErr(i, "create "+r.staging, err)
	}
	fd, err := unix.Open(r.staging, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return s.ioErr(i, "open "+r.staging, err)
	}
	r.fd = fd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return s.ioErr(i, "stat "+r.staging, err)
	}
	r.dev = st.Dev
	return nil
}

// ensureParents creates the missing directories of dir with the
// snapshot's modes and owners, remembering them so a failed or dry run
// removes them again.
func (s *Stage) ensureParents(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := s.ensureParents(filepath.Dir(dir)); err != nil {
		return err
	}
	mode := uint32(0o755)
	n := s.ancestors[dir]
	if n != nil {
		mode = permBits(n.Mode)
	}
	if err := unix.Mkdir(dir, mode); err != nil && !errors.Is(err, unix.EEXIST) {
		return proto.Errorf(proto.CodeIO, "create %s: %v", dir, err)
	}
	s.created = append(s.created, dir)
	if n != nil {
		if s.root {
			_ = unix.Lchown(dir, int(n.UID), int(n.GID))
		}
		_ = unix.Chmod(dir, mode) // umask
	}
	return nil
}

// create makes node idx in its parent directory pfd. Regular files are
// created empty; their chunks are written as they arrive.
func (s *Stage) create(pfd, idx int) error {
	sn := &s.nodes[idx]
	n := sn.n
	name := string(n.Name)
	var err error
	switch n.Type {
	case proto.NodeDir:
		if err = unix.Mkdirat(pfd, name, 0o700); err != nil {
			break
		}
		var fd int
		fd, err = unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		top := s.stack[len(s.stack)-1]
		s.stack = append(s.stack, openDir{kind: dirData, path: top.path + "/" + name, root: sn.root, rel: sn.rel, fd: fd})
	case proto.NodeFile:
		s.files++
		s.bytes += int64(n.Size)
		if fi, ok := s.hardLink(idx); ok {
			first := s.nodes[fi]
			var ofd int
			ofd, err = s.openParent(first.root, first.rel)
			if err == nil {
				err = unix.Linkat(ofd, filepath.Base(first.rel), pfd, name, 0)
				unix.Close(ofd)
			}
			break
		}
		var fd int
		fd, err = unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			break
		}
		unix.Close(fd)
		s.roots[sn.root].bytes += int64(n.Size)
		var off int64
		for _, c := range n.Chunks {
			locs, ok := s.need[c.ID]
			if !ok {
				s.wanted = append(s.wanted, c.ID)
			}
			s.need[c.ID] = append(locs, ChunkLoc{node: idx, off: off})
			off += int64(c.Length)
			s.chunks++
		}
	case proto.NodeSymlink:
		// symlinkat never follows anything: the target is stored as given,
		// absolute or not, and nothing is ever written through it.
		err = unix.Symlinkat(string(n.LinkTarget), pfd, name)
	case proto.NodeFifo:
		err = unix.Mknodat(pfd, name, unix.S_IFIFO|0o600, 0)
	case proto.NodeDev, proto.NodeCharDev:
		typ := uint32(unix.S_IFBLK)
		if n.Type == proto.NodeCharDev {
			typ = unix.S_IFCHR
		}
		err = unix.Mknodat(pfd, name, typ|0o600, int(n.Device))
		if errors.Is(err, unix.EPERM) {
			s.Warn("device node %s skipped: creating it needs root", s.hostPath(idx))
			s.drop(idx)
			return nil
		}
	case proto.NodeSocket:
		// A socket is recreated by the program that listens on it.
		s.Warn("socket %s skipped, as restic skips it", s.hostPath(idx))
		s.drop(idx)
		return nil
	}
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return proto.Errorf(proto.CodeRefused, "snapshot refused: %s appears twice", s.hostPath(idx))
		}
		return s.ioErr(sn.root, "create "+s.hostPath(idx), err)
	}
	return nil
}

// drop forgets node idx, the last one added, which was not created.
func (s *Stage) drop(idx int) {
	s.roots[s.nodes[idx].root].entries--
	s.nodes = s.nodes[:idx]
}

// hardLink reports the first node of the inode idx shares, if it is a hard
// link to a file already staged with the same content.
func (s *Stage) hardLink(idx int) (int, bool) {
	sn := s.nodes[idx]
	n := sn.n
	if n.Links < 2 || n.Inode == 0 {
		return 0, false
	}
	key := inodeKey{root: sn.root, dev: n.DeviceID, inod: n.Inode}
	first, ok := s.links[key]
	if !ok {
		s.links[key] = idx
		return 0, false
	}
	fn := s.nodes[first].n
	if fn.Size != n.Size || len(fn.Chunks) != len(n.Chunks) {
		return 0, false
	}
	for i := range n.Chunks {
		if fn.Chunks[i] != n.Chunks[i] {
			return 0, false
		}
	}
	s.nodes[idx].linkOf = first
	return first, true
}

func (s *Stage) Warn(format string, args ...any) {
	s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
}

// hostPath is where node idx will be once swapped in.
func (s *Stage) hostPath(idx int) string {
	sn := s.nodes[idx]
	if sn.rel == "" {
		return s.roots[sn.root].dataPath
	}
	return s.roots[sn.root].dataPath + "/" + sn.rel
}

// ioErr wraps a write failure; a full disk gets its own code and says how
// much room the restore needs.
func (s *Stage) ioErr(root int, what string, err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		r := s.roots[root]
		return proto.Errorf(proto.CodeNoSpace, "disk full on %s while staging the restore (%s): the snapshot needs %s there and %s is free now; "+
			"free space or grow the disk, then restore again. The live data is untouched and the staging copy was removed",
			r.dataPath, what, units.Bytes(r.bytes), units.Bytes(freeBytes(filepath.Dir(r.dataPath))))
	}
	return proto.Errorf(proto.CodeIO, "%s: %v", what, err)
}

// Finish checks the stream was complete and there is room for it.
func (s *Stage) Finish(end *proto.ManifestEnd) error {
	if len(s.stack) != 1 {
		return proto.Errorf(proto.CodeProtocol, "tree ended with %d directories open", len(s.stack)-1)
	}
	for _, r := range s.roots {
		if !r.seen {
			return proto.Errorf(proto.CodeRefused, "snapshot refused: it lacks data path %s", r.dataPath)
		}
	}
	if end.Files != s.files || end.Dirs != s.dirs || end.Bytes != s.bytes {
		return proto.Errorf(proto.CodeProtocol, "tree counts differ: puller sent %d files, %d dirs, %d bytes; agent received %d, %d, %d",
			end.Files, end.Dirs, end.Bytes, s.files, s.dirs, s.bytes)
	}
	return s.checkSpace()
}

// checkSpace compares what each file system must take with what it has
// free, so a restore that cannot fit fails before any chunk moves.
func (s *Stage) checkSpace() error {
	type fsNeed struct {
		need  int64
		paths []string
		dir   string
	}
	byDev := map[uint64]*fsNeed{}
	var devs []uint64
	for _, r := range s.roots {
		f := byDev[r.dev]
		if f == nil {
			f = &fsNeed{dir: r.staging}
			byDev[r.dev] = f
			devs = append(devs, r.dev)
		}
		// Whole blocks for data, one block per entry for metadata.
		f.need += r.bytes + r.entries*4096
		f.paths = append(f.paths, r.dataPath)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i] < devs[j] })
	for _, d := range devs {
		f := byDev[d]
		free := freeBytes(f.dir)
		if free >= 0 && f.need > free {
			return proto.Errorf(proto.CodeNoSpace, "disk full on %s: the restore needs %s for its staging copy beside the live data and %s is free. "+
				"Free space or grow the disk, then restore again (the live data stays in place until the swap, so a restore needs room for both). "+
				"The live data is untouched and the staging copy was removed",
				strings.Join(f.paths, ", "), units.Bytes(f.need), units.Bytes(free))
		}
	}
	return nil
}

// freeBytes is the space the agent may use on dir's file system (root may
// use the reserved blocks too); -1 if unknown.
func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return -1
	}
	if os.Geteuid() == 0 {
		return int64(st.Bfree) * int64(st.Bsize)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// openParent opens the directory holding rel below root's staging
// directory, without following any symlink on the way.
func (s *Stage) openParent(root int, rel string) (int, error) {
	dir := filepath.Dir(rel)
	if dir == "." {
		return unix.Dup(s.roots[root].fd)
	}
	return beneath.Open(s.roots[root].fd, dir, unix.O_RDONLY|unix.O_DIRECTORY, beneath.Refuse)
}

// openNode opens node idx's file below its staging directory.
func (s *Stage) openNode(idx int, flags int) (int, error) {
	sn := s.nodes[idx]
	if sn.rel == "" {
		return unix.Dup(s.roots[sn.root].fd)
	}
	return beneath.Open(s.roots[sn.root].fd, sn.rel, flags, beneath.Refuse)
}

// Remove deletes every staging directory and the parents this restore
// created: the state after a failed or dry run is the state before it.
func (s *Stage) Remove() error {
	s.CloseAll()
	var errs []error
	for _, r := range s.roots {
		if err := os.RemoveAll(r.staging); err != nil {
			errs = append(errs, fmt.Errorf("remove staging %s: %w", r.staging, err))
		}
	}
	for i := len(s.created) - 1; i >= 0; i-- {
		_ = os.Remove(s.created[i]) // only if still empty
	}
	return errors.Join(errs...)
}

// CloseAll closes every descriptor the stage holds.
func (s *Stage) CloseAll() {
	for _, d := range s.stack {
		if d.kind == dirData && d.rel != "" {
			unix.Close(d.fd)
		}
	}
	s.stack = s.stack[:1]
	for _, r := range s.roots {
		if r.fd >= 0 {
			unix.Close(r.fd)
			r.fd = -1
		}
	}
}

// permBits turns Go mode bits into chmod's: permissions, setuid, setgid,
// sticky.
func permBits(m uint32) uint32 {
	fm := os.FileMode(m)
	b := uint32(fm.Perm())
	if fm&os.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if fm&os.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if fm&os.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// Wanted returns the chunks the staged tree needs, in first-use order.
func (s *Stage) Wanted() []proto.ID { return s.wanted }

// Take returns where chunk id goes and marks it received; ok is false for
// a chunk not asked for or already received.
func (s *Stage) Take(id proto.ID) (locs []ChunkLoc, ok bool) {
	locs, ok = s.need[id]
	delete(s.need, id)
	return locs, ok
}

// Missing is the number of wanted chunks not received yet.
func (s *Stage) Missing() int { return len(s.need) }

// Counts returns the staged tree's files, directories and file bytes.
func (s *Stage) Counts() (files, dirs, bytes int64) { return s.files, s.dirs, s.bytes }

// Warnings returns what Warn recorded.
func (s *Stage) Warnings() []string { return s.warnings }

// WriteChunk writes a verified chunk at one of its places.
func (s *Stage) WriteChunk(l ChunkLoc, plain []byte) error {
	sn := s.nodes[l.node]
	fd, err := s.openNode(l.node, unix.O_WRONLY)
	if err != nil {
		return s.ioErr(sn.root, "open "+s.hostPath(l.node), err)
	}
	defer unix.Close(fd)
	for off, p := l.off, plain; len(p) > 0; {
		n, err := unix.Pwrite(fd, p, off)
		if err != nil {
			return s.ioErr(sn.root, "write "+s.hostPath(l.node), err)
		}
		p, off = p[n:], off+int64(n)
	}
	// Start writing it to disk now, while more chunks arrive, so the sync
	// before the swap has little left to wait for. Only a hint: errors
	// surface at that sync.
	_ = unix.SyncFileRange(fd, l.off, int64(len(plain)), unix.SYNC_FILE_RANGE_WRITE)
	return nil
}

// Special reports how many device nodes were skipped and how many files'
// setuid/setgid bits cleared.
func (s *Stage) Special() (devices, setid int) { return s.devices, s.setid }
