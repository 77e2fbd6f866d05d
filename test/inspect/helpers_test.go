// Package inspect_test drives the "look inside" features end to end: the
// agent's read-only SFTP view through a real sshd and OpenSSH's sftp
// client, and haul ls, haul diff and partial restores, each judged against
// the real restic CLI on the same repository.
package inspect_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// env is one "VPS" (sshd + agent + data) and one "NAS" (haul config, repo).
type env struct {
	t         *testing.T
	bins      string
	data      string // the data path on the "VPS"
	state     string // the agent's state dir
	agentCfg  string
	sshd      *testenv.SSHD
	backupKey testenv.KeyPair
	restKey   testenv.KeyPair
	nas       string
	cfg       string
	repo      string
	pwFile    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.Require(t, "sftp", "apt-get install openssh-client")
	e := &env{t: t, bins: testenv.Binaries(t)}
	root := t.TempDir()
	e.data = filepath.Join(root, "vps", "srv", "data")
	e.state = filepath.Join(root, "vps", "state")
	must(t, os.MkdirAll(e.data, 0o755))
	e.agentCfg = filepath.Join(root, "vps", "agent.json")
	writeFile(t, e.agentCfg, fmt.Sprintf(`{"host":"vps","data_paths":[%q],"state_dir":%q}`, e.data, e.state), 0o600)
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
	e.cfg = filepath.Join(e.nas, "haul.toml")
	writeFile(t, e.cfg, fmt.Sprintf(`repository = %q
password_file = %q
cache_dir = %q

[[hosts]]
name = "vps"
address = %q
user = %q
identity_file = %q
known_hosts = %q
`, e.repo, e.pwFile, filepath.Join(e.nas, "cache"), e.sshd.Addr, e.sshd.User, e.backupKey.PrivatePath, e.sshd.KnownHosts), 0o600)
	e.haul("init")
	return e
}

// mirror is where the agent keeps its consistent copy of path (a path on
// the "VPS").
func (e *env) mirror(path string) string {
	return filepath.Join(e.state, "mirror", strings.TrimPrefix(path, "/"))
}

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

// backup runs haul backup and returns the new snapshot's ID.
func (e *env) backup() string {
	e.t.Helper()
	var r struct {
		OK    bool `json:"ok"`
		Hosts []struct {
			SnapshotID string `json:"snapshot_id"`
		} `json:"hosts"`
	}
	must(e.t, json.Unmarshal([]byte(e.haul("backup", "--json")), &r))
	if !r.OK || len(r.Hosts) != 1 || r.Hosts[0].SnapshotID == "" {
		e.t.Fatalf("backup not ok: %+v", r)
	}
	return r.Hosts[0].SnapshotID
}

func (e *env) restic(args ...string) []byte {
	e.t.Helper()
	return testenv.Restic(e.t, e.repo, e.pwFile, args...)
}

// sftp runs OpenSSH's sftp client in batch mode with key, through the
// key's forced command, and returns its output and exit code.
func (e *env) sftp(key testenv.KeyPair, batch string) (out string, code int) {
	e.t.Helper()
	bf := filepath.Join(e.t.TempDir(), "batch")
	writeFile(e.t, bf, batch, 0o600)
	args := []string{"-F", "/dev/null", "-i", key.PrivatePath, "-P", strconv.Itoa(e.sshd.Port),
		"-o", "UserKnownHostsFile=" + e.sshd.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-b", bf, e.sshd.User + "@" + e.sshd.Host}
	cmd := exec.Command("sftp", args...)
	cmd.Dir = e.t.TempDir()
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(b), ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("sftp: %v\n%s", err, b)
	}
	return string(b), 0
}

// makeTree writes a small tree with what the inspect features must handle:
// nested dirs, secrets with tight modes, symlinks inside, to /etc and out
// through "..", a hard link, an empty dir and a name that is not UTF-8.
func makeTree(t testing.TB, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "config", "config.yml"), "app:\n  dashboard_url: https://pangolin.example\n", 0o644)
	writeFile(t, filepath.Join(dir, "config", "db", "db.sqlite"), strings.Repeat("SQLite format 3\x00", 4096), 0o600)
	writeFile(t, filepath.Join(dir, "config", "key"), "wg-private-key\n", 0o600)
	writeFile(t, filepath.Join(dir, "config", "letsencrypt", "acme.json"), `{"letsencrypt":{"Certificates":[]}}`, 0o600)
	writeFile(t, filepath.Join(dir, "config", "traefik", "traefik_config.yml"), "entryPoints: {}\n", 0o644)
	writeFile(t, filepath.Join(dir, "config", "traefik", "dynamic_config.yml"), "http: {}\n", 0o644)
	writeFile(t, filepath.Join(dir, "logs", "pangolin.log"), strings.Repeat("2026-11-27T08:00:00Z INFO request served\n", 500), 0o644)
	writeFile(t, filepath.Join(dir, "caf\xe9.txt"), "latin-1 name\n", 0o644)
	must(t, os.MkdirAll(filepath.Join(dir, "empty"), 0o755))
	must(t, os.Symlink("config/config.yml", filepath.Join(dir, "config-link")))
	must(t, os.Symlink("/etc", filepath.Join(dir, "etc-link")))
	must(t, os.Symlink("/etc/hostname", filepath.Join(dir, "hostname-link")))
	must(t, os.Symlink("../../../../../../../../../../etc/passwd", filepath.Join(dir, "dotdot-link")))
	must(t, os.Link(filepath.Join(dir, "config", "key"), filepath.Join(dir, "config", "key.hardlink")))
	old := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	var paths []string
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- { // children before parents
		if fi, err := os.Lstat(paths[i]); err == nil && fi.Mode()&os.ModeSymlink == 0 {
			must(t, os.Chtimes(paths[i], old, old.Add(time.Duration(i)*time.Second)))
		}
	}
}

// treeEntry is what two restored trees must agree on.
type treeEntry struct {
	Mode    os.FileMode
	Content string // file content, or link target
	MTime   int64
}

// readTree records every entry below dir, by path relative to dir.
func readTree(t testing.TB, dir string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		en := treeEntry{Mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			must(t, err)
			en.Content = string(b)
			en.MTime = fi.ModTime().UnixNano()
		case fi.Mode()&os.ModeSymlink != 0:
			en.Content, err = os.Readlink(p)
			must(t, err)
		}
		out[rel] = en
		return nil
	}))
	return out
}

// must and writeFile are testenv's, under the short names these tests use.
var (
	must      = testenv.Must
	writeFile = testenv.WriteFile
)
