// Package beneath opens paths below a directory descriptor so that no
// name, "..", absolute path or symlink can lead outside it. The restore
// stages files with it and the sftp view resolves requests with it.
package beneath

import (
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Symlinks says what a symlink on the way means.
type Symlinks int

const (
	// Refuse fails on any symlink on the path (ELOOP).
	Refuse Symlinks = iota
	// Inside follows symlinks while they resolve below the directory;
	// it needs openat2, so without it a symlink is refused. A final
	// symlink is returned itself when flags has O_PATH|O_NOFOLLOW.
	Inside
)

// openat2Missing is set once the kernel turned out to have no openat2
// (before Linux 5.6).
var openat2Missing atomic.Bool

// WithoutOpenat2 makes Open act as on a kernel without openat2 until the
// returned function is called (tests).
func WithoutOpenat2() (restore func()) {
	old := openat2Missing.Swap(true)
	return func() { openat2Missing.Store(old) }
}

// Open opens rel below dirfd with flags (O_CLOEXEC is added). openat2 does
// it in the kernel, RESOLVE_BENEATH with no magic links and no mount
// crossings; EAGAIN and EINTR (a concurrent rename) are retried a few
// times. Without openat2 each component is opened with O_NOFOLLOW and any
// symlink on the way is refused (ELOOP). A path that tries to leave —
// "..", an empty component, an absolute path — fails with EXDEV.
func Open(dirfd int, rel string, flags int, links Symlinks) (int, error) {
	flags |= unix.O_CLOEXEC
	if !openat2Missing.Load() {
		resolve := uint64(unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV)
		if links == Refuse {
			resolve |= unix.RESOLVE_NO_SYMLINKS
		}
		how := unix.OpenHow{Flags: uint64(flags), Resolve: resolve}
		var err error
		for range 8 {
			var fd int
			fd, err = unix.Openat2(dirfd, rel, &how)
			if err != unix.EAGAIN && err != unix.EINTR {
				if err != unix.ENOSYS {
					return fd, err
				}
				break
			}
		}
		if err != unix.ENOSYS {
			return -1, err
		}
		openat2Missing.Store(true)
	}
	return walk(dirfd, rel, flags)
}

// walk is Open for kernels without openat2.
func walk(dirfd int, rel string, flags int) (int, error) {
	cur, err := unix.Openat(dirfd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, name := range parts {
		last := i == len(parts)-1
		if name == "." && !last {
			continue
		}
		if name == ".." || name == "" {
			unix.Close(cur)
			return -1, unix.EXDEV
		}
		if last && flags&unix.O_PATH == 0 {
			// The final open itself: O_NOFOLLOW makes a symlink ELOOP.
			fd, err := unix.Openat(cur, name, flags|unix.O_NOFOLLOW, 0)
			unix.Close(cur)
			return fd, err
		}
		next, err := unix.Openat(cur, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			return -1, err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK && (!last || flags&unix.O_NOFOLLOW == 0) {
			unix.Close(next)
			return -1, unix.ELOOP
		}
		cur = next
	}
	return cur, nil
}
