// Package backup_test drives whole haul commands against a real sshd whose
// authorized_keys runs haul-agent as a forced command, and judges the
// repository with the real restic CLI.
package backup_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// env is one "VPS" (sshd + agent + data) and one "NAS" (haul config, repo).
type env struct {
	t         *testing.T
	bins      string
	data      string // the data path on the "VPS"
	agentCfg  string
	sshd      *testenv.SSHD
	backupKey testenv.KeyPair
	restKey   testenv.KeyPair
	nas       string
	cfg       string // haul.toml
	repo      string
	pwFile    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, bins: testenv.Binaries(t)}
	root := t.TempDir()
	e.data = filepath.Join(root, "vps", "srv", "data")
	must(t, os.MkdirAll(e.data, 0o755))
	e.agentCfg = filepath.Join(root, "vps", "agent.json")
	writeFile(t, e.agentCfg, fmt.Sprintf(`{"host":"vps","data_paths":[%q],"state_dir":%q}`, e.data, filepath.Join(root, "vps", "state")), 0o600)
	keys := filepath.Join(root, "keys")
	must(t, os.MkdirAll(keys, 0o700))
	e.backupKey = testenv.NewKeyPair(t, keys, "backup")
	e.restKey = testenv.NewKeyPair(t, keys, "restore")
	agent := filepath.Join(e.bins, "haul-agent")
	e.sshd = testenv.StartSSHD(t, testenv.SSHDOptions{Keys: testenv.AgentKeys(agent, e.agentCfg, e.backupKey, e.restKey, nil)})
	e.nas = filepath.Join(root, "nas")
	must(t, os.MkdirAll(e.nas, 0o700))
	e.repo = filepath.Join(e.nas, "repo")
	e.pwFile = filepath.Join(e.nas, "password")
	writeFile(t, e.pwFile, "correct horse battery staple\n", 0o600)
	e.writeConfig(e.sshd.Addr, e.sshd.KnownHosts)
	e.haul("init")
	return e
}

func (e *env) writeConfig(addr, knownHosts string) {
	e.cfg = filepath.Join(e.nas, "haul.toml")
	writeFile(e.t, e.cfg, fmt.Sprintf(`repository = %q
password_file = %q
cache_dir = %q

[[hosts]]
name = "vps"
address = %q
user = %q
identity_file = %q
known_hosts = %q
`, e.repo, e.pwFile, filepath.Join(e.nas, "cache"), addr, e.sshd.User, e.backupKey.PrivatePath, knownHosts), 0o600)
}

// haul runs the haul CLI and fails the test on a non-zero exit.
func (e *env) haul(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.haulCode(args...)
	if code != 0 {
		e.t.Fatalf("haul %s: exit %d\nstdout: %s\nstderr: %s\nsshd log: %s", strings.Join(args, " "), code, out, errOut, e.sshd.LogTail())
	}
	return out
}

func (e *env) haulCode(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	return testenv.Haul(e.t, e.cfg, args...)
}

// backupResult is the part of `haul backup --json` the tests read.
type backupResult struct {
	OK     bool `json:"ok"`
	Failed []string
	Hosts  []struct {
		Host         string `json:"host"`
		OK           bool   `json:"ok"`
		Error        string `json:"error"`
		SnapshotID   string `json:"snapshot_id"`
		ChunksWanted int64  `json:"chunks_wanted"`
		ChunkBytes   int64  `json:"chunk_bytes"`
		FreezeMS     float64
		Wire         struct {
			BytesIn  int64 `json:"bytes_in"`
			BytesOut int64 `json:"bytes_out"`
		} `json:"wire"`
		Manifest struct {
			Files     int64 `json:"files"`
			FilesRead int64 `json:"files_read"`
			BytesRead int64 `json:"bytes_read"`
		} `json:"manifest"`
	} `json:"hosts"`
}

func (e *env) backup() backupResult {
	e.t.Helper()
	var r backupResult
	must(e.t, json.Unmarshal([]byte(e.haul("backup", "--json")), &r))
	if !r.OK || len(r.Hosts) != 1 {
		e.t.Fatalf("backup not ok: %+v", r)
	}
	return r
}

func (e *env) restic(args ...string) []byte {
	e.t.Helper()
	return testenv.Restic(e.t, e.repo, e.pwFile, args...)
}

func (e *env) snapshotCount() int {
	e.t.Helper()
	var sns []json.RawMessage
	must(e.t, json.Unmarshal(e.restic("snapshots", "--json"), &sns))
	return len(sns)
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	must(t, filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	}))
	return n
}

func randomFile(t testing.TB, path string, n int64) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	f, err := os.Create(path)
	must(t, err)
	_, err = io.CopyN(f, rand.Reader, n)
	must(t, err)
	must(t, f.Close())
}

// makeTree writes the tree the issue lists: sizes 0 B to 20 MiB, nested
// and empty dirs, every kind of symlink, a hard link pair, several modes, a
// non-UTF-8 name, and set mtimes (dirs last, so writing files does not
// change them).
func makeTree(t testing.TB, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "empty-file"), "", 0o644)
	writeFile(t, filepath.Join(dir, "one-byte"), "x", 0o600)
	randomFile(t, filepath.Join(dir, "half-mib"), 512<<10)
	randomFile(t, filepath.Join(dir, "db", "big.bin"), 20<<20)
	writeFile(t, filepath.Join(dir, "letsencrypt", "acme.json"), `{"letsencrypt":{"Certificates":[]}}`, 0o600)
	writeFile(t, filepath.Join(dir, "bin", "run.sh"), "#!/bin/sh\necho hi\n", 0o755)
	writeFile(t, filepath.Join(dir, "logs", "pangolin.log"), strings.Repeat("2026-11-27T08:00:00Z INFO request served\n", 8000), 0o644)
	writeFile(t, filepath.Join(dir, "a", "b", "c", "deep.txt"), "deep\n", 0o644)
	must(t, os.MkdirAll(filepath.Join(dir, "empty-dir", "empty-sub"), 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "private"), 0o700))
	writeFile(t, filepath.Join(dir, "private", "key"), "wg-private-key\n", 0o600)
	must(t, os.Symlink("a/b/c/deep.txt", filepath.Join(dir, "rel-link")))
	must(t, os.Symlink("/etc/hostname", filepath.Join(dir, "abs-link")))
	must(t, os.Symlink("does/not/exist", filepath.Join(dir, "dangling-link")))
	must(t, os.Link(filepath.Join(dir, "one-byte"), filepath.Join(dir, "hard-link")))
	writeFile(t, filepath.Join(dir, "caf\xe9-latin1.txt"), "not utf-8 name\n", 0o644)
	must(t, os.Chmod(filepath.Join(dir, "private"), 0o700))
	old := time.Date(2021, 3, 4, 5, 6, 7, 891011121, time.UTC)
	var paths []string
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- { // children before parents
		p := paths[i]
		fi, err := os.Lstat(p)
		must(t, err)
		if fi.Mode()&os.ModeSymlink != 0 {
			continue
		}
		must(t, os.Chtimes(p, old, old.Add(time.Duration(i)*time.Second)))
	}
}

// cutProxy forwards TCP to target and cuts the connection once cut bytes
// have flowed from the server to the client.
type cutProxy struct {
	ln     net.Listener
	target string
	cut    int64
	moved  atomic.Int64
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, target string, cut int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &cutProxy{ln: ln, target: target, cut: cut}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) serve(c net.Conn) {
	defer p.wg.Done()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	go func() { _, _ = io.Copy(s, c); s.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				break
			}
			if p.moved.Add(int64(n)) >= p.cut {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.Close()
	s.Close()
}

// copyTree copies a directory tree with modes and mtimes (cp -a).
func copyTree(src, dst string) error {
	return exec.Command("cp", "-a", src, dst).Run()
}

// must and writeFile are testenv's, under the short names these tests use.
var (
	must      = testenv.Must
	writeFile = testenv.WriteFile
)
