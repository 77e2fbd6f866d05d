package rebuild_test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/rebuild"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/exp/mockutil"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"
)

func (w *world) statePath() string { return rebuild.StatePath(w.cache, hostName) }

func decodeResult(t *testing.T, r run) *rebuild.Result {
	t.Helper()
	var res rebuild.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("rebuild --json printed no JSON (%v)\nstdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	return &res
}

// noSecrets fails if the API token shows up anywhere haul or tofu could
// have put it: haul's output, tofu's argv.
func (w *world) noSecrets(r run) {
	w.t.Helper()
	if strings.Contains(r.stdout+r.stderr, w.token) {
		w.t.Fatal("the Hetzner token appears in haul's output")
	}
	for n := 1; n <= w.tofuCalls(); n++ {
		if strings.Contains(w.tofuFile("args", n), w.token) {
			w.t.Fatal("the Hetzner token is on tofu's command line")
		}
	}
}

// finished checks a successful rebuild: every phase done (or skipped) with
// a time, the state file gone, the new VPS ready with the old data.
func (w *world) finished(r run) *rebuild.Result {
	w.t.Helper()
	if r.code != 0 {
		w.t.Fatalf("rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	w.noSecrets(r)
	res := decodeResult(w.t, r)
	if !res.OK || len(res.Phases) != len(rebuild.Phases) {
		w.t.Fatalf("result: %+v", res)
	}
	for i, p := range res.Phases {
		if p.Name != rebuild.Phases[i] || p.Status != rebuild.StatusDone || p.MS <= 0 || p.Run == 0 {
			w.t.Errorf("phase %d: %+v, want %s done with a time", i, p, rebuild.Phases[i])
		}
	}
	if res.RecoveryMS < res.PhasesMS || res.PhasesMS <= 0 {
		w.t.Errorf("recovery %v ms, phases %v ms", res.RecoveryMS, res.PhasesMS)
	}
	if exists(w.statePath()) {
		w.t.Error("the state file outlived a finished rebuild")
	}
	if !exists(w.new.marker()) {
		w.t.Error("the new VPS has no ready marker")
	}
	w.compareWithGone()
	return res
}

// failed checks a run stopped in phase with a message naming the cause.
func (w *world) failed(r run, phase string, msgs ...string) {
	w.t.Helper()
	if r.code != 1 {
		w.t.Fatalf("rebuild: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	w.noSecrets(r)
	for _, m := range msgs {
		if !strings.Contains(r.stderr, m) {
			w.t.Errorf("stderr lacks %q:\n%s", m, r.stderr)
		}
	}
	if phase == rebuild.PhasePreflight {
		if exists(w.statePath()) {
			w.t.Error("a failed preflight left a state file")
		}
		return
	}
	if !strings.Contains(r.stdout, "stopped in phase "+phase) {
		w.t.Errorf("summary does not name phase %s:\n%s", phase, r.stdout)
	}
	if !exists(w.statePath()) {
		w.t.Fatal("a failed rebuild left no state file to resume from")
	}
}

// TestRebuild is the whole recovery: a scheduled backup, then `haul
// rebuild` takes a last backup, runs (stand-in) tofu, waits for the new
// VPS's SSH with the unchanged pin, restores, sees it ready and healthy.
func TestRebuild(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.haul("backup", "--host", hostName)
	pin, err := os.ReadFile(w.known)
	must(t, err)

	// A failed preflight (the server is locked) changes nothing; the
	// rerun is a fresh rebuild.
	w.expect(getServer(serverJSON(oldID, "running", true)),
		getIPv4(primaryIPJSON(ipv4ID, hostName+"-ipv4", "ipv4", "127.0.0.1", oldID)),
		getIPv6(primaryIPJSON(ipv6ID, hostName+"-ipv6", "ipv6", "2001:db8:1::/64", oldID)))
	w.failed(w.haulRun("rebuild", "--host", hostName, "--yes"), rebuild.PhasePreflight, "is locked", "nothing was changed")
	if w.tofuCalls() != 0 {
		t.Fatal("tofu ran after a failed preflight")
	}

	w.preflightOK()
	w.newServerUp()
	r := w.haulRun("rebuild", "--host", hostName, "--yes", "--json")
	t.Logf("stderr:\n%s", r.stderr)
	res := w.finished(r)

	// tofu was run once, as documented, with the token in its environment.
	if n := w.tofuCalls(); n != 1 {
		t.Fatalf("tofu ran %d times", n)
	}
	if args := strings.Fields(w.tofuFile("args", 1)); strings.Join(args, " ") != "apply -input=false -auto-approve -no-color -replace=hcloud_server.vps" {
		t.Errorf("tofu args %q", args)
	}
	env := w.tofuFile("env", 1)
	for _, want := range []string{"cwd=" + filepath.Join(testenv.ModuleRoot(t), "tofu"), "token=set", "haul_host=" + hostName, "in_automation=1"} {
		if !strings.Contains(env, want) {
			t.Errorf("tofu's environment lacks %q:\n%s", want, env)
		}
	}
	for _, want := range []string{"tofu: hcloud_server.vps: Destroying... [id=42]", "tofu: Apply complete!"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("tofu's output was not streamed (%q missing):\n%s", want, r.stderr)
		}
	}
	// The real extra-files script exported the kept key; the new sshd
	// runs with it and haul connected with the pin it had before.
	if x := w.tofuFile("extra-files", 1); !strings.Contains(x, "etc/ssh/ssh_host_ed25519_key") || !strings.Contains(x, "SHA256:") {
		t.Errorf("extra-files script output:\n%s", x)
	}
	if got := w.new.sshd.HostKey.AuthorizedLine; got != w.hostKey.AuthorizedLine {
		t.Errorf("the new VPS has host key %s, the kept one is %s", got, w.hostKey.AuthorizedLine)
	}
	if now, _ := os.ReadFile(w.known); string(now) != string(pin) {
		t.Errorf("known_hosts changed during the rebuild:\n%s\nwas:\n%s", now, pin)
	}

	// The final backup's snapshot is what came back; the reference restic
	// CLI restores the same tree the new VPS now holds.
	if res.Snapshot == nil || res.Snapshot.Source != "final-backup" {
		t.Fatalf("restored snapshot %+v, want the final backup's", res.Snapshot)
	}
	var sns []struct {
		ID   string   `json:"id"`
		Tags []string `json:"tags"`
	}
	must(t, json.Unmarshal(testenv.Restic(t, w.repo, w.pwFile, "snapshots", "--json"), &sns))
	if len(sns) != 2 || sns[1].ID != res.Snapshot.ID || !strings.Contains(strings.Join(sns[1].Tags, ","), "rebuild") {
		t.Fatalf("snapshots %+v, restored %s", sns, res.Snapshot.ID)
	}
	target := t.TempDir()
	testenv.Restic(t, w.repo, w.pwFile, "restore", res.Snapshot.ID, "--target", target)
	sameTree(t, filepath.Join(target, w.data), w.data)
	if fi, err := os.Stat(filepath.Join(w.data, "config", "letsencrypt", "acme.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("acme.json: %v %v", fi, err)
	}

	// The health check asked the new server for the dashboard by name.
	if sni, _ := w.sni.Load().(string); sni != dashboard {
		t.Errorf("health check SNI %q, want %q", sni, dashboard)
	}
	if host, _ := w.hostHeader.Load().(string); host != dashboard {
		t.Errorf("health check Host %q, want %q", host, dashboard)
	}
	if res.Runs != 1 {
		t.Errorf("runs = %d: the failed preflight must leave nothing to resume", res.Runs)
	}
	if res.NewServerID != newID || res.Preflight.Server.ID != oldID {
		t.Errorf("server ids: old %d new %d", res.Preflight.Server.ID, res.NewServerID)
	}
}

var summaryLine = regexp.MustCompile(`(?m)^\s+(\S+)\s+(\d+\.\d\ds)\s+(done|skipped)\b`)

// TestRebuildResumes injects a failure into a phase: the run stops with a
// message naming the cause and the next step, a rerun continues with the
// failed phase (never redoing tofu or the backup) and finishes. Preflight
// is in TestRebuild, wait-ssh in TestRebuildWaitsForThePinnedKey.
func TestRebuildResumes(t *testing.T) {
	cases := []struct {
		phase string
		// breakIt queues the first run's API calls and injects the failure;
		// fixIt repairs it and queues the rerun's API calls.
		breakIt, fixIt func(w *world)
		msgs           []string
		tofuRuns       int // stand-in tofu calls after both runs
		snapshots      int // snapshots after both runs
	}{
		{
			phase: rebuild.PhaseFinalBackup,
			breakIt: func(w *world) {
				w.preflightOK()
				// The old agent answers, but its backup fails.
				must(w.t, os.WriteFile(w.old.agentCfg, []byte(`{"host":"vps","data_paths":["relative/path"],"state_dir":"/nonexistent"}`), 0o600))
			},
			fixIt: func(w *world) {
				cfg, _ := json.Marshal(map[string]any{"host": hostName, "data_paths": []string{w.data}, "state_dir": w.old.state})
				must(w.t, os.WriteFile(w.old.agentCfg, cfg, 0o600))
				w.newServerUp()
			},
			msgs:     []string{"phase final-backup failed", "--skip-final-backup", "not absolute"},
			tofuRuns: 1, snapshots: 2,
		},
		{
			phase: rebuild.PhaseTofu,
			breakIt: func(w *world) {
				w.preflightOK()
				writeFile(w.t, filepath.Join(w.standin, "fail"), "", 0o644)
			},
			fixIt: func(w *world) {
				must(w.t, os.Remove(filepath.Join(w.standin, "fail")))
				w.newServerUp()
			},
			msgs:     []string{"exited with status 1", "server limit exceeded (stand-in)", "continues with tofu apply"},
			tofuRuns: 2, snapshots: 2,
		},
		{
			phase: rebuild.PhaseRestore,
			breakIt: func(w *world) {
				w.inject.readyMarker = true
				w.preflightOK()
				w.newServerUp()
			},
			fixIt: func(w *world) {
				must(w.t, os.Remove(w.new.marker()))
			},
			msgs:     []string{"phase restore failed", "allow_inplace_restore", "rerun to restore again"},
			tofuRuns: 1, snapshots: 2,
		},
		{
			phase: rebuild.PhaseHealth,
			breakIt: func(w *world) {
				w.set("health_timeout", "2s")
				w.healthDown.Store(true)
				w.preflightOK()
				w.newServerUp()
			},
			fixIt:    func(w *world) { w.healthDown.Store(false) },
			msgs:     []string{"is not healthy after health_timeout 2s", "503 Service Unavailable", "continues with the health check"},
			tofuRuns: 1, snapshots: 2,
		},
	}
	for _, c := range cases {
		t.Run(c.phase, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.haul("backup", "--host", hostName)
			c.breakIt(w)
			first := w.haulRun("rebuild", "--host", hostName, "--yes")
			w.failed(first, c.phase, c.msgs...)
			b, err := os.ReadFile(w.statePath())
			must(t, err)
			before := &rebuild.Result{}
			must(t, json.Unmarshal(b, before))
			if p := before.Phase(c.phase); p.Status != rebuild.StatusFailed || p.Error == "" {
				t.Fatalf("state: phase %s is %+v", c.phase, p)
			}

			c.fixIt(w)
			second := w.haulRun("rebuild", "--host", hostName, "--yes", "--json")
			res := w.finished(second)
			if !strings.Contains(second.stderr, "resuming the rebuild") {
				t.Errorf("the rerun did not say it resumes:\n%s", second.stderr)
			}
			// Phases before the failed one are from run 1; it and the rest
			// from run 2.
			if res.Runs != 2 {
				t.Errorf("runs = %d, want 2", res.Runs)
			}
			seen := false
			for _, p := range res.Phases {
				if p.Name == c.phase {
					seen = true
				}
				want := 1
				if seen {
					want = 2
				}
				if p.Run != want {
					t.Errorf("phase %s ran in run %d, want %d", p.Name, p.Run, want)
				}
				if !seen && p.MS != before.Phase(p.Name).MS {
					t.Errorf("phase %s was timed again on resume", p.Name)
				}
			}
			if n := w.tofuCalls(); n != c.tofuRuns {
				t.Errorf("tofu ran %d times, want %d", n, c.tofuRuns)
			}
			var sns []json.RawMessage
			must(t, json.Unmarshal(testenv.Restic(t, w.repo, w.pwFile, "snapshots", "--json"), &sns))
			if len(sns) != c.snapshots {
				t.Errorf("%d snapshots, want %d (the final backup runs once)", len(sns), c.snapshots)
			}
		})
	}
}

// TestRebuildWaitsForThePinnedKey: SSH that never comes up ends the wait
// after ssh_timeout; a new server that comes up with another host key
// (the kept one was not installed) is never trusted, and the wait ends
// with that reason. Each rerun continues with the wait (tofu runs once);
// the last, with the kept key in place, prints the per-phase summary.
func TestRebuildWaitsForThePinnedKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.haul("backup", "--host", hostName)
	w.set("ssh_timeout", "2s")
	w.inject.noSSH = true
	w.preflightOK()
	w.newServerUp()
	w.failed(w.haulRun("rebuild", "--host", hostName, "--yes"), rebuild.PhaseWaitSSH,
		"no SSH with the pinned host key at "+w.primary.addr, "within ssh_timeout 2s", "continues with this wait")
	// An impostor (or an install without the extra files) on the address.
	impostor := w.startServer(nil)
	w.primary.set(impostor.sshd.Addr)
	w.newServerUp()
	second := w.haulRun("rebuild", "--host", hostName, "--yes")
	w.failed(second, rebuild.PhaseWaitSSH, "offers another host key than the pinned one", "extra_files_script", "HOST KEY MISMATCH")
	if exists(impostor.marker()) {
		t.Fatal("haul restored onto a server whose host key is not the pinned one")
	}

	w.startNew(w.pendingKey)
	w.newServerUp()
	third := w.haulRun("rebuild", "--host", hostName, "--yes")
	if third.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", third.code, third.stdout, third.stderr)
	}
	w.noSecrets(third)
	if !strings.Contains(third.stdout, "rebuilt vps in ") || !strings.Contains(third.stdout, "3 run(s)") {
		t.Errorf("summary:\n%s", third.stdout)
	}
	got := map[string]bool{}
	for _, m := range summaryLine.FindAllStringSubmatch(third.stdout, -1) {
		got[m[1]] = true
	}
	for _, p := range rebuild.Phases {
		if !got[p] {
			t.Errorf("summary has no timed line for phase %s:\n%s", p, third.stdout)
		}
	}
	if !strings.Contains(third.stdout, "phases total") {
		t.Errorf("summary has no total:\n%s", third.stdout)
	}
	if n := w.tofuCalls(); n != 1 {
		t.Errorf("tofu ran %d times, want 1", n)
	}
	if exists(w.statePath()) {
		t.Error("the state file outlived a finished rebuild")
	}
	if !exists(w.new.marker()) {
		t.Error("the new VPS has no ready marker")
	}
	w.compareWithGone()
}

// TestPreflight: each problem ends with a clear message before anything
// changes; the stand-in tofu is never run.
func TestPreflight(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.haul("backup", "--host", hostName)
	ip4 := getIPv4(primaryIPJSON(ipv4ID, hostName+"-ipv4", "ipv4", "127.0.0.1", oldID))
	ip6 := getIPv6(primaryIPJSON(ipv6ID, hostName+"-ipv6", "ipv6", "2001:db8:1::/64", oldID))
	// With the server gone, its primary IPs are unassigned.
	ip4free := getIPv4(primaryIPJSON(ipv4ID, hostName+"-ipv4", "ipv4", "127.0.0.1", 0))
	ip6free := getIPv6(primaryIPJSON(ipv6ID, hostName+"-ipv6", "ipv6", "2001:db8:1::/64", 0))
	unprotected := primaryIPJSON(ipv6ID, hostName+"-ipv6", "ipv6", "2001:db8:1::/64", oldID)
	unprotected.PrimaryIPs[0].AutoDelete = true
	unprotected.PrimaryIPs[0].Protection.Delete = false

	var sns []struct {
		ID string `json:"id"`
	}
	must(t, json.Unmarshal(testenv.Restic(t, w.repo, w.pwFile, "snapshots", "--json"), &sns))
	first := sns[0].ID[:8]

	cases := []struct {
		name  string
		reqs  []mockutil.Request
		args  []string
		code  int
		want  []string // in stderr (errors) or stdout (dry-run plan)
		where string
	}{
		{
			name: "no --yes and no terminal", args: nil, code: 2, where: "stderr",
			want: []string{"refusing to rebuild vps without --yes: stdin is not a terminal"},
		},
		{
			name: "invalid token",
			reqs: []mockutil.Request{{Method: "GET", Path: "/servers?name=vps", Status: 401,
				JSON: schema.ErrorResponse{Error: schema.Error{Code: "unauthorized", Message: "unable to authenticate"}}}},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"hetzner: Hetzner Cloud rejected the API token (unauthorized): check hcloud_token_file", "nothing was changed"},
		},
		{
			name: "missing server",
			reqs: []mockutil.Request{getServer(schema.ServerListResponse{Servers: []schema.Server{}}), ip4free, ip6free},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"server: no server named vps in the project this token belongs to", "--allow-missing-server"},
		},
		{
			name: "locked server",
			reqs: []mockutil.Request{getServer(serverJSON(oldID, "running", true)), ip4, ip6},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"server: server vps (id 42) is locked: an action is running on it", "then rerun"},
		},
		{
			name: "missing primary IP",
			reqs: []mockutil.Request{getServer(serverJSON(oldID, "running", false)), getIPv4(schema.PrimaryIPListResponse{PrimaryIPs: []schema.PrimaryIP{}}), ip6},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"primary ipv4: no primary IP named vps-ipv4", "DNS points at nothing"},
		},
		{
			name: "primary IP without protection",
			reqs: []mockutil.Request{getServer(serverJSON(oldID, "running", false)), ip4, getIPv6(unprotected)},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"primary ipv6: vps-ipv6 (2001:db8:1::/64): auto_delete is on", "delete protection is off"},
		},
		{
			name: "running server, dry run",
			reqs: []mockutil.Request{getServer(serverJSON(oldID, "running", false)), ip4, ip6},
			args: []string{"--dry-run"}, code: 0, where: "stdout",
			want: []string{"ok    server", "server vps: id 42, running, not locked", "ok    snapshot", "every chunk indexed",
				"-replace=hcloud_server.vps, which DESTROYS server vps (id 42)", "dry run: nothing was changed"},
		},
		{
			name: "missing server allowed, dry run",
			reqs: []mockutil.Request{getServer(schema.ServerListResponse{Servers: []schema.Server{}}), ip4free, ip6free},
			args: []string{"--dry-run", "--allow-missing-server"}, code: 0, where: "stdout",
			want: []string{"tofu creates it (--allow-missing-server)", "which creates server vps", "skipped: there is no old server"},
		},
		{
			name: "primary IP held by another server",
			reqs: []mockutil.Request{getServer(schema.ServerListResponse{Servers: []schema.Server{}}),
				getIPv4(primaryIPJSON(ipv4ID, hostName+"-ipv4", "ipv4", "127.0.0.1", 77)), ip6free},
			args: []string{"--yes", "--allow-missing-server"}, code: 1, where: "stderr",
			want: []string{"primary ipv4: vps-ipv4 (127.0.0.1): it is assigned to server 77, not to vps"},
		},
		{
			name: "chosen snapshot, dry run",
			reqs: []mockutil.Request{getServer(serverJSON(oldID, "running", false)), ip4, ip6},
			args: []string{"--dry-run", "--snapshot", first}, code: 0, where: "stdout",
			want: []string{"(chosen with --snapshot)", "skipped (--snapshot chooses the data)", "restore snapshot " + first + " of"},
		},
		{
			name: "unknown snapshot",
			reqs: []mockutil.Request{getServer(serverJSON(oldID, "running", false)), ip4, ip6},
			args: []string{"--yes", "--snapshot", "deadbeef"}, code: 1, where: "stderr",
			want: []string{"snapshot: --snapshot deadbeef: no snapshot", "haul snapshots"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w.t = t
			w.expect(c.reqs...)
			r := w.haulRun(append([]string{"rebuild", "--host", hostName}, c.args...)...)
			t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, c.code, r.stdout, r.stderr)
			}
			out := r.stderr
			if c.where == "stdout" {
				out = r.stdout
			}
			for _, want := range c.want {
				if !strings.Contains(out, want) {
					t.Errorf("%s lacks %q:\n%s", c.where, want, out)
				}
			}
			if strings.Contains(c.name, "server") && strings.Contains(c.name, "dry run") && strings.Contains(r.stdout, "-replace") == strings.Contains(c.name, "missing") {
				t.Errorf("plan and -replace disagree:\n%s", r.stdout)
			}
			w.noSecrets(r)
			if n := w.tofuCalls(); n != 0 {
				t.Fatalf("tofu ran %d times", n)
			}
			if exists(w.statePath()) {
				t.Fatal("preflight left a state file")
			}
			if w.old == nil || !exists(filepath.Join(w.data, "config", "db", "db.sqlite")) {
				t.Fatal("the old server or its data is gone")
			}
		})
	}
	t.Run("terminal, wrong name typed", func(t *testing.T) {
		w.t = t
		confirmOnTerminal(t, w)
	})
}

// confirmOnTerminal: without --yes on a terminal, haul shows the
// preflight and the plan and goes on only when the host's name is typed.
func confirmOnTerminal(t *testing.T, w *world) {
	testenv.Require(t, "script", "apt-get install bsdutils")
	w.preflightOK()
	quoted := []string{filepath.Join(w.bins, "haul"), "--config", w.cfgPath, "rebuild", "--host", hostName}
	for i, a := range quoted {
		quoted[i] = "'" + a + "'"
	}
	// script(1) gives haul a terminal; the answer is typed into it.
	cmd := exec.Command("script", "-qec", strings.Join(quoted, " "), "/dev/null")
	cmd.Env = w.env()
	stdin, err := cmd.StdinPipe()
	must(t, err)
	out, err := func() ([]byte, error) {
		var b strings.Builder
		cmd.Stdout, cmd.Stderr = &b, &b
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		_, _ = io.WriteString(stdin, "vps-old\n")
		err := cmd.Wait()
		stdin.Close()
		return []byte(b.String()), err
	}()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1\n%s", err, out)
	}
	for _, want := range []string{"ok    server", "plan for vps:", "DESTROYS server vps (id 42)", "type the host's name (vps) to go ahead:", "not confirmed; nothing was changed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("terminal shows no %q:\n%s", want, out)
		}
	}
	if w.tofuCalls() != 0 || exists(w.statePath()) {
		t.Fatal("an unconfirmed rebuild ran tofu or left state")
	}
}
