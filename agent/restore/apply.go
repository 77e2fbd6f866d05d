package restore

import (
	"context"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"

	"github.com/haulproject/haul/proto"
	"golang.org/x/sys/unix"
)

// Sync makes everything staged so far durable, once per file system.
func (st *Stage) Sync() error {
	done := map[uint64]bool{}
	for i, r := range st.roots {
		if done[r.dev] || r.fd < 0 {
			continue
		}
		done[r.dev] = true
		if err := unix.Syncfs(r.fd); err != nil {
			return st.ioErr(i, "sync "+r.staging, err)
		}
	}
	return nil
}

// verifyJob is one chunk of a staged file to read back.
type verifyJob struct {
	node int
	off  int64
	ref  proto.ChunkRef
}

// Verify reads every staged file back after the sync: its size must be the
// snapshot's, and each chunk must hash to its ID. A chunk is verified when
// it arrives; this catches what went wrong between memory and disk.
func (st *Stage) Verify(ctx context.Context) error {
	workers := max(1, min(runtime.GOMAXPROCS(0), 4))
	jobs := make(chan verifyJob, workers*2)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		verr error
	)
	fail := func(err error) {
		mu.Lock()
		if verr == nil {
			verr = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return verr != nil
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := range jobs {
				if failed() {
					continue
				}
				if cap(buf) < int(j.ref.Length) {
					buf = make([]byte, j.ref.Length)
				}
				if err := st.verifyChunk(j, buf[:j.ref.Length]); err != nil {
					fail(err)
				}
			}
		}()
	}
feed:
	for idx, sn := range st.nodes {
		if sn.n.Type != proto.NodeFile {
			continue
		}
		if err := st.checkSize(idx); err != nil {
			fail(err)
			break
		}
		if sn.linkOf >= 0 {
			continue
		}
		var off int64
		for _, c := range sn.n.Chunks {
			if ctx.Err() != nil || failed() {
				break feed
			}
			jobs <- verifyJob{node: idx, off: off, ref: c}
			off += int64(c.Length)
		}
	}
	close(jobs)
	wg.Wait()
	if verr != nil {
		return verr
	}
	return ctx.Err()
}

func (st *Stage) checkSize(idx int) error {
	sn := st.nodes[idx]
	fd, err := st.openNode(idx, unix.O_RDONLY)
	if err != nil {
		return st.ioErr(sn.root, "open "+st.hostPath(idx), err)
	}
	defer unix.Close(fd)
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return st.ioErr(sn.root, "stat "+st.hostPath(idx), err)
	}
	if s.Mode&unix.S_IFMT != unix.S_IFREG || uint64(s.Size) != sn.n.Size {
		return proto.Errorf(proto.CodeVerify, "staged %s has %d bytes, the snapshot says %d; restore again", st.hostPath(idx), s.Size, sn.n.Size)
	}
	return nil
}

func (st *Stage) verifyChunk(j verifyJob, buf []byte) error {
	sn := st.nodes[j.node]
	fd, err := st.openNode(j.node, unix.O_RDONLY)
	if err != nil {
		return st.ioErr(sn.root, "open "+st.hostPath(j.node), err)
	}
	defer unix.Close(fd)
	for got := 0; got < len(buf); {
		n, err := unix.Pread(fd, buf[got:], j.off+int64(got))
		if err != nil {
			return st.ioErr(sn.root, "read back "+st.hostPath(j.node), err)
		}
		if n == 0 {
			return proto.Errorf(proto.CodeVerify, "staged %s ends before offset %d", st.hostPath(j.node), j.off+int64(len(buf)))
		}
		got += n
	}
	if proto.Hash(buf) != j.ref.ID {
		return proto.Errorf(proto.CodeVerify, "staged %s does not match chunk %s at offset %d after writing (disk or memory error?); restore again", st.hostPath(j.node), j.ref.ID.Short(), j.off)
	}
	return nil
}

// ApplyMetadata gives every staged entry the snapshot's owner, mode and
// times. It walks the nodes in reverse stream order, so each directory is
// done after everything in it (whose creation changed its mtime). chown
// comes before chmod, which would otherwise lose setuid and setgid bits.
// Owners are restored only when the agent runs as root.
func (st *Stage) ApplyMetadata() error {
	cacheKey, cacheFd := "", -1
	defer func() {
		if cacheFd >= 0 {
			unix.Close(cacheFd)
		}
	}()
	for i := len(st.nodes) - 1; i >= 0; i-- {
		sn := st.nodes[i]
		r := st.roots[sn.root]
		var key, name string
		if sn.rel == "" {
			key, name = "\x00"+filepath.Dir(r.staging), filepath.Base(r.staging)
		} else {
			key, name = strconv.Itoa(sn.root)+"/"+filepath.Dir(sn.rel), filepath.Base(sn.rel)
		}
		if key != cacheKey {
			if cacheFd >= 0 {
				unix.Close(cacheFd)
				cacheFd = -1
			}
			var fd int
			var err error
			if sn.rel == "" {
				fd, err = unix.Open(filepath.Dir(r.staging), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			} else {
				fd, err = st.openParent(sn.root, sn.rel)
			}
			if err != nil {
				return st.ioErr(sn.root, "open the directory of "+st.hostPath(i), err)
			}
			cacheKey, cacheFd = key, fd
		}
		if err := st.setMeta(cacheFd, name, sn.n); err != nil {
			return st.ioErr(sn.root, "set owner, mode and times of "+st.hostPath(i), err)
		}
	}
	return nil
}

// setMeta applies n's metadata to the entry name in directory pfd. The
// entry was created by this restore with n's type, so only a symlink can be
// a symlink: chmod is never applied to one (it would follow it).
func (st *Stage) setMeta(pfd int, name string, n *proto.Node) error {
	if st.root {
		if err := unix.Fchownat(pfd, name, int(n.UID), int(n.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if n.Type != proto.NodeSymlink {
		if err := unix.Fchmodat(pfd, name, permBits(n.Mode), 0); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(n.ATime), unix.NsecToTimespec(n.MTime)}
	return unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}
