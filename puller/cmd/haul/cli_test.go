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
	"github.com/haulproject/haul/puller/runlog"
	"github.com/haulproject/haul/tofu/fakehcloud"
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

// appendConfig adds TOML to the fixture's config.
func (f *fixture) appendConfig(t *testing.T, toml string) {
	t.Helper()
	b, err := os.ReadFile(f.config)
	must(t, err)
	must(t, os.WriteFile(f.config, append(b, toml...), 0o600))
}

// restore's flag checks, its exit codes and its --json shapes, onto an
// agent (dry run) and into a local directory with patterns.
func TestRestoreFlagsExitCodesAndJSON(t *testing.T) {
	f := newFixture(t)
	c := []string{"--config", f.config}
	if code, out, errOut := haulCode(t, append(c, "init")...); code != exitOK {
		t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := haulCode(t, append(c, "backup", "--host", "vps", "--quiet")...); code != exitOK || out != "" {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"restore"}, "restore needs --host NAME"},
		{[]string{"restore", "--to", "vps"}, "say whose snapshot to restore onto vps"},
		{[]string{"restore", "--host", "vps", "--to", "nope"}, "nope"},
		{[]string{"restore", "--host", "vps", "--target", f.target, "--dry-run"}, "cannot be combined with --to, --dry-run"},
		{[]string{"restore", "--host", "vps", "--target", f.target, "--map", "/a=/b"}, "cannot be combined"},
		{[]string{"restore", "--host", "vps", "--map", "nonsense"}, "nonsense"},
		{[]string{"restore", "--host", "vps", "--exclude", "/x"}, "--include/--exclude need --target DIR"},
		{[]string{"restore", "--host", "vps", "--snapshot", "ffffffff", "--target", f.target}, "ffffffff"},
		{[]string{"restore", "--host", "vps", "--include", "[oops", "--target", f.target}, "[oops"},
	} {
		if code, out, errOut := haulCode(t, append(c, tc.args...)...); code != exitConfig || !strings.Contains(errOut, tc.want) {
			t.Errorf("haul %v: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, out, errOut, exitConfig, tc.want)
		}
	}

	// The agent restore's --json: a dry run stages and verifies on the
	// agent and swaps nothing.
	code, out, errOut := haulCode(t, append(c, "restore", "--host", "vps", "--dry-run", "--json")...)
	var ar struct {
		Snapshot     string   `json:"snapshot"`
		SnapshotHost string   `json:"snapshot_host"`
		Target       string   `json:"target"`
		Paths        []string `json:"paths"`
		DryRun       bool     `json:"dry_run"`
		ChunksSent   int64    `json:"chunks_sent"`
		Wire         struct {
			BytesIn  int64 `json:"bytes_in"`
			BytesOut int64 `json:"bytes_out"`
		} `json:"wire"`
		Outcome struct {
			DryRun bool   `json:"dry_run"`
			Files  int64  `json:"files"`
			Marker string `json:"marker"`
		} `json:"agent_result"`
	}
	decode(t, out, &ar)
	if code != exitOK || len(ar.Snapshot) != 64 || ar.SnapshotHost != "vps" || ar.Target != "vps" || !ar.DryRun || !ar.Outcome.DryRun ||
		ar.Outcome.Files != 2 || ar.Outcome.Marker != "" || ar.ChunksSent == 0 || ar.Wire.BytesOut == 0 || len(ar.Paths) != 1 {
		t.Errorf("restore --dry-run --json: exit %d %+v\n%s%s", code, ar, out, errOut)
	}
	if strings.Contains(errOut, "restoring") && strings.Contains(out, "restoring") {
		t.Errorf("restore --json logs on stdout: %q", out)
	}
	code, out, errOut = haulCode(t, append(c, "restore", "--host", "vps", "--dry-run")...)
	if code != exitOK || !strings.HasPrefix(out, "dry run: snapshot "+ar.Snapshot[:8]+" of vps staged and verified on vps (2 files") {
		t.Errorf("restore --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	// Onto a host whose agent does not start: exit 1, naming it.
	if code, _, errOut := haulCode(t, append(c, "restore", "--host", "vps", "--to", "broken", "--dry-run")...); code != exitHostFailed || !strings.Contains(errOut, "no-such-agent") {
		t.Errorf("restore onto broken: exit %d, stderr %q", code, errOut)
	}

	// Local, part of the snapshot: only config.yml.
	code, out, errOut = haulCode(t, append(c, "restore", "--host", "vps", "--target", f.target, "--include", "config.yml", "--json")...)
	var lr struct {
		Snapshot string `json:"snapshot"`
		Target   string `json:"target"`
		Files    uint64 `json:"files_verified"`
	}
	decode(t, out, &lr)
	if code != exitOK || lr.Files != 1 || lr.Target != f.target || lr.Snapshot != ar.Snapshot {
		t.Errorf("restore --target --include --json: exit %d %+v\n%s", code, lr, errOut)
	}
	if _, err := os.Stat(filepath.Join(f.target, f.data, "db", "app.sqlite")); !os.IsNotExist(err) {
		t.Errorf("excluded db/app.sqlite was restored: %v", err)
	}
	code, out, _ = haulCode(t, append(c, "restore", "--host", "vps", "--snapshot", ar.Snapshot[:8], "--target", filepath.Join(f.target, "2"))...)
	if code != exitOK || out != fmt.Sprintf("restored snapshot %s to %s: 2 files verified\n", ar.Snapshot[:8], filepath.Join(f.target, "2")) {
		t.Errorf("restore --target: exit %d %q", code, out)
	}
}

// forget and prune: the plan's --json (restic forget's groups), dry runs
// that change nothing, --quiet, --prune and prune's own --json.
func TestForgetPruneExitCodesAndJSON(t *testing.T) {
	f := newFixture(t)
	c := []string{"--config", f.config}
	if code, out, errOut := haulCode(t, append(c, "init")...); code != exitOK {
		t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
	}
	for i := 0; i < 3; i++ {
		if code, _, errOut := haulCode(t, append(c, "backup", "--host", "vps", "--quiet")...); code != exitOK {
			t.Fatalf("backup: exit %d\n%s", code, errOut)
		}
	}
	snapshots := func() int {
		t.Helper()
		var sns []json.RawMessage
		_, out, _ := haulCode(t, append(c, "snapshots", "--json")...)
		decode(t, out, &sns)
		return len(sns)
	}
	// No [retention] at all: exit 2 saying what to set; nothing removed.
	for _, args := range [][]string{{"forget", "--json"}, {"forget"}} {
		if code, out, errOut := haulCode(t, append(c, args...)...); code != exitConfig || out != "" || !strings.Contains(errOut, "no retention policy applies to any snapshot: set [retention]") {
			t.Errorf("%v without retention: exit %d %q %q", args, code, out, errOut)
		}
	}
	f.appendConfig(t, "\n[retention]\nkeep_last = 1\n")
	code, out, errOut := haulCode(t, append(c, "forget", "--dry-run", "--json")...)
	var groups []struct {
		Host  string   `json:"host"`
		Paths []string `json:"paths"`
		Tags  []string `json:"tags"`
		Keep  []struct {
			ID      string `json:"id"`
			ShortID string `json:"short_id"`
		} `json:"keep"`
		Remove  []json.RawMessage `json:"remove"`
		Reasons []struct {
			Matches []string `json:"matches"`
		} `json:"reasons"`
	}
	decode(t, out, &groups)
	if code != exitOK || len(groups) != 1 || groups[0].Host != "vps" || len(groups[0].Keep) != 1 || len(groups[0].Remove) != 2 ||
		len(groups[0].Reasons) != 1 || groups[0].Keep[0].ShortID != groups[0].Keep[0].ID[:8] {
		t.Fatalf("forget --dry-run --json: exit %d\n%s%s", code, out, errOut)
	}
	if n := snapshots(); n != 3 {
		t.Errorf("forget --dry-run removed snapshots: %d left", n)
	}
	code, out, errOut = haulCode(t, append(c, "forget", "--dry-run")...)
	if code != exitOK || !strings.Contains(out, "snapshots of host vps, paths "+f.data+": keep 1 latest") || !strings.Contains(out, "would remove 2:") ||
		!strings.Contains(errOut, "would remove 2 snapshots") {
		t.Errorf("forget --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "forget", "--prune", "--max-unused", "lots")...); code != exitConfig || !strings.Contains(errOut, "lots") {
		t.Errorf("forget --prune --max-unused lots: exit %d %q", code, errOut)
	}
	// (the bad --max-unused is found after the snapshots are removed)
	if n := snapshots(); n != 1 {
		t.Fatalf("forget removed down to %d snapshots, want 1", n)
	}
	if code, out, errOut := haulCode(t, append(c, "forget", "--prune", "--quiet")...); code != exitOK || out != "" || errOut != "" {
		t.Errorf("forget --prune --quiet: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	var pr struct {
		DryRun       *bool    `json:"dry_run"`
		BlobsUsed    *uint    `json:"blobs_used"`
		BytesUsed    *uint64  `json:"bytes_used"`
		BlobsRemoved *uint    `json:"blobs_removed"`
		PacksKept    *uint    `json:"packs_kept"`
		DurationMS   *float64 `json:"duration_ms"`
	}
	code, out, errOut = haulCode(t, append(c, "prune", "--dry-run", "--json")...)
	decode(t, out, &pr)
	if code != exitOK || pr.DryRun == nil || !*pr.DryRun || pr.BlobsUsed == nil || *pr.BlobsUsed == 0 || pr.BlobsRemoved == nil || pr.PacksKept == nil || pr.DurationMS == nil {
		t.Errorf("prune --dry-run --json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = haulCode(t, append(c, "prune")...)
	if code != exitOK || out != "" || !strings.Contains(errOut, "prune removed ") || !strings.Contains(errOut, "still in use") {
		t.Errorf("prune: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "prune", "--max-unused", "lots")...); code != exitConfig || !strings.Contains(errOut, "lots") {
		t.Errorf("prune --max-unused lots: exit %d %q", code, errOut)
	}
	if code, _, errOut := haulCode(t, "--config", filepath.Join(t.TempDir(), "none.toml"), "prune"); code != exitConfig || !strings.Contains(errOut, "none.toml") {
		t.Errorf("prune without a config: exit %d %q", code, errOut)
	}
}

// status in text, --quiet and --json: exit 1 names the stale host.
func TestStatusTextQuietAndJSON(t *testing.T) {
	f := newFixture(t)
	c := []string{"--config", f.config}
	if code, out, errOut := haulCode(t, append(c, "init")...); code != exitOK {
		t.Fatalf("init: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "backup", "--quiet")...); code != exitHostFailed {
		t.Fatalf("backup: exit %d\n%s", code, errOut)
	}
	code, out, errOut := haulCode(t, append(c, "status")...)
	if code != exitHostFailed || !strings.HasPrefix(out, "HOST ") || !strings.Contains(out, "STALE") || !strings.Contains(out, "broken: last run failed: ") ||
		!strings.Contains(errOut, "not ok: broken (") {
		t.Errorf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = haulCode(t, append(c, "status", "--quiet")...)
	if code != exitHostFailed || out != "" || !strings.Contains(errOut, "HOST ") || !strings.Contains(errOut, "not ok: broken (") {
		t.Errorf("status --quiet with a stale host: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := haulCode(t, append(c, "status", "--quiet", "--host", "vps")...); code != exitOK || out != "" || errOut != "" {
		t.Errorf("status --quiet --host vps: exit %d %q %q", code, out, errOut)
	}
	code, out, _ = haulCode(t, append(c, "status", "--host", "vps", "--json")...)
	var st struct {
		OK          bool     `json:"ok"`
		Stale       []string `json:"stale"`
		DrillFailed []string `json:"drill_failed"`
		Hosts       []struct {
			Host          string  `json:"host"`
			Stale         bool    `json:"stale"`
			MaxAge        string  `json:"max_age"`
			MaxAgeSeconds float64 `json:"max_age_seconds"`
			MaxAgeSource  string  `json:"max_age_source"`
			Newest        *struct {
				ID         string  `json:"id"`
				ShortID    string  `json:"short_id"`
				AgeSeconds float64 `json:"age_seconds"`
				Files      *uint64 `json:"files"`
			} `json:"newest"`
			LastRun *struct {
				OK bool `json:"ok"`
			} `json:"last_run"`
		} `json:"hosts"`
	}
	decode(t, out, &st)
	if code != exitOK || !st.OK || st.Stale == nil || len(st.Hosts) != 1 {
		t.Fatalf("status --host vps --json: exit %d\n%s", code, out)
	}
	if h := st.Hosts[0]; h.Host != "vps" || h.Stale || h.Newest == nil || h.Newest.ShortID != h.Newest.ID[:8] || h.Newest.Files == nil || *h.Newest.Files != 2 ||
		h.LastRun == nil || !h.LastRun.OK || h.MaxAgeSeconds <= 0 || h.MaxAge == "" || h.MaxAgeSource == "" {
		t.Errorf("status --json host: %s", out)
	}
	if code, _, errOut := haulCode(t, append(c, "status", "--host", "nope")...); code != exitConfig || !strings.Contains(errOut, "nope") {
		t.Errorf("status --host nope: exit %d %q", code, errOut)
	}
}

// hostkey's subcommands: --json shapes, refusals (exit 2) and pin's
// idempotence.
func TestHostKeyExitCodesAndJSON(t *testing.T) {
	dir := t.TempDir()
	id := filepath.Join(dir, "id_backup")
	must(t, os.WriteFile(id, []byte("not read by hostkey\n"), 0o600))
	known := filepath.Join(dir, "known_hosts")
	cfgPath := filepath.Join(dir, "haul.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`repository = %q
password_file = %q
host_keys_dir = %q

[[hosts]]
name = "vps"
address = "127.0.0.1:2222"
identity_file = %q
known_hosts = %q

[[hosts]]
name = "local"
command = ["/bin/false"]
`, filepath.Join(dir, "repo"), filepath.Join(dir, "password"), filepath.Join(dir, "keys"), id, known)), 0o600))
	c := []string{"--config", cfgPath}

	code, out, errOut := haulCode(t, append(c, "hostkey", "generate", "--host", "vps", "--json")...)
	var k struct {
		Host, Type, Fingerprint string
		PrivatePath             string `json:"private_path"`
		PublicPath              string `json:"public_path"`
		PublicKey               string `json:"public_key"`
	}
	decode(t, out, &k)
	if code != exitOK || k.Host != "vps" || k.Type != "ed25519" || !strings.HasPrefix(k.Fingerprint, "SHA256:") ||
		k.PrivatePath != filepath.Join(dir, "keys", "vps", "ssh_host_ed25519_key") || k.PublicPath != k.PrivatePath+".pub" || !strings.HasPrefix(k.PublicKey, "ssh-ed25519 ") {
		t.Fatalf("hostkey generate --json: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "hostkey", "generate", "--host", "vps")...); code != exitConfig || !strings.Contains(errOut, "--force") {
		t.Errorf("hostkey generate over a kept key: exit %d %q", code, errOut)
	}
	code, out, errOut = haulCode(t, append(c, "hostkey", "generate", "--host", "local")...)
	if code != exitOK || !strings.HasPrefix(out, "generated host key of local: SHA256:") || !strings.Contains(errOut, "next: `haul hostkey pin --host local`") {
		t.Errorf("hostkey generate: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "hostkey", "import", "--host", "vps", "--from", filepath.Join(dir, "none"), "--force")...); code != exitConfig || !strings.Contains(errOut, "none") {
		t.Errorf("hostkey import of a missing file: exit %d %q", code, errOut)
	}
	code, out, errOut = haulCode(t, append(c, "hostkey", "import", "--host", "local", "--from", k.PrivatePath, "--force", "--json")...)
	var imp struct{ Fingerprint string }
	decode(t, out, &imp)
	if code != exitOK || imp.Fingerprint != k.Fingerprint {
		t.Errorf("hostkey import --json: exit %d\n%s%s", code, out, errOut)
	}

	extra := filepath.Join(dir, "extra")
	code, out, errOut = haulCode(t, append(c, "hostkey", "export", "--host", "vps", "--out", extra, "--json")...)
	var ex struct {
		Host        string   `json:"host"`
		Fingerprint string   `json:"fingerprint"`
		Files       []string `json:"files"`
	}
	decode(t, out, &ex)
	if code != exitOK || ex.Host != "vps" || ex.Fingerprint != k.Fingerprint || len(ex.Files) != 2 {
		t.Errorf("hostkey export --json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = haulCode(t, append(c, "hostkey", "export", "--host", "vps", "--out", extra)...)
	if code != exitOK || !strings.HasSuffix(out, "host key of vps: "+k.Fingerprint+"\n") || strings.Contains(out, "PRIVATE") {
		t.Errorf("hostkey export: exit %d %q", code, out)
	}
	if code, _, errOut := haulCode(t, append(c, "hostkey", "export", "--host", "nope")...); code != exitConfig || !strings.Contains(errOut, "nope") {
		t.Errorf("hostkey export --host nope: exit %d %q", code, errOut)
	}

	code, out, errOut = haulCode(t, append(c, "hostkey", "pin", "--host", "vps", "--json")...)
	var pin struct {
		KnownHosts string `json:"known_hosts"`
		Pattern    string `json:"pattern"`
		Line       string `json:"line"`
		Changed    bool   `json:"changed"`
		Replaced   int    `json:"replaced"`
	}
	decode(t, out, &pin)
	if code != exitOK || pin.KnownHosts != known || pin.Pattern != "[127.0.0.1]:2222" || !pin.Changed || pin.Replaced != 0 || !strings.HasPrefix(pin.Line, "[127.0.0.1]:2222 ssh-ed25519 ") {
		t.Errorf("hostkey pin --json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = haulCode(t, append(c, "hostkey", "pin", "--host", "vps")...)
	if code != exitOK || out != fmt.Sprintf("%s already pins %s for [127.0.0.1]:2222: unchanged\n", known, k.Fingerprint) {
		t.Errorf("hostkey pin again: exit %d %q", code, out)
	}
	code, out, _ = haulCode(t, append(c, "hostkey", "pin", "--host", "vps", "--address", "vps.example.com:22")...)
	if code != exitOK || out != fmt.Sprintf("pinned %s for vps.example.com in %s\n", k.Fingerprint, known) {
		t.Errorf("hostkey pin --address: exit %d %q", code, out)
	}
	if code, _, errOut := haulCode(t, append(c, "hostkey", "pin", "--host", "local")...); code != exitConfig || !strings.Contains(errOut, "give --address and set known_hosts") {
		t.Errorf("hostkey pin of a command host: exit %d %q", code, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "hostkey", "pin")...); code != exitConfig || !strings.Contains(errOut, "host") {
		t.Errorf("hostkey pin without --host: exit %d %q", code, errOut)
	}
}

// rebuild's refusals before anything happens (exit 2), and a dry run's
// --json against the fake Hetzner API: preflight fails, exit 1.
func TestRebuildRefusalsAndDryRunJSON(t *testing.T) {
	f := newFixture(t)
	c := []string{"--config", f.config}
	if code, _, errOut := haulCode(t, append(c, "rebuild", "--host", "vps", "--dry-run")...); code != exitConfig || !strings.Contains(errOut, "host vps has no [hosts.rebuild] section") {
		t.Errorf("rebuild without [hosts.rebuild]: exit %d %q", code, errOut)
	}
	if code, _, errOut := haulCode(t, append(c, "rebuild")...); code != exitConfig || !strings.Contains(errOut, "host") {
		t.Errorf("rebuild without --host: exit %d %q", code, errOut)
	}
	api := fakehcloud.Start(t, "cli-test-token")
	token := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(token, []byte(api.Token+"\n"), 0o600))
	id := filepath.Join(t.TempDir(), "id")
	must(t, os.WriteFile(id, []byte("unused\n"), 0o600))
	f.appendConfig(t, fmt.Sprintf(`
[[hosts]]
name = "rb"
address = "127.0.0.1:1"
identity_file = %q
restore_identity_file = %[1]q
known_hosts = %q

[hosts.rebuild]
hcloud_token_file = %q
hcloud_endpoint = %q
tofu_dir = %q
dashboard = "pangolin.example.com"
`, id, filepath.Join(t.TempDir(), "known_hosts"), token, api.URL, t.TempDir()))
	if runlog.IsTerminal(os.Stdin) {
		t.Log("stdin is a terminal: the --yes refusal is not checked")
	} else if code, _, errOut := haulCode(t, append(c, "rebuild", "--host", "rb")...); code != exitConfig || !strings.Contains(errOut, "refusing to rebuild rb without --yes") {
		t.Errorf("rebuild without --yes: exit %d %q", code, errOut)
	}
	code, out, errOut := haulCode(t, append(c, "rebuild", "--host", "rb", "--dry-run", "--json")...)
	var res struct {
		Host      string `json:"host"`
		Server    string `json:"server"`
		DryRun    bool   `json:"dry_run"`
		OK        bool   `json:"ok"`
		Error     string `json:"error"`
		Preflight *struct {
			Checks []struct {
				Name   string `json:"name"`
				OK     bool   `json:"ok"`
				Detail string `json:"detail"`
			} `json:"checks"`
		} `json:"preflight"`
		Phases []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"phases"`
	}
	decode(t, out, &res)
	if code != exitHostFailed || res.Host != "rb" || res.Server != "rb" || !res.DryRun || res.OK || res.Error == "" ||
		res.Preflight == nil || len(res.Preflight.Checks) == 0 || len(res.Phases) == 0 || res.Phases[0].Name != "preflight" || res.Phases[0].Status != "failed" {
		t.Errorf("rebuild --dry-run --json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = haulCode(t, append(c, "rebuild", "--host", "rb", "--dry-run")...)
	if code != exitHostFailed || !strings.HasPrefix(out, "preflight of rb:\n") || !strings.HasSuffix(out, "dry run: preflight failed; nothing was changed\n") {
		t.Errorf("rebuild --dry-run: exit %d\n%s", code, out)
	}
}

// truenas cron install's refusals, before any middleware is asked (the
// installs themselves run in puller/truenas against stand-ins of each API).
func TestTrueNASCronInstallRefusals(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty-key")
	must(t, os.WriteFile(empty, []byte("\n"), 0o600))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--schedule", "61 * * * *"}, "61"},
		{[]string{"--schedule", "0 3 * *"}, "schedule"},
		{[]string{"--api-key-file", empty}, "--api-key-file needs --url"},
		{[]string{"--url", "https://nas.invalid", "--api-key-file", empty}, "is empty"},
		{[]string{"--url", "https://nas.invalid", "--api-key-file", filepath.Join(dir, "none")}, "read --api-key-file"},
	} {
		args := append([]string{"truenas", "cron", "install", "--config", filepath.Join(dir, "haul.toml"), "--binary", "/mnt/tank/haul"}, tc.args...)
		if code, out, errOut := haulCode(t, args...); code != exitConfig || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("haul %v: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, out, errOut, exitConfig, tc.want)
		}
	}
}
