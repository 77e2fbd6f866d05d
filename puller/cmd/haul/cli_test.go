package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/repotest"
)

// haulCode runs haul in-process (main_test.go's haulRun) and returns its
// exit code and output.
func haulCode(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	stdout, stderr, code = haulRun(t, args...)
	return code, stdout, stderr
}

// fixture is a config with two hosts served by the real haul-agent over
// the exec transport: "vps" with a data path, "broken" whose agent
// command does not exist.
type fixture struct {
	config, data, target string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	repotest.LowCostKDF(t) // `haul init` runs in this process
	bins := testenv.Binaries(t)
	dir := t.TempDir()
	f := &fixture{config: filepath.Join(dir, "haul.toml"), data: filepath.Join(dir, "vps", "srv", "data"), target: filepath.Join(dir, "restored")}
	must(t, os.MkdirAll(filepath.Join(f.data, "db"), 0o755))
	must(t, os.WriteFile(filepath.Join(f.data, "db", "app.sqlite"), bytes.Repeat([]byte("page"), 300_000), 0o644))
	must(t, os.WriteFile(filepath.Join(f.data, "config.yml"), []byte("a: 1\n"), 0o600))
	agentCfg := filepath.Join(dir, "vps", "agent.json")
	b, _ := json.Marshal(map[string]any{"host": "vps", "data_paths": []string{f.data}, "state_dir": filepath.Join(dir, "vps", "state"), "quiesce": map[string]any{"mode": "none"}})
	must(t, os.WriteFile(agentCfg, b, 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "password"), []byte("cli test\n"), 0o600))
	toml := fmt.Sprintf(`repository = %q
password_file = %q
cache_dir = %q

[[hosts]]
name = "vps"
command = [%q, "serve", "--config", %q]

[[hosts]]
name = "broken"
command = [%q]
`, filepath.Join(dir, "repo"), filepath.Join(dir, "password"), filepath.Join(dir, "cache"),
		filepath.Join(bins, "haul-agent"), agentCfg, filepath.Join(dir, "no-such-agent"))
	must(t, os.WriteFile(f.config, []byte(toml), 0o600))
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// decode parses stdout as JSON into v, failing with the output.
func decode(t *testing.T, stdout string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(stdout), v); err != nil {
		t.Fatalf("--json output is not JSON (%v):\n%s", err, stdout)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := haulCode(t, "version")
	if code != exitOK || !strings.Contains(out, fmt.Sprintf("protocol %d-%d", proto.MinVersion, proto.Version)) {
		t.Errorf("version: exit %d, %q", code, out)
	}
	if code, _, errOut := haulCode(t, "backup", "--no-such-flag"); code != exitConfig || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("unknown flag: exit %d, stderr %q; want %d naming the flag", code, errOut, exitConfig)
	}
	missing := filepath.Join(t.TempDir(), "none.toml")
	if code, _, errOut := haulCode(t, "--config", missing, "snapshots"); code != exitConfig || !strings.Contains(errOut, missing) {
		t.Errorf("missing config: exit %d, stderr %q; want %d naming the file", code, errOut, exitConfig)
	}
}

// The main commands against a real agent: exit codes and the shapes of
// their --json output, which scripts and monitors parse.
func TestCommandsExitCodesAndJSON(t *testing.T) {
	f := newFixture(t)
	c := []string{"--config", f.config}
	if code, out, errOut := haulCode(t, append(c, "init")...); code != exitOK || !strings.Contains(out, "created repository") {
		t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut := haulCode(t, append(c, "backup", "--host", "vps", "--tag", "cli", "--json")...)
	if code != exitOK {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	var bk struct {
		OK     bool     `json:"ok"`
		Failed []string `json:"failed"`
		Hosts  []struct {
			Host       string   `json:"host"`
			OK         bool     `json:"ok"`
			SnapshotID string   `json:"snapshot_id"`
			Paths      []string `json:"paths"`
			Files      int64    `json:"files"`
			Protocol   int      `json:"protocol_version"`
		} `json:"hosts"`
	}
	decode(t, out, &bk)
	if !bk.OK || bk.Failed == nil || len(bk.Failed) != 0 || len(bk.Hosts) != 1 {
		t.Fatalf("backup --json: %s", out)
	}
	if h := bk.Hosts[0]; h.Host != "vps" || !h.OK || len(h.SnapshotID) != 64 || h.Files != 2 || h.Protocol != proto.Version || len(h.Paths) != 1 || h.Paths[0] != f.data {
		t.Errorf("backup --json host: %+v", h)
	}
	if errOut != "" {
		t.Errorf("backup --json logged on stderr: %q", errOut)
	}

	// One host fails: the other is still backed up, exit 1 names it.
	code, out, _ = haulCode(t, append(c, "backup", "--json")...)
	decode(t, out, &bk)
	if code != exitHostFailed || bk.OK || len(bk.Failed) != 1 || bk.Failed[0] != "broken" || len(bk.Hosts) != 2 || !bk.Hosts[0].OK {
		t.Errorf("backup with a broken host: exit %d, %s", code, out)
	}
	code, out, errOut = haulCode(t, append(c, "backup", "--host", "broken", "--quiet")...)
	if code != exitHostFailed || out != "" || !strings.Contains(errOut, "broken") {
		t.Errorf("backup --quiet of a broken host: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "backup", "--host", "nope")...); code != exitConfig || !strings.Contains(errOut, "nope") {
		t.Errorf("backup of an unknown host: exit %d, stderr %q", code, errOut)
	}

	code, out, _ = haulCode(t, append(c, "snapshots", "--json")...)
	var sns []struct {
		ID       string   `json:"id"`
		ShortID  string   `json:"short_id"`
		Hostname string   `json:"hostname"`
		Tags     []string `json:"tags"`
		Paths    []string `json:"paths"`
		Haul     *struct {
			Protocol int `json:"protocol"`
		} `json:"haul"`
	}
	decode(t, out, &sns)
	if code != exitOK || len(sns) != 2 || sns[0].Hostname != "vps" || sns[0].ShortID != sns[0].ID[:8] || sns[0].Haul == nil {
		t.Fatalf("snapshots --json: exit %d, %s", code, out)
	}
	if !strings.Contains(strings.Join(sns[0].Tags, " "), "cli") {
		t.Errorf("snapshot tags %v, want cli", sns[0].Tags)
	}

	code, out, errOut = haulCode(t, append(c, "restore", "--host", "vps", "--target", f.target, "--json")...)
	var rs struct {
		Snapshot string `json:"snapshot"`
		Target   string `json:"target"`
		Files    uint64 `json:"files_verified"`
	}
	decode(t, out, &rs)
	if code != exitOK || rs.Files != 2 || rs.Target != f.target || rs.Snapshot == "" {
		t.Fatalf("restore --target --json: exit %d, %s%s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(f.target, f.data, "config.yml")); err != nil || string(b) != "a: 1\n" {
		t.Errorf("restored config.yml: %q, %v", b, err)
	}
	if code, _, errOut := haulCode(t, append(c, "restore", "--host", "vps", "--target", f.target, "--to", "vps")...); code != exitConfig || !strings.Contains(errOut, "--target") {
		t.Errorf("restore --target with --to: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "restore", "--host", "vps", "--include", "/x")...); code != exitConfig || !strings.Contains(errOut, "--target") {
		t.Errorf("restore --include onto an agent: exit %d, stderr %q", code, errOut)
	}

	// "broken" has never succeeded: status says so with exit 1.
	code, out, _ = haulCode(t, append(c, "status", "--json")...)
	var st struct {
		OK    bool     `json:"ok"`
		Stale []string `json:"stale"`
		Hosts []struct {
			Host  string `json:"host"`
			Stale bool   `json:"stale"`
		} `json:"hosts"`
	}
	decode(t, out, &st)
	if code != exitHostFailed || st.OK || len(st.Hosts) != 2 || len(st.Stale) != 1 || st.Stale[0] != "broken" {
		t.Errorf("status --json: exit %d, %s", code, out)
	}
	code, out, _ = haulCode(t, append(c, "status", "--host", "vps", "--json")...)
	decode(t, out, &st)
	if code != exitOK || !st.OK || len(st.Hosts) != 1 || st.Hosts[0].Stale {
		t.Errorf("status --host vps --json: exit %d, %s", code, out)
	}

	if code, _, errOut := haulCode(t, append(c, "migrate", "--from", "vps", "--to", "vps")...); code != exitConfig || !strings.Contains(errOut, "both vps") {
		t.Errorf("migrate onto itself: exit %d, stderr %q", code, errOut)
	}
}
