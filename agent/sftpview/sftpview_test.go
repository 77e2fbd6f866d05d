package sftpview

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/agent/internal/beneath"
	"github.com/pkg/sftp"
	"golang.org/x/sys/unix"
)

// sftpFixture is a mirror holding a data path with the cases the view must
// get right, served in-process to pkg/sftp's client.
type sftpFixture struct {
	cfg    Mirror
	state  string // the state dir holding the mirror and the lock
	data   string // the data path (as on the host)
	mirror string // its copy in the mirror
	client *sftp.Client
}

func newSFTPFixture(t *testing.T) *sftpFixture {
	t.Helper()
	root := t.TempDir()
	f := &sftpFixture{data: "/srv/app/data"}
	f.state = filepath.Join(root, "state")
	f.cfg = Mirror{Host: "vps", Dir: filepath.Join(f.state, "mirror"), DataPaths: []string{f.data}, LockPath: filepath.Join(f.state, "lock")}
	f.mirror = filepath.Join(f.cfg.Dir, f.data)
	m := f.mirror
	mustT(t, os.MkdirAll(filepath.Join(m, "sub"), 0o755))
	mustT(t, os.WriteFile(filepath.Join(m, "config.yml"), []byte("secret: 1\n"), 0o600))
	mustT(t, os.WriteFile(filepath.Join(m, "sub", "deep.txt"), []byte("deep\n"), 0o644))
	mustT(t, os.Symlink("sub/deep.txt", filepath.Join(m, "inside-link")))
	mustT(t, os.Symlink("sub", filepath.Join(m, "inside-dir-link")))
	mustT(t, os.Symlink("/etc", filepath.Join(m, "etc-link")))
	mustT(t, os.Symlink("/etc/passwd", filepath.Join(m, "passwd-link")))
	mustT(t, os.Symlink("../../../../../../../../etc/passwd", filepath.Join(m, "dotdot-link")))
	mustT(t, os.Symlink("../../../../lock", filepath.Join(m, "state-link"))) // state/lock: in the state dir, not in the mirror
	mustT(t, os.Symlink("../other/x", filepath.Join(m, "sibling-link")))     // in the mirror, outside the data path
	mustT(t, unix.Mkfifo(filepath.Join(m, "fifo"), 0o600))
	mustT(t, os.WriteFile(filepath.Join(m, ".haul-tmp-config.yml"), []byte("half"), 0o600))
	// A leftover beside the data path: in the mirror but not in the view.
	mustT(t, os.MkdirAll(filepath.Join(f.cfg.Dir, "srv", "app", "other"), 0o755))
	mustT(t, os.WriteFile(filepath.Join(f.cfg.Dir, "srv", "app", "other", "x"), []byte("stale"), 0o644))
	mustT(t, os.WriteFile(filepath.Join(f.state, "chunks.cache"), []byte("state"), 0o600))

	c2s, s2c := newPipe(t), newPipe(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := Serve(ctx, f.cfg, c2s.r, s2c.w)
		s2c.w.Close() // as sshd closes the channel when the agent exits
		done <- err
	}()
	client, err := sftp.NewClientPipe(s2c.r, c2s.w)
	mustT(t, err)
	f.client = client
	t.Cleanup(func() {
		client.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			cancel()
			t.Errorf("Serve did not return after the client closed")
		}
		cancel()
	})
	return f
}

type pipe struct {
	r *os.File
	w *os.File
}

func newPipe(t *testing.T) pipe {
	r, w, err := os.Pipe()
	mustT(t, err)
	t.Cleanup(func() { r.Close(); w.Close() })
	return pipe{r, w}
}

func mustT(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func names(fis []os.FileInfo) string {
	var n []string
	for _, fi := range fis {
		n = append(n, fi.Name())
	}
	sort.Strings(n)
	return strings.Join(n, " ")
}

func TestSFTPViewReads(t *testing.T) {
	f := newSFTPFixture(t)
	c := f.client

	for dir, want := range map[string]string{
		"/":         "srv",
		"/srv":      "app",
		"/srv/app":  "data", // "other" is in the mirror but not a data path
		f.data:      "config.yml dotdot-link etc-link fifo inside-dir-link inside-link passwd-link sibling-link state-link sub",
		"/srv/../":  "srv",
		"../../srv": "app",
	} {
		fis, err := c.ReadDir(dir)
		if err != nil {
			t.Fatalf("ReadDir %s: %v", dir, err)
		}
		if got := names(fis); got != want {
			t.Errorf("ReadDir %s = %q, want %q", dir, got, want)
		}
	}

	get := func(p string) ([]byte, error) {
		fh, err := c.Open(p)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		return io.ReadAll(fh)
	}
	for p, want := range map[string]string{
		f.data + "/config.yml":               "secret: 1\n",
		f.data + "/inside-link":              "deep\n", // a relative link within the mirror is followed
		f.data + "/inside-dir-link/deep.txt": "deep\n",
	} {
		b, err := get(p)
		if err != nil || string(b) != want {
			t.Errorf("get %s = %q, %v; want %q", p, b, err, want)
		}
	}
	fi, err := c.Stat(f.data + "/config.yml")
	if err != nil || fi.Size() != 10 || fi.Mode().Perm() != 0o600 || fi.IsDir() {
		t.Errorf("stat config.yml = %+v, %v", fi, err)
	}
	fi, err = c.Lstat(f.data + "/etc-link")
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("lstat etc-link = %v, %v; want a symlink", fi, err)
	}
	if tgt, err := c.ReadLink(f.data + "/etc-link"); err != nil || tgt != "/etc" {
		t.Errorf("readlink etc-link = %q, %v", tgt, err)
	}

	// Nothing outside the data paths is reachable.
	for _, p := range []string{
		"/etc/passwd", "../../etc/passwd", f.data + "/../../../../etc/passwd",
		"/srv/app/other/x", f.data + "/.haul-tmp-config.yml", "/lock", "/../chunks.cache",
	} {
		if _, err := get(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("get %s: %v, want does not exist", p, err)
		}
		if _, err := c.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v, want does not exist", p, err)
		}
	}
	for _, p := range []string{
		f.data + "/etc-link/passwd", f.data + "/etc-link", f.data + "/passwd-link", f.data + "/dotdot-link",
		f.data + "/state-link", f.data + "/sibling-link", f.data + "/fifo",
	} {
		if b, err := get(p); !errors.Is(err, os.ErrPermission) {
			t.Errorf("get %s = %q, %v; want permission denied", p, b, err)
		}
	}
	for _, p := range []string{f.data + "/etc-link", f.data + "/etc-link/"} {
		if _, err := c.ReadDir(p); !errors.Is(err, os.ErrPermission) {
			t.Errorf("ReadDir %s: %v; want permission denied", p, err)
		}
	}
	if _, err := c.Stat(f.data + "/etc-link"); !errors.Is(err, os.ErrPermission) {
		t.Errorf("stat etc-link (following): %v; want permission denied", err)
	}
}

// The view has no write mode at all: the agent serves it the same for a
// key whose forced command has --allow-restore.
func TestSFTPViewRefusesWrites(t *testing.T) {
	{
		f := newSFTPFixture(t)
		c := f.client
		p := f.data + "/config.yml"
		before, _ := os.ReadFile(filepath.Join(f.mirror, "config.yml"))
		checks := map[string]func() error{
			"create":       func() error { _, err := c.Create(f.data + "/new"); return err },
			"write":        func() error { _, err := c.OpenFile(p, os.O_WRONLY); return err },
			"read-write":   func() error { _, err := c.OpenFile(p, os.O_RDWR); return err },
			"truncate":     func() error { return c.Truncate(p, 0) },
			"remove":       func() error { return c.Remove(p) },
			"rmdir":        func() error { return c.RemoveDirectory(f.data + "/sub") },
			"mkdir":        func() error { return c.Mkdir(f.data + "/newdir") },
			"rename":       func() error { return c.Rename(p, f.data+"/moved") },
			"posix-rename": func() error { return c.PosixRename(p, f.data+"/moved") },
			"chmod":        func() error { return c.Chmod(p, 0o777) },
			"chown":        func() error { return c.Chown(p, 1, 1) },
			"chtimes":      func() error { return c.Chtimes(p, time.Now(), time.Now()) },
			"symlink":      func() error { return c.Symlink("/etc", f.data+"/evil") },
			"link":         func() error { return c.Link(p, f.data+"/hard") },
		}
		for name, op := range checks {
			if err := op(); !errors.Is(err, os.ErrPermission) {
				t.Errorf("%s: %v, want permission denied", name, err)
			}
		}
		after, _ := os.ReadFile(filepath.Join(f.mirror, "config.yml"))
		fi, _ := os.Stat(filepath.Join(f.mirror, "config.yml"))
		if !bytes.Equal(before, after) || fi.Mode().Perm() != 0o600 {
			t.Errorf("config.yml changed: %q, mode %v", after, fi.Mode())
		}
		for _, n := range []string{"new", "newdir", "moved", "evil", "hard"} {
			if _, err := os.Lstat(filepath.Join(f.mirror, n)); err == nil {
				t.Errorf("%s was created", n)
			}
		}
	}
}

// A backup session holds the state dir's lock while it rewrites the
// mirror: the view waits for it, and says so when it cannot.
func TestSFTPViewWaitsForBackup(t *testing.T) {
	old := sftpLockWait
	sftpLockWait = 300 * time.Millisecond
	defer func() { sftpLockWait = old }()
	f := newSFTPFixture(t)
	p := f.data + "/config.yml"
	open, err := f.client.Open(p) // opened before the backup
	mustT(t, err)
	defer open.Close()

	lock, err := os.OpenFile(filepath.Join(f.state, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	mustT(t, err)
	defer lock.Close()
	mustT(t, unix.Flock(int(lock.Fd()), unix.LOCK_EX))
	// What a sync does to a changed file: a new copy renamed over it.
	tmp := filepath.Join(f.mirror, ".haul-tmp-config.yml")
	mustT(t, os.WriteFile(tmp, []byte("secret: 2\n"), 0o600))
	mustT(t, os.Rename(tmp, filepath.Join(f.mirror, "config.yml")))

	_, err = f.client.ReadDir(f.data)
	if err == nil || !strings.Contains(err.Error(), "updating the mirror") {
		t.Errorf("ReadDir during a backup: %v, want a busy message", err)
	}
	if b, err := io.ReadAll(open); err != nil || string(b) != "secret: 1\n" {
		t.Errorf("file opened before the backup reads %q, %v; want its old content", b, err)
	}

	unlocked := make(chan struct{})
	lfd := int(lock.Fd())
	go func() { time.Sleep(100 * time.Millisecond); unix.Flock(lfd, unix.LOCK_UN); close(unlocked) }()
	fh, err := f.client.Open(p)
	if err != nil {
		t.Fatalf("open after the backup: %v", err)
	}
	defer fh.Close()
	if b, _ := io.ReadAll(fh); string(b) != "secret: 2\n" {
		t.Errorf("after the backup: %q", b)
	}
	<-unlocked
	// The view holds the lock only while it resolves: a backup gets it.
	mustT(t, unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB))
}

// Without openat2 (kernels before 5.6) every symlink on a path is refused.
func TestSFTPViewWithoutOpenat2(t *testing.T) {
	f := newSFTPFixture(t)
	defer beneath.WithoutOpenat2()()
	fh, err := f.client.Open(f.data + "/sub/deep.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(fh)
	fh.Close()
	if string(b) != "deep\n" {
		t.Errorf("got %q", b)
	}
	for _, p := range []string{"/inside-link", "/etc-link/passwd", "/dotdot-link", "/inside-dir-link/deep.txt"} {
		if _, err := f.client.Open(f.data + p); !errors.Is(err, os.ErrPermission) {
			t.Errorf("open %s: %v, want permission denied", p, err)
		}
	}
	if fi, err := f.client.Lstat(f.data + "/etc-link"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("lstat etc-link: %v, %v", fi, err)
	}
}

func TestSFTPNoMirrorYet(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := Mirror{Host: "vps", Dir: filepath.Join(state, "mirror"), DataPaths: []string{"/srv/x"}, LockPath: filepath.Join(state, "lock")}
	err := Serve(context.Background(), cfg, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no mirror yet") {
		t.Fatalf("Serve without a mirror: %v", err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sftp view created the state dir")
	}
}
