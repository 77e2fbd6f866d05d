// Package restore_test drives whole `haul restore` and `haul migrate` runs
// against real components: one sshd per "VPS" whose authorized_keys run
// haul-agent as the forced command of a backup key and of a separate
// restore key, a private dockerd for the containers an in-place restore
// must stop, a size-limited tmpfs for a full disk, and the restic and rsync
// CLIs for the benchmark's reference restore.
package restore_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/internal/workload"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

// vps is one host: data dir, agent config, and an sshd with a backup key
// and a restore key (the restore key's entry adds --allow-restore).
//
// Two hosts of one test run on this one machine, but a restore needs the
// same data path on both, as on two real VPSs. A host made with
// vpsOptions.sameDataPathAs therefore sees its own storage at the other
// host's data path: its forced commands run haul-agent in a private mount
// namespace where its storage is bind-mounted over the data path's parent.
type vps struct {
	t          testing.TB
	name       string
	data       string // the data path, as the agent sees it
	dir        string // where the test finds the data
	state      string
	agentCfg   string
	cfg        map[string]any // the agent config, rewritten by setConfig
	sshd       *testenv.SSHD
	backupKey  testenv.KeyPair
	restoreKey testenv.KeyPair
	plainKey   testenv.KeyPair // no forced command: for rsync in the benchmark
}

type vpsOptions struct {
	// sameDataPathAs gives this host the other host's data path, on
	// storage of its own (below storage, or a temp dir).
	sameDataPathAs *vps
	storage        string
	config         map[string]any // merged into the agent config
}

func newVPS(t testing.TB, name string, opts vpsOptions) *vps {
	t.Helper()
	v := &vps{t: t, name: name}
	storage := opts.storage
	if storage == "" {
		storage = t.TempDir()
	}
	v.data = filepath.Join(storage, "srv", "pangolin")
	var wrap func(string) string
	if other := opts.sameDataPathAs; other != nil {
		if os.Geteuid() != 0 {
			t.Skip("a second host with the same data path needs a mount namespace, which needs root")
		}
		must(t, os.MkdirAll(filepath.Join(storage, "srv"), 0o755))
		v.data = other.data
		wrap = func(cmd string) string {
			return fmt.Sprintf(`/usr/bin/unshare --mount --propagation private /bin/sh -c 'mount --bind %s %s && exec %s'`,
				filepath.Join(storage, "srv"), filepath.Dir(other.data), cmd)
		}
	} else {
		wrap = func(cmd string) string { return cmd }
	}
	v.dir = filepath.Join(storage, "srv", "pangolin")
	v.state = filepath.Join(t.TempDir(), "state")
	v.agentCfg = filepath.Join(t.TempDir(), "agent.json")
	v.cfg = map[string]any{"host": name, "data_paths": []string{v.data}, "state_dir": v.state}
	for k, val := range opts.config {
		v.cfg[k] = val
	}
	v.setConfig(nil)
	keys := t.TempDir()
	v.backupKey = testenv.NewKeyPair(t, keys, "backup")
	v.restoreKey = testenv.NewKeyPair(t, keys, "restore")
	v.plainKey = testenv.NewKeyPair(t, keys, "plain")
	agent := filepath.Join(testenv.Binaries(t), "haul-agent")
	v.sshd = testenv.StartSSHD(t, testenv.SSHDOptions{Keys: append(testenv.AgentKeys(agent, v.agentCfg, v.backupKey, v.restoreKey, wrap),
		testenv.AuthorizedKey{Key: v.plainKey})})
	return v
}

// setConfig merges changes into the agent config and writes it.
func (v *vps) setConfig(changes map[string]any) {
	v.t.Helper()
	for k, val := range changes {
		v.cfg[k] = val
	}
	b, err := json.MarshalIndent(v.cfg, "", "  ")
	must(v.t, err)
	must(v.t, os.WriteFile(v.agentCfg, b, 0o600))
}

// agent runs a haul-agent command with this host's config.
func (v *vps) agent(args ...string) string {
	v.t.Helper()
	cmd := exec.Command(filepath.Join(testenv.Binaries(v.t), "haul-agent"), append(args, "--config", v.agentCfg)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		v.t.Fatalf("haul-agent %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (v *vps) marker() string { return filepath.Join(v.state, "ready") }

// hostEntry is the [[hosts]] entry for v; restoreKey chooses the key the
// restore session uses (the backup key, to show it is refused).
func (v *vps) hostEntry(restoreKey testenv.KeyPair) string {
	return fmt.Sprintf(`
[[hosts]]
name = %q
address = %q
user = %q
identity_file = %q
restore_identity_file = %q
known_hosts = %q
`, v.name, v.sshd.Addr, v.sshd.User, v.backupKey.PrivatePath, restoreKey.PrivatePath, v.sshd.KnownHosts)
}

// nas is the puller's side: config, repository, password.
type nas struct {
	t    testing.TB
	dir  string
	cfg  string
	repo string
	pw   string
}

func newNAS(t testing.TB, hosts ...string) *nas {
	t.Helper()
	n := &nas{t: t, dir: t.TempDir()}
	n.repo = filepath.Join(n.dir, "repo")
	n.pw = filepath.Join(n.dir, "password")
	n.cfg = filepath.Join(n.dir, "haul.toml")
	must(t, os.WriteFile(n.pw, []byte("restore tests\n"), 0o600))
	must(t, os.WriteFile(n.cfg, []byte(fmt.Sprintf("repository = %q\npassword_file = %q\ncache_dir = %q\n%s",
		n.repo, n.pw, filepath.Join(n.dir, "cache"), strings.Join(hosts, ""))), 0o600))
	n.haul("init")
	return n
}

// haul runs the haul CLI and fails the test unless it exits 0.
func (n *nas) haul(args ...string) string {
	n.t.Helper()
	out, errOut, code := n.haulCode(args...)
	if code != 0 {
		n.t.Fatalf("haul %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (n *nas) haulCode(args ...string) (stdout, stderr string, code int) {
	n.t.Helper()
	return testenv.Haul(n.t, n.cfg, args...)
}

// restoreResult is the part of `haul restore --json` the tests read.
type restoreResult struct {
	Snapshot   string `json:"snapshot"`
	Target     string `json:"target"`
	ChunksSent int64  `json:"chunks_sent"`
	AsStored   int64  `json:"chunks_as_stored"`
	Outcome    struct {
		Files       int64     `json:"files"`
		Bytes       int64     `json:"bytes"`
		FreezeMS    float64   `json:"freeze_ms"`
		SwapStarted time.Time `json:"swap_started"`
		SwapEnded   time.Time `json:"swap_ended"`
		Kept        []string  `json:"kept"`
		Marker      string    `json:"marker"`
		Phases      []struct {
			Name string  `json:"name"`
			MS   float64 `json:"ms"`
		} `json:"phases"`
	} `json:"agent_result"`
}

func (n *nas) restore(args ...string) restoreResult {
	n.t.Helper()
	var r restoreResult
	must(n.t, json.Unmarshal([]byte(n.haul(append([]string{"restore", "--json"}, args...)...)), &r))
	return r
}

// makeData writes a small Pangolin-like tree (workload) plus what a
// restore must get right: owners, modes, symlinks of every kind, a hard
// link, an empty dir, a non-UTF-8 name, a fifo, and set mtimes (dirs last).
func makeData(t testing.TB, dir string, size int64) {
	t.Helper()
	_, err := workload.Generate(dir, workload.Options{TargetSize: size, Seed: 42})
	must(t, err)
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(content), mode))
		must(t, os.Chmod(p, mode))
	}
	write("config/empty", "", 0o640)
	write("config/bin/run.sh", "#!/bin/sh\n", 0o755)
	write("config/caf\xe9.txt", "latin-1 name\n", 0o644)
	must(t, os.MkdirAll(filepath.Join(dir, "config", "empty-dir"), 0o755))
	must(t, os.Symlink("db/db.sqlite", filepath.Join(dir, "config", "rel-link")))
	must(t, os.Symlink("/etc/hostname", filepath.Join(dir, "config", "abs-link")))
	must(t, os.Symlink("does/not/exist", filepath.Join(dir, "config", "dangling")))
	must(t, os.Link(filepath.Join(dir, "config", "empty"), filepath.Join(dir, "config", "empty-hardlink")))
	must(t, exec.Command("mkfifo", filepath.Join(dir, "config", "fifo")).Run())
	must(t, os.Chmod(filepath.Join(dir, "config", "bin"), 0o2750))
	if os.Geteuid() == 0 {
		must(t, os.Lchown(filepath.Join(dir, "config", "bin", "run.sh"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(dir, "config", "abs-link"), 1234, 5678))
		must(t, os.Chown(filepath.Join(dir, "config", "bin"), 1234, 5678))
	}
	old := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	var paths []string
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		fi, err := os.Lstat(paths[i])
		must(t, err)
		if fi.Mode()&os.ModeSymlink == 0 {
			must(t, os.Chtimes(paths[i], old, old.Add(time.Duration(i)*time.Second)))
		}
	}
}

// sameTree fails the test unless b equals a in content, type, mode,
// owner, mtime (dirs too), link targets and hard links.
func sameTree(t testing.TB, a, b string) {
	t.Helper()
	diffs, err := treecmp.Compare(a, b, treecmp.Options{Owner: os.Geteuid() == 0, DirMtime: true, Hardlinks: true})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("%s differs from %s:\n%s", b, a, strings.Join(diffs, "\n"))
	}
}

// copyTree copies a tree with cp -a: the reference for "unchanged".
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	return dst
}

// siblings lists the entries beside the data path: staging and *.prev-*
// copies show up here.
func siblings(t *testing.T, data string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(data))
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// must is testenv's, under the short name these tests use.
var must = testenv.Must
