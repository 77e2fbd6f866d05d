// Package quiesce_test drives whole backups with quiescing against real
// components: a private dockerd running containers that stand in for
// Pangolin's stack (one writes a SQLite database without pause), the
// haul and haul-agent binaries, sshd where a connection must be cut, and
// the restic CLI to restore what haul stored.
package quiesce_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/workload"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	if benchStack.dir != "" {
		_ = os.RemoveAll(benchStack.dir)
	}
	os.Exit(code)
}

const imageName = "haul-qa-stackapp:test"

// stack is a Compose-labelled set of containers writing into one data dir,
// like Pangolin's: pangolin (SQLite writer with a healthcheck), gerbil and
// traefik (which depend on it and append to logs), and an "idle" container
// that is stopped before any backup and must stay stopped.
type stack struct {
	t       testing.TB
	d       *testenv.Dockerd
	project string
	data    string   // bind-mounted at /data
	running []string // container names, start order
	idle    string
}

// DB is where the pangolin container's database lives on the host.
func (s *stack) DB() string { return filepath.Join(s.data, "config", "db", "db.sqlite") }

// newStack creates and starts the containers of project (unique per test:
// tests share the daemon): pangolin, gerbil and traefik, or only the first
// services of them (container starts are slow here; a test that repeats
// them many times keeps fewer), plus the idle one. data is created if
// empty.
func newStack(t testing.TB, d *testenv.Dockerd, project, data string, services ...string) *stack {
	t.Helper()
	img := d.ImportImage(t, "testdata/stackapp", imageName)
	if data == "" {
		data = t.TempDir()
	}
	for _, dir := range []string{"config/db", "config/logs", "config/letsencrypt"} {
		if err := os.MkdirAll(filepath.Join(data, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &stack{t: t, d: d, project: project, data: data}
	health := &healthcheck{Test: []string{"CMD", "/app", "health"}, Interval: int64(100 * time.Millisecond), Timeout: int64(2 * time.Second), Retries: 50}
	specs := []struct {
		service string
		deps    string
		cmd     []string
		health  *healthcheck
	}{
		{"pangolin", "", []string{"sqlite", "/data/config/db/db.sqlite", "2ms"}, health},
		{"gerbil", "pangolin:service_healthy:false", []string{"append", "/data/config/logs/gerbil.log", "5ms"}, nil},
		{"traefik", "pangolin:service_healthy:false,gerbil:service_started:false", []string{"append", "/data/config/logs/traefik-access.log", "5ms"}, nil},
		{"idle", "", []string{"append", "/data/config/logs/idle.log", "1s"}, nil},
	}
	for _, sp := range specs {
		if len(services) > 0 && sp.service != "idle" && !slices.Contains(services, sp.service) {
			continue
		}
		name := project + "-" + sp.service
		labels := map[string]string{
			"com.docker.compose.project": project,
			"com.docker.compose.service": sp.service,
		}
		if sp.deps != "" {
			labels["com.docker.compose.depends_on"] = sp.deps
		}
		createContainer(t, d, name, containerSpec{
			Image: img, Cmd: sp.cmd, Labels: labels, Healthcheck: sp.health,
			HostConfig: hostConfig{Binds: []string{data + ":/data"}, NetworkMode: "none"},
		})
		t.Cleanup(func() { _ = d.DockerCmd("rm", "-f", name).Run() })
		if sp.service == "idle" {
			s.idle = name
			continue
		}
		d.Docker(t, "start", name)
		s.running = append(s.running, name)
		if sp.health != nil {
			s.waitHealthy(name, 30*time.Second)
		}
	}
	return s
}

type healthcheck struct {
	Test     []string
	Interval int64 `json:",omitempty"`
	Timeout  int64 `json:",omitempty"`
	Retries  int   `json:",omitempty"`
}

type hostConfig struct {
	Binds       []string
	NetworkMode string
}

type containerSpec struct {
	Image       string
	Cmd         []string
	Labels      map[string]string
	Healthcheck *healthcheck `json:",omitempty"`
	HostConfig  hostConfig
}

// createContainer creates a container through the Engine API: the docker
// CLI can only give a healthcheck as a shell command, and the image has
// no shell.
func createContainer(t testing.TB, d *testenv.Dockerd, name string, spec containerSpec) {
	t.Helper()
	body, _ := json.Marshal(spec)
	resp, err := engineClient(d).Post("http://docker/containers/create?name="+name, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("create container %s: %v", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create container %s: %s %s", name, resp.Status, b)
	}
}

func engineClient(d *testenv.Dockerd) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		},
	}}
}

type containerState struct {
	Status     string
	Running    bool
	Paused     bool
	StartedAt  string
	FinishedAt string
	Health     *struct{ Status string }
}

func inspectState(t testing.TB, d *testenv.Dockerd, name string) containerState {
	t.Helper()
	var st containerState
	out := d.Docker(t, "inspect", "--format", "{{json .State}}", name)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("inspect %s: %v: %s", name, err, out)
	}
	return st
}

func (s *stack) waitHealthy(name string, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := inspectState(s.t, s.d, name)
		if st.Running && !st.Paused && (st.Health == nil || st.Health.Status == "healthy") {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("container %s not running and healthy within %v: %+v", name, within, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// states returns "running", "paused" or the status of each running-set
// container.
func (s *stack) states() map[string]string {
	out := map[string]string{}
	for _, n := range append(append([]string(nil), s.running...), s.idle) {
		st := inspectState(s.t, s.d, n)
		switch {
		case st.Paused:
			out[n] = "paused"
		case st.Running:
			out[n] = "running"
		default:
			out[n] = st.Status
		}
	}
	return out
}

// checkUp fails unless every container that was running runs (not paused)
// and the idle one is still not running.
func (s *stack) checkUp(when string) {
	s.t.Helper()
	st := s.states()
	for _, n := range s.running {
		if st[n] != "running" {
			s.t.Errorf("%s: container %s is %s, want running (all: %v)", when, n, st[n], st)
		}
	}
	if st[s.idle] == "running" || st[s.idle] == "paused" {
		s.t.Errorf("%s: container %s was stopped before the backup but is %s now", when, s.idle, st[s.idle])
	}
}

// waitUp polls until every running-set container runs unpaused; it returns
// how long that took, or fails after within.
func (s *stack) waitUp(within time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	for {
		st := s.states()
		up := true
		for _, n := range s.running {
			up = up && st[n] == "running"
		}
		if up {
			return time.Since(start)
		}
		if time.Since(start) > within {
			s.t.Fatalf("containers not running again within %v: %v", within, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// host is one haul host (an agent config) and the puller config around it.
type host struct {
	t          testing.TB
	dir        string
	bins       string
	AgentCfg   string
	StateDir   string
	PullerCfg  string
	Repo       string
	Password   string
	agentEnv   []string
	agentQuies map[string]any
}

// newHost writes an agent config backing up data with the quiesce section
// q, and a puller config with a fresh repository reaching the agent through
// the exec transport (argv prefixed by env(1) with agentEnv).
func newHost(t testing.TB, data string, q map[string]any, agentEnv ...string) *host {
	t.Helper()
	dir := t.TempDir()
	h := &host{
		t: t, dir: dir, bins: testenv.Binaries(t),
		AgentCfg: filepath.Join(dir, "agent.json"), StateDir: filepath.Join(dir, "state"),
		PullerCfg: filepath.Join(dir, "haul.toml"), Repo: filepath.Join(dir, "repo"),
		Password: filepath.Join(dir, "password"), agentEnv: agentEnv, agentQuies: q,
	}
	h.writeAgentConfig(data, q)
	if err := os.WriteFile(h.Password, []byte("quiesce-test-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.writePullerConfig(h.execCommand())
	h.haul("init")
	return h
}

func (h *host) writeAgentConfig(data string, q map[string]any) {
	h.t.Helper()
	cfg := map[string]any{"host": "qa", "data_paths": []string{data}, "state_dir": h.StateDir, "quiesce": q}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(h.AgentCfg, b, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) execCommand() []string {
	argv := []string{filepath.Join(h.bins, "haul-agent"), "serve", "--config", h.AgentCfg}
	if len(h.agentEnv) > 0 {
		argv = append(append([]string{"/usr/bin/env"}, h.agentEnv...), argv...)
	}
	return argv
}

// writePullerConfig writes haul.toml; hostLines are the [[hosts]] keys
// after name (an exec command, or SSH settings).
func (h *host) writePullerConfig(command []string, extra ...string) {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "repository = %q\npassword_file = %q\ncache_dir = %q\n\n[[hosts]]\nname = \"qa\"\n", h.Repo, h.Password, filepath.Join(h.dir, "cache"))
	if command != nil {
		q := make([]string, len(command))
		for i, a := range command {
			q[i] = fmt.Sprintf("%q", a)
		}
		fmt.Fprintf(&b, "command = [%s]\n", strings.Join(q, ", "))
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	if err := os.WriteFile(h.PullerCfg, []byte(b.String()), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// haulCmd returns the haul CLI with this host's config.
func (h *host) haulCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(h.bins, "haul"), append([]string{"--config", h.PullerCfg}, args...)...)
	cmd.Env = os.Environ()
	return cmd
}

// haul runs the haul CLI and fails the test on a non-zero exit.
func (h *host) haul(args ...string) []byte {
	h.t.Helper()
	out, errOut, err := h.haulErr(args...)
	if err != nil {
		h.t.Fatalf("haul %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (h *host) haulErr(args ...string) (stdout, stderr []byte, err error) {
	cmd := h.haulCmd(args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

// backupResult is the part of `haul backup --json` the tests read.
type backupResult struct {
	OK     bool `json:"ok"`
	Failed []string
	Hosts  []struct {
		Host       string  `json:"host"`
		OK         bool    `json:"ok"`
		Error      string  `json:"error"`
		SnapshotID string  `json:"snapshot_id"`
		FreezeMS   float64 `json:"freeze_ms"`
		Freeze     struct {
			Mode        string  `json:"mode"`
			FreezeMS    float64 `json:"freeze_ms"`
			BytesCopied int64   `json:"bytes_copied"`
			Phases      []struct {
				Name string  `json:"name"`
				MS   float64 `json:"ms"`
			} `json:"phases"`
		} `json:"freeze"`
	} `json:"hosts"`
}

// backup runs `haul backup --json` and returns the parsed result and the
// exit error.
func (h *host) backup() (*backupResult, []byte, error) {
	out, errOut, err := h.haulErr("backup", "--json")
	var r backupResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		return nil, errOut, fmt.Errorf("haul backup --json printed no JSON (%v; exit %v)\nstdout:\n%s\nstderr:\n%s", jerr, err, out, errOut)
	}
	return &r, errOut, err
}

type snapshotJSON struct {
	ID   string   `json:"id"`
	Tags []string `json:"tags"`
	Haul *struct {
		Quiesce  string  `json:"quiesce_mode"`
		FreezeMS float64 `json:"freeze_ms"`
		Phases   []struct {
			Name string  `json:"name"`
			MS   float64 `json:"ms"`
		} `json:"freeze_phases"`
	} `json:"haul"`
}

func (h *host) snapshots() []snapshotJSON {
	h.t.Helper()
	var sns []snapshotJSON
	out := h.haul("snapshots", "--json")
	if err := json.Unmarshal(out, &sns); err != nil {
		h.t.Fatalf("haul snapshots --json: %v\n%s", err, out)
	}
	return sns
}

// restoreAndCheck restores the database directory of one snapshot with the
// restic CLI and checks it with workload.CheckSeq; it returns the
// sequence's last n. Safe to call from several goroutines.
func (h *host) restoreAndCheck(snapshotID, dbPath string) (int64, error) {
	target := filepath.Join(h.dir, "restore-"+snapshotID[:8])
	defer os.RemoveAll(target)
	out, errOut, err := testenv.ResticErr(h.t, h.Repo, h.Password, "restore", snapshotID, "--target", target, "--include", filepath.Dir(dbPath))
	if err != nil {
		return 0, fmt.Errorf("restic restore %s: %v\n%s%s", snapshotID[:8], err, out, errOut)
	}
	return workload.CheckSeq(filepath.Join(target, dbPath))
}
