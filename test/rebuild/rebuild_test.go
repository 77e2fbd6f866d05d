package rebuild_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/rebuild"
	"github.com/haulproject/haul/tofu/fakehcloud"
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

// noSecrets fails if the API token or the install key shows up anywhere
// haul or tofu could have put it: haul's output (tofu's streamed in it),
// the install module's inputs.
func (w *world) noSecrets(r run) {
	w.t.Helper()
	key, err := os.ReadFile(w.installKey.PrivatePath)
	must(w.t, err)
	secret := strings.Split(strings.TrimSpace(string(key)), "\n")[1] // a line of the key's body
	if strings.Contains(r.stdout+r.stderr, w.token) {
		w.t.Fatal("the Hetzner token appears in haul's output")
	}
	if strings.Contains(r.stdout+r.stderr, secret) {
		w.t.Fatal("the install key appears in haul's output")
	}
	for n := 1; n <= w.wd.Installs(); n++ {
		if a := w.standinFile("args", n); strings.Contains(a, w.token) || strings.Contains(a, secret) {
			w.t.Fatal("a secret is in the install module's inputs")
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
// rebuild` takes a last backup, runs the real tofu and provider (against
// the fake API) to replace the server, waits for the new VPS's SSH with
// the unchanged pin, restores, sees it ready and healthy. Around it: the
// first apply re-plans empty, so does the configuration after the
// replace, the primary IPs are the same ones, and a destroy is refused.
func TestRebuild(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if r := w.tofuPlan(); r.Code != 0 {
		t.Fatalf("plan after the first apply: exit %d, want 0 (no changes)\n%s", r.Code, r.Out)
	}
	w.haul("backup", "--host", hostName)
	pin, err := os.ReadFile(w.known)
	must(t, err)
	v4, _ := w.api.PrimaryIPByName(hostName + "-ipv4")
	v6, _ := w.api.PrimaryIPByName(hostName + "-ipv6")

	// A failed preflight (the server is locked) changes nothing; the
	// rerun is a fresh rebuild.
	w.api.SetServerLocked(w.oldID, true)
	mark := w.api.Mark()
	w.failed(w.haulRun("rebuild", "--host", hostName, "--yes"), rebuild.PhasePreflight, "is locked", "nothing was changed")
	if w.wd.Installs() != 1 || len(fakehcloud.Mutating(w.api.Since(mark))) != 0 {
		t.Fatal("something ran after a failed preflight")
	}
	w.api.SetServerLocked(w.oldID, false)

	mark = w.api.Mark()
	r := w.haulRun("rebuild", "--host", hostName, "--yes", "--json")
	t.Logf("stderr:\n%s", r.stderr)
	res := w.finished(r)

	// tofu was run once, as documented, and the provider talked to the
	// API haul's preflight used (hcloud_endpoint), with the token.
	want := "running tofu apply -input=false -auto-approve -no-color -replace=hcloud_server.vps in " + w.wd.Dir
	if !strings.Contains(r.stderr, want) {
		t.Errorf("haul did not run %q:\n%s", want, r.stderr)
	}
	agents := map[string]bool{}
	for _, q := range w.api.Since(mark) {
		agents[strings.Fields(q.UserAgent + " ?")[0]] = true
	}
	if !anyPrefix(agents, "hcloud-terraform/") || !anyPrefix(agents, "haul/") {
		t.Errorf("requests came from %v, want both haul and the provider", agents)
	}
	if d := w.deletes(mark); strings.Join(d, " ") != fmt.Sprintf("/servers/%d", w.oldID) {
		t.Errorf("the rebuild deleted %v, want only the old server %d", d, w.oldID)
	}
	for _, want := range []string{fmt.Sprintf("tofu: hcloud_server.vps: Destroying... [id=%d]", w.oldID), "tofu: Apply complete!"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("tofu's output was not streamed (%q missing):\n%s", want, r.stderr)
		}
	}
	if n := w.wd.Installs(); n != 2 {
		t.Fatalf("the install module ran %d times, want 2 (first apply and rebuild)", n)
	}
	args := w.standinFile("args", 2)
	for _, want := range []string{`"target_host":"127.0.0.1"`, fmt.Sprintf(`"instance_id":"%d"`, res.NewServerID), `"install_ssh_key_set":true`} {
		if !strings.Contains(args, want) {
			t.Errorf("the install module's inputs lack %s:\n%s", want, args)
		}
	}
	// The real extra-files script exported the kept key; the new sshd
	// runs with it and haul connected with the pin it had before.
	if x := w.standinFile("extra-files", 2); !strings.Contains(x, "etc/ssh/ssh_host_ed25519_key") || !strings.Contains(x, "SHA256:") {
		t.Errorf("extra-files script output:\n%s", x)
	}
	if got := w.new.sshd.HostKey.AuthorizedLine; got != w.hostKey.AuthorizedLine {
		t.Errorf("the new VPS has host key %s, the kept one is %s", got, w.hostKey.AuthorizedLine)
	}
	if now, _ := os.ReadFile(w.known); string(now) != string(pin) {
		t.Errorf("known_hosts changed during the rebuild:\n%s\nwas:\n%s", now, pin)
	}
	// The same primary IPs, now on the new server.
	srv, ok := w.api.ServerByName(hostName)
	if !ok || srv.ID != res.NewServerID || srv.ID == w.oldID {
		t.Fatalf("server %+v, rebuild says new id %d", srv.ID, res.NewServerID)
	}
	if srv.PublicNet.IPv4.ID != v4.ID || srv.PublicNet.IPv6.ID != v6.ID {
		t.Errorf("the new server has primary IPs %d/%d, the kept ones are %d/%d", srv.PublicNet.IPv4.ID, srv.PublicNet.IPv6.ID, v4.ID, v6.ID)
	}
	if r := w.tofuPlan(); r.Code != 0 {
		t.Errorf("plan after the rebuild: exit %d, want 0 (no changes)\n%s", r.Code, r.Out)
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
	if res.Preflight.Server.ID != w.oldID {
		t.Errorf("preflight saw server %d, the old one is %d", res.Preflight.Server.ID, w.oldID)
	}

	// prevent_destroy on the primary IPs: a destroy is refused before it
	// begins.
	mark = w.api.Mark()
	d := w.wd.Run(t, w.tofuEnv(), "destroy", "-input=false", "-auto-approve", "-no-color")
	if d.Code == 0 || !strings.Contains(d.Out, "prevent_destroy") {
		t.Errorf("tofu destroy: exit %d, want the prevent_destroy refusal\n%s", d.Code, d.Out)
	}
	if m := fakehcloud.Mutating(w.api.Since(mark)); len(m) > 0 {
		t.Errorf("the refused destroy reached the API: %v", m)
	}
}

func anyPrefix(m map[string]bool, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// TestRebuildUnavailableServerType: Hetzner no longer sells the server
// type in the location. The replace fails at plan time, before any DELETE
// reaches the API; the old server is still there and still answers, and
// the message says so. Once the type is back, a rerun continues with tofu
// apply and finishes.
func TestRebuildUnavailableServerType(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.haul("backup", "--host", hostName)
	w.api.SetServerTypeAvailable("cx23", "fsn1", false)
	mark := w.api.Mark()
	r := w.haulRun("rebuild", "--host", hostName, "--yes")
	w.failed(r, rebuild.PhaseTofu, "Hetzner cannot create a cx23 in fsn1 now", "Nothing was changed",
		fmt.Sprintf("The old server vps (id %d) is untouched", w.oldID), "continues with tofu apply")
	if d := w.deletes(mark); len(d) > 0 {
		t.Fatalf("DELETE reached the API: %v", d)
	}
	if m := fakehcloud.Mutating(w.api.Since(mark)); len(m) > 0 {
		t.Fatalf("the refused rebuild changed the API: %v", m)
	}
	if srv, ok := w.api.ServerByName(hostName); !ok || srv.ID != w.oldID {
		t.Fatalf("the old server %d is gone from the API", w.oldID)
	}
	if w.wd.Installs() != 1 || w.old == nil {
		t.Fatal("the install ran or the old VPS was stopped")
	}
	// The old server answers: a backup through the pinned key works.
	w.haul("backup", "--host", hostName)

	w.api.SetServerTypeAvailable("cx23", "fsn1", true)
	second := w.haulRun("rebuild", "--host", hostName, "--yes", "--json")
	res := w.finished(second)
	if res.Runs != 2 {
		t.Errorf("runs = %d, want 2", res.Runs)
	}
	if !strings.Contains(second.stderr, "-replace=hcloud_server.vps") {
		t.Errorf("the rerun did not replace the still running old server:\n%s", second.stderr)
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
		installs       int // stand-in installs after both runs (the first apply's included)
		snapshots      int // snapshots after both runs
	}{
		{
			phase: rebuild.PhaseFinalBackup,
			breakIt: func(w *world) {
				// The old agent answers, but its backup fails.
				must(w.t, os.WriteFile(w.old.agentCfg, []byte(`{"host":"vps","data_paths":["relative/path"],"state_dir":"/nonexistent"}`), 0o600))
			},
			fixIt: func(w *world) {
				cfg, _ := json.Marshal(map[string]any{"host": hostName, "data_paths": []string{w.data}, "state_dir": w.old.state})
				must(w.t, os.WriteFile(w.old.agentCfg, cfg, 0o600))
			},
			msgs:     []string{"phase final-backup failed", "--skip-final-backup", "not absolute"},
			installs: 2, snapshots: 2,
		},
		{
			// nixos-anywhere fails on the new server: the old one is gone
			// already, so the rerun finishes with a plain apply (no second
			// replace).
			phase: rebuild.PhaseTofu,
			breakIt: func(w *world) {
				writeFile(w.t, filepath.Join(w.wd.Standin, "fail"), "", 0o644)
			},
			fixIt: func(w *world) {
				must(w.t, os.Remove(filepath.Join(w.wd.Standin, "fail")))
			},
			msgs:     []string{"exited with status 1", "installing failed (injected by the test)", "The old server", "is gone; the new server vps is", "continues with tofu apply"},
			installs: 3, snapshots: 2,
		},
		{
			phase: rebuild.PhaseRestore,
			breakIt: func(w *world) {
				w.inject.readyMarker = true
			},
			fixIt: func(w *world) {
				must(w.t, os.Remove(w.new.marker()))
			},
			msgs:     []string{"phase restore failed", "allow_inplace_restore", "rerun to restore again"},
			installs: 2, snapshots: 2,
		},
		{
			phase: rebuild.PhaseHealth,
			breakIt: func(w *world) {
				w.set("health_timeout", "2s")
				w.healthDown.Store(true)
			},
			fixIt:    func(w *world) { w.healthDown.Store(false) },
			msgs:     []string{"is not healthy after health_timeout 2s", "503 Service Unavailable", "continues with the health check"},
			installs: 2, snapshots: 2,
		},
	}
	for _, c := range cases {
		t.Run(c.phase, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.haul("backup", "--host", hostName)
			c.breakIt(w)
			mark := w.api.Mark()
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
			if n := w.wd.Installs(); n != c.installs {
				t.Errorf("the install ran %d times, want %d", n, c.installs)
			}
			// Whatever failed, the server was replaced once.
			if d := w.deletes(mark); strings.Join(d, " ") != fmt.Sprintf("/servers/%d", w.oldID) {
				t.Errorf("DELETEs %v, want only the old server's", d)
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
	w.failed(w.haulRun("rebuild", "--host", hostName, "--yes"), rebuild.PhaseWaitSSH,
		"no SSH with the pinned host key at "+w.primary.addr, "within ssh_timeout 2s", "continues with this wait")
	// An impostor (or an install without the extra files) on the address.
	impostor := w.startServer(nil)
	w.primary.set(impostor.sshd.Addr)
	second := w.haulRun("rebuild", "--host", hostName, "--yes")
	w.failed(second, rebuild.PhaseWaitSSH, "offers another host key than the pinned one", "extra_files_script", "HOST KEY MISMATCH")
	if exists(impostor.marker()) {
		t.Fatal("haul restored onto a server whose host key is not the pinned one")
	}

	// The kept key is up now: a generous wait, so a loaded machine does
	// not turn this run into a third timeout.
	w.set("ssh_timeout", "30s")
	w.startNew(w.pendingKey)
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
	if n := w.wd.Installs(); n != 2 {
		t.Errorf("the install ran %d times, want 2 (the first apply and one rebuild)", n)
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

	var sns []struct {
		ID string `json:"id"`
	}
	must(t, json.Unmarshal(testenv.Restic(t, w.repo, w.pwFile, "snapshots", "--json"), &sns))
	first := sns[0].ID[:8]
	oldID := w.oldID
	ipByName := func(st *fakehcloud.State, name string) *schema.PrimaryIP {
		for _, p := range st.PrimaryIPs {
			if p.Name == name {
				return p
			}
		}
		t.Fatalf("no primary IP %s", name)
		return nil
	}
	tokenFile := filepath.Join(w.root, "nas", "hcloud-token")
	oldTofu := filepath.Join(w.root, "old-tofu")
	writeFile(t, oldTofu, "#!/bin/sh\necho '{\"terraform_version\":\"1.6.2\",\"platform\":\"linux_amd64\"}'\n", 0o755)
	otherKey := testenv.NewKeyPair(t, t.TempDir(), "other")

	cases := []struct {
		name string
		// edit changes the world before the run (and is undone after it).
		edit  func(st *fakehcloud.State)
		setup func() (undo func())
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
			setup: func() func() {
				writeFile(t, tokenFile, strings.Repeat("x", 64)+"\n", 0o600)
				return func() { writeFile(t, tokenFile, w.token+"\n", 0o600) }
			},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"hetzner: Hetzner Cloud rejected the API token (unauthorized): check hcloud_token_file", "nothing was changed"},
		},
		{
			name: "missing server",
			edit: func(st *fakehcloud.State) { st.RemoveServer(oldID) },
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"server: no server named vps in the project this token belongs to", "--allow-missing-server"},
		},
		{
			name: "locked server",
			edit: func(st *fakehcloud.State) { st.Servers[oldID].Locked = true },
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{fmt.Sprintf("server: server vps (id %d) is locked: an action is running on it", oldID), "then rerun"},
		},
		{
			name: "missing primary IP",
			edit: func(st *fakehcloud.State) { ipByName(st, "vps-ipv4").Name = "renamed" },
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"primary ipv4: no primary IP named vps-ipv4", "DNS points at nothing"},
		},
		{
			name: "primary IP without protection",
			edit: func(st *fakehcloud.State) {
				ip := ipByName(st, "vps-ipv6")
				ip.AutoDelete, ip.Protection.Delete = true, false
			},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"primary ipv6: vps-ipv6 (2001:db8:1::/64): auto_delete is on", "delete protection is off"},
		},
		{
			name: "running server, dry run",
			args: []string{"--dry-run"}, code: 0, where: "stdout",
			want: []string{"ok    server", fmt.Sprintf("server vps: id %d, running, not locked", oldID), "ok    snapshot", "every chunk indexed",
				"ok    tofu", "(OpenTofu 1.12.6)", "ok    nix", "ok    install key",
				fmt.Sprintf("-replace=hcloud_server.vps, which DESTROYS server vps (id %d)", oldID), "dry run: nothing was changed"},
		},
		{
			name: "missing server allowed, dry run",
			edit: func(st *fakehcloud.State) { st.RemoveServer(oldID) },
			args: []string{"--dry-run", "--allow-missing-server"}, code: 0, where: "stdout",
			want: []string{"tofu creates it (--allow-missing-server)", "which creates server vps", "skipped: there is no old server"},
		},
		{
			name: "primary IP held by another server",
			edit: func(st *fakehcloud.State) {
				st.RemoveServer(oldID)
				other := int64(77)
				ipByName(st, "vps-ipv4").AssigneeID = &other
			},
			args: []string{"--yes", "--allow-missing-server"}, code: 1, where: "stderr",
			want: []string{"primary ipv4: vps-ipv4 (127.0.0.1): it is assigned to server 77, not to vps"},
		},
		{
			name: "chosen snapshot, dry run",
			args: []string{"--dry-run", "--snapshot", first}, code: 0, where: "stdout",
			want: []string{"(chosen with --snapshot)", "skipped (--snapshot chooses the data)", "restore snapshot " + first + " of"},
		},
		{
			name: "unknown snapshot",
			args: []string{"--yes", "--snapshot", "deadbeef"}, code: 1, where: "stderr",
			want: []string{"snapshot: --snapshot deadbeef: no snapshot", "haul snapshots"},
		},
		{
			name: "tofu too old",
			setup: func() func() {
				w.set("tofu", oldTofu)
				return func() { w.set("tofu", w.tools.Tofu) }
			},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"tofu: " + oldTofu + " is OpenTofu 1.6.2, but tofu/ needs 1.10.0 or later", "install OpenTofu 1.10.0 or later"},
		},
		{
			name: "nix without flakes",
			setup: func() func() {
				w.extraEnv = []string{"NIX_CONFIG=experimental-features = nix-command"}
				return func() { w.extraEnv = nil }
			},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"nix: ", "without flakes", "add `experimental-features = nix-command flakes` to /etc/nix/nix.conf"},
		},
		{
			name: "install key is not admin_ssh_public_key",
			setup: func() func() {
				w.set("install_identity_file", otherKey.PrivatePath)
				return func() { w.set("install_identity_file", w.installKey.PrivatePath) }
			},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"install key: install_identity_file " + otherKey.PrivatePath, "but admin_ssh_public_key in " + filepath.Join(w.wd.Dir, "terraform.tfvars")},
		},
		{
			name: "no install key and no agent",
			setup: func() func() {
				w.set("install_identity_file", "")
				return func() { w.set("install_identity_file", w.installKey.PrivatePath) }
			},
			args: []string{"--yes"}, code: 1, where: "stderr",
			want: []string{"install key: no install key: install_identity_file is not set and SSH_AUTH_SOCK is empty", "set install_identity_file in [hosts.rebuild]"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w.t = t
			restore := w.api.Checkpoint()
			defer restore()
			if c.edit != nil {
				w.api.Edit(c.edit)
			}
			if c.setup != nil {
				defer c.setup()()
			}
			mark := w.api.Mark()
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
			if n := w.wd.Installs(); n != 1 {
				t.Fatalf("the install ran %d times (once is the first apply)", n)
			}
			if m := fakehcloud.Mutating(w.api.Since(mark)); len(m) > 0 {
				t.Fatalf("preflight changed the API: %v", m)
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
	for _, want := range []string{"ok    server", "plan for vps:", fmt.Sprintf("DESTROYS server vps (id %d)", w.oldID), "type the host's name (vps) to go ahead:", "not confirmed; nothing was changed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("terminal shows no %q:\n%s", want, out)
		}
	}
	if w.wd.Installs() != 1 || exists(w.statePath()) {
		t.Fatal("an unconfirmed rebuild ran tofu or left state")
	}
}
