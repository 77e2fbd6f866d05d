// Package sftpview serves haul-agent's sftp verb: the mirror, read only.
package sftpview

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haulproject/haul/agent/internal/beneath"
	"github.com/haulproject/haul/internal/flock"
	"github.com/pkg/sftp"
	"golang.org/x/sys/unix"
)

// The view serves the mirror — the copy the last backup froze — read
// only, so an operator can look at what the VPS hands over and fetch a
// file with sftp, sshfs or WinSCP using the backup key. The view's root is
// the file system root as on the host, holding only the data paths and the
// directories leading to them.
//
// Every path is resolved inside the mirror with openat2(RESOLVE_BENEATH):
// ".." and symlinks cannot leave it (absolute symlinks are never followed,
// relative ones only while they stay below the mirror), and the resolved
// object's real path is checked against the view once more before use.
// Nothing is ever opened for writing; every request that would change
// something is answered "permission denied", also for a key whose forced
// command has --allow-restore.
//
// Consistency: a backup session rewrites the mirror (a pre-sync while the
// services run, then the frozen sync) under the state dir's lock. The view
// takes the same lock shared, and only for the moment it resolves, opens,
// lists or stats something: a backup waits at most that long. A request
// made while a backup or restore session holds the lock waits up to
// sftpLockWait, then fails with a message saying so. A file opened under
// the lock keeps its content while it is read or fails the read: the
// mirror patches a changed file's blocks in place (or renames a new copy
// over it), and a read that a patch overlapped is refused (mirrorFile).

// sftpLockWait bounds how long one request waits for a running backup or
// restore session to release the state dir's lock.
var sftpLockWait = 10 * time.Second

// Mirror says which mirror the view shows.
type Mirror struct {
	Host      string   // for messages
	Dir       string   // the mirror directory
	DataPaths []string // absolute paths as on the host; the view shows only these
	LockPath  string   // the state dir's session lock, taken shared
}

// Serve serves the read-only view on sshd's streams until the client
// closes them or ctx is cancelled. Writes are refused whatever the key's
// forced command allows.
func Serve(ctx context.Context, m Mirror, in io.Reader, out io.Writer) error {
	v, err := openMirrorView(m)
	if err != nil {
		return err
	}
	defer v.Close()
	rs := sftp.NewRequestServer(sftpStream{in, out}, sftp.Handlers{FileGet: v, FilePut: v, FileCmd: v, FileList: v})
	done := make(chan error, 1)
	go func() { done <- rs.Serve() }()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("sftp session: %w", err)
	case <-ctx.Done():
		rs.Close()
		return ctx.Err()
	}
}

// sftpStream joins sshd's pipes into the ReadWriteCloser pkg/sftp wants.
type sftpStream struct {
	io.Reader
	io.Writer
}

func (s sftpStream) Close() error {
	if c, ok := s.Writer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// mirrorView implements pkg/sftp's request handlers over the mirror.
type mirrorView struct {
	rootFD    int    // O_PATH descriptor of the mirror directory
	rootPath  string // its real path, for the resolved-path check
	dataPaths []string
	lock      *sharedLock
}

func openMirrorView(m Mirror) (*mirrorView, error) {
	root := m.Dir
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("%s has no mirror yet (%s): the sftp view shows the copy the last backup made; run `haul backup` first", m.Host, root)
	}
	if err != nil {
		return nil, fmt.Errorf("open mirror %s: %w", root, err)
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mirror %s: %w", root, err)
	}
	return &mirrorView{
		rootFD:    fd,
		rootPath:  real,
		dataPaths: m.DataPaths,
		// sessions that write the mirror hold this lock exclusively
		lock: &sharedLock{path: m.LockPath, wait: sftpLockWait},
	}, nil
}

func (v *mirrorView) Close() error {
	v.lock.close()
	return unix.Close(v.rootFD)
}

// visible reports whether view path p (clean, absolute) is shown: the root,
// a directory leading to a data path, a data path or anything below one.
// The mirror's temporary files are hidden, as the manifest skips them.
func (v *mirrorView) visible(p string) bool {
	if strings.Contains(p, "/.haul-tmp-") {
		return false
	}
	if p == "/" {
		return true
	}
	for _, dp := range v.dataPaths {
		if p == dp || strings.HasPrefix(p, dp+"/") || strings.HasPrefix(dp, p+"/") {
			return true
		}
	}
	return false
}

// pkg/sftp takes the status code from a *os.PathError only when its Err is
// a syscall.Errno; refusals are built with errno so the client shows
// "Permission denied", and the text goes in the status message.
func refusal(op, p, why string) error {
	return &os.PathError{Op: "read-only mirror view: " + op + " refused (" + why + ")", Path: p, Err: unix.EACCES}
}

// resolve opens view path p as an O_PATH descriptor inside the mirror and
// returns it with the view path it really resolved to. With follow, a final
// symlink is followed (within the mirror); without, the link itself is
// returned. The caller holds the lock.
func (v *mirrorView) resolve(op, p string, follow bool) (int, string, error) {
	p = path.Clean("/" + p)
	if strings.IndexByte(p, 0) >= 0 {
		return -1, "", refusal(op, p, "NUL in path")
	}
	if !v.visible(p) {
		return -1, "", &os.PathError{Op: op, Path: p, Err: unix.ENOENT}
	}
	rel := strings.TrimPrefix(p, "/")
	if rel == "" {
		rel = "."
	}
	flags := unix.O_PATH
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := beneath.Open(v.rootFD, rel, flags, beneath.Inside)
	switch {
	case err == nil:
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
		return -1, "", refusal(op, p, "the path leaves the mirror through a symlink")
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return -1, "", &os.PathError{Op: op, Path: p, Err: unix.ENOENT}
	default:
		return -1, "", &os.PathError{Op: op, Path: p, Err: err}
	}
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("%s %s: cannot check where it resolved (is /proc mounted?): %w", op, p, err)
	}
	var virt string
	switch {
	case real == v.rootPath:
		virt = "/"
	case strings.HasPrefix(real, v.rootPath+"/"):
		virt = strings.TrimPrefix(real, v.rootPath)
	}
	if virt == "" || !v.visible(virt) {
		unix.Close(fd)
		return -1, "", refusal(op, p, "it resolves outside the data paths")
	}
	return fd, virt, nil
}

// Fileread opens a regular file for a get.
func (v *mirrorView) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	unlock, err := v.lock.acquire(r.Context())
	if err != nil {
		return nil, err
	}
	defer unlock()
	fd, _, err := v.resolve("open", r.Filepath, true)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: unix.EISDIR}
	default:
		// Opening a device or fifo copy would reach the device or block.
		return nil, refusal("open", r.Filepath, "only regular files can be read")
	}
	// Reopen the very inode resolved above for reading; O_PATH cannot read.
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: err}
	}
	var st2 unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st2); err != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
		f.Close()
		return nil, refusal("open", r.Filepath, "the file changed while it was opened")
	}
	if st2.Nlink != 1 {
		return f, nil // the mirror patches only files with one name
	}
	return &mirrorFile{File: f, ctime: st2.Ctim, size: st2.Size, path: r.Filepath}, nil
}

// mirrorFile fails a read once a backup has updated the copy in place
// (the mirror patches changed blocks of a file it already holds): the
// client gets an error to retry, never a mix of two versions.
type mirrorFile struct {
	*os.File
	ctime unix.Timespec
	size  int64
	path  string
}

func (f *mirrorFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(b, off)
	var st unix.Stat_t
	// A copy renamed over (nlink 0) keeps its content; one still linked
	// whose ctime moved was patched.
	if serr := unix.Fstat(int(f.Fd()), &st); serr != nil || (st.Nlink > 0 && (st.Ctim != f.ctime || st.Size != f.size)) {
		return 0, refusal("read", f.path, "a backup updated the file while it was read; read it again")
	}
	return n, err
}

// Filewrite refuses: the view is read-only.
func (v *mirrorView) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return nil, refusal("write", r.Filepath, "the view is read-only")
}

// Filecmd refuses setstat, rename, rmdir, mkdir, link, symlink and remove.
func (v *mirrorView) Filecmd(r *sftp.Request) error {
	p := r.Filepath
	if r.Method == "Symlink" { // pkg/sftp puts the new link's path in Target
		p = r.Target
	}
	return refusal(strings.ToLower(r.Method), p, "the view is read-only")
}

// Filelist answers List (a directory's entries, not following symlinks in
// them), Stat and Readlink.
func (v *mirrorView) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		return v.list(r)
	case "Stat":
		return v.stat(r, "stat", true)
	case "Readlink":
		t, err := v.Readlink(r.Filepath)
		if err != nil {
			return nil, err
		}
		return listerAt{fileInfo{name: t}}, nil
	}
	return nil, refusal(strings.ToLower(r.Method), r.Filepath, "unsupported request")
}

// Lstat answers lstat without following a final symlink.
func (v *mirrorView) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	return v.stat(r, "lstat", false)
}

// Readlink returns a symlink's target as stored; nothing is resolved.
func (v *mirrorView) Readlink(p string) (string, error) {
	unlock, err := v.lock.acquire(context.Background())
	if err != nil {
		return "", err
	}
	defer unlock()
	fd, _, err := v.resolve("readlink", p, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: p, Err: unix.EINVAL}
	}
	return string(buf[:n]), nil
}

func (v *mirrorView) stat(r *sftp.Request, op string, follow bool) (sftp.ListerAt, error) {
	unlock, err := v.lock.acquire(r.Context())
	if err != nil {
		return nil, err
	}
	defer unlock()
	fd, _, err := v.resolve(op, r.Filepath, follow)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: op, Path: r.Filepath, Err: err}
	}
	return listerAt{newFileInfo(path.Base(r.Filepath), &st)}, nil
}

func (v *mirrorView) list(r *sftp.Request) (sftp.ListerAt, error) {
	unlock, err := v.lock.acquire(r.Context())
	if err != nil {
		return nil, err
	}
	defer unlock()
	fd, virt, err := v.resolve("opendir", r.Filepath, true)
	if err != nil {
		return nil, err
	}
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	unix.Close(fd)
	if err != nil {
		return nil, &os.PathError{Op: "opendir", Path: r.Filepath, Err: err}
	}
	dir := os.NewFile(uintptr(dfd), r.Filepath)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: r.Filepath, Err: err}
	}
	sort.Strings(names)
	out := make(listerAt, 0, len(names))
	for _, name := range names {
		if !v.visible(path.Join(virt, name)) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // removed since readdir
		}
		out = append(out, newFileInfo(name, &st))
	}
	return out, nil
}

// listerAt serves a list read under the lock.
type listerAt []os.FileInfo

func (l listerAt) ListAt(buf []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(buf, l[off:])
	if n < len(buf) {
		return n, io.EOF
	}
	return n, nil
}

// fileInfo is an lstat/fstat result; Uid and Gid make pkg/sftp send them.
type fileInfo struct {
	name string
	st   unix.Stat_t
}

func newFileInfo(name string, st *unix.Stat_t) fileInfo { return fileInfo{name: name, st: *st} }

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.st.Size }
func (fi fileInfo) ModTime() time.Time { return time.Unix(fi.st.Mtim.Unix()) }
func (fi fileInfo) IsDir() bool        { return fi.Mode().IsDir() }
func (fi fileInfo) Sys() any           { return nil }
func (fi fileInfo) Uid() uint32        { return fi.st.Uid }
func (fi fileInfo) Gid() uint32        { return fi.st.Gid }

func (fi fileInfo) Mode() os.FileMode {
	m := os.FileMode(fi.st.Mode & 0o777)
	switch fi.st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= os.ModeDir
	case unix.S_IFLNK:
		m |= os.ModeSymlink
	case unix.S_IFIFO:
		m |= os.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= os.ModeSocket
	case unix.S_IFBLK:
		m |= os.ModeDevice
	case unix.S_IFCHR:
		m |= os.ModeDevice | os.ModeCharDevice
	}
	if fi.st.Mode&unix.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if fi.st.Mode&unix.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if fi.st.Mode&unix.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// sharedLock holds the state dir's lock shared while at least one request
// is resolving or listing. flock belongs to the open file, not to a
// goroutine, so concurrent requests share one hold through a count.
type sharedLock struct {
	path string
	wait time.Duration

	mu   sync.Mutex
	held *flock.Lock
	n    int
}

func (l *sharedLock) acquire(ctx context.Context) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		held, err := flock.Acquire(ctx, l.path, flock.Options{Shared: true, Wait: l.wait})
		if errors.Is(err, flock.ErrHeld) {
			return nil, fmt.Errorf("a backup or restore session (pid %s) is updating the mirror and holds %s; try again when it is done", flock.Holder(l.path), l.path)
		}
		if err != nil {
			return nil, err
		}
		l.held = held
	}
	l.n++
	return l.release, nil
}

func (l *sharedLock) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if l.n == 0 {
		l.held.Unlock()
		l.held = nil
	}
}

// close drops a hold left by requests that never released it.
func (l *sharedLock) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held != nil {
		l.held.Unlock()
		l.held = nil
	}
}
