package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/agent/restore"
	"github.com/haulproject/haul/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// The guard resumes through the real quiesce code; its targets here are
// systemd units, answered by a stand-in systemctl first on PATH (no
// systemd runs here) that records its calls.
func standInSystemctl(t *testing.T) (callsLog string) {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/calls.log\"\n"
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return filepath.Join(dir, "calls.log")
}

func readCalls(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

var unitTargets = []quiesce.Target{
	{Kind: quiesce.KindUnit, Name: "db.service", Action: "stop"},
	{Kind: quiesce.KindUnit, Name: "web.service", Action: "stop"},
}

const wantStarts = "start -- db.service\nstart -- web.service"

// fakeAgent starts a process standing in for a frozen agent.
func fakeAgent(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func writeTestMarker(t *testing.T, cfg *Config, name string, pid int, deadline time.Duration) {
	t.Helper()
	now := time.Now()
	m := &FrozenMarker{PID: pid, PIDStart: procStartTime(pid), Started: now, Deadline: now.Add(deadline), Mode: "stop", Targets: unitTargets}
	if err := writeMarker(filepath.Join(cfg.StateDir, name), m); err != nil {
		t.Fatal(err)
	}
}

func logTo(t *testing.T) (func(string, ...any), *strings.Builder) {
	var b strings.Builder
	return func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }, &b
}

func TestRecover(t *testing.T) {
	for _, c := range []struct {
		name     string
		marker   string
		alive    bool
		deadline time.Duration
		acts     bool
	}{
		{"agent gone, frozen", "frozen.json", false, 30 * time.Second, true},
		{"agent gone, thawing", "thawing.json", false, 30 * time.Second, true},
		{"agent frozen within deadline", "frozen.json", true, 30 * time.Second, false},
		{"agent frozen past deadline", "frozen.json", true, -time.Second, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := standInSystemctl(t)
			cfg := freezeConfig(t)
			pid := deadPID(t)
			if c.alive {
				pid = fakeAgent(t).Process.Pid
			}
			writeTestMarker(t, cfg, c.marker, pid, c.deadline)
			logf, log := logTo(t)
			acted, err := Recover(context.Background(), cfg, logf)
			if err != nil || acted != c.acts {
				t.Fatalf("Recover = %v, %v; want acted %v\n%s", acted, err, c.acts, log)
			}
			if !c.acts {
				if readCalls(calls) != "" || len(markersLeft(cfg)) != 1 || !strings.Contains(log.String(), "in progress") {
					t.Errorf("a live freeze was touched: calls %q, markers %v, log %s", readCalls(calls), markersLeft(cfg), log)
				}
				return
			}
			if got := readCalls(calls); got != wantStarts {
				t.Errorf("calls %q, want %q", got, wantStarts)
			}
			if left := markersLeft(cfg); len(left) != 0 {
				t.Errorf("markers left %v", left)
			}
			if !strings.Contains(log.String(), "resumed unit db.service, unit web.service") {
				t.Errorf("log:\n%s", log)
			}
		})
	}
}

// TestWatchResumesWhenAgentDies: the watchdog notices its agent's death
// (a zombie its parent has not reaped counts as dead) and resumes.
func TestWatchResumesWhenAgentDies(t *testing.T) {
	calls := standInSystemctl(t)
	cfg := freezeConfig(t)
	agent := fakeAgent(t)
	writeTestMarker(t, cfg, "frozen.json", agent.Process.Pid, 30*time.Second)
	logf, log := logTo(t)
	done := make(chan error, 1)
	go func() { done <- Watch(context.Background(), cfg, agent.Process.Pid, logf) }()
	time.Sleep(100 * time.Millisecond)
	if readCalls(calls) != "" {
		t.Fatalf("the watchdog acted while the agent lived: %s", readCalls(calls))
	}
	_ = agent.Process.Kill() // not reaped: a zombie
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watchdog did not act within 10s of the agent's death")
	}
	if got := readCalls(calls); got != wantStarts {
		t.Errorf("calls %q", got)
	}
	if !strings.Contains(log.String(), fmt.Sprintf("agent pid %d died during its freeze", agent.Process.Pid)) || len(markersLeft(cfg)) != 0 {
		t.Errorf("log %s, markers %v", log, markersLeft(cfg))
	}
}

// TestWatchExitsWhenFreezeEnds: a freeze that ends normally leaves the
// watchdog nothing to do.
func TestWatchExitsWhenFreezeEnds(t *testing.T) {
	calls := standInSystemctl(t)
	cfg := freezeConfig(t)
	agent := fakeAgent(t)
	writeTestMarker(t, cfg, "frozen.json", agent.Process.Pid, 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- Watch(context.Background(), cfg, agent.Process.Pid, func(string, ...any) {}) }()
	time.Sleep(100 * time.Millisecond)
	if err := os.Remove(cfg.FrozenMarkerPath()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || readCalls(calls) != "" {
			t.Fatalf("err %v, calls %q", err, readCalls(calls))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not exit after the freeze ended")
	}
}

// TestFreezeRecoversLeftover: a new freeze first brings back what a dead
// agent left quiesced, and refuses while a live one holds the marker.
func TestFreezeRecoversLeftover(t *testing.T) {
	calls := standInSystemctl(t)
	cfg := freezeConfig(t)
	writeTestMarker(t, cfg, "thawing.json", deadPID(t), 30*time.Second)
	q := &fakeQuiescer{targets: web}
	if _, _, _, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) { return mirror.Stats{}, nil }); err != nil {
		t.Fatal(err)
	}
	if got := readCalls(calls); got != wantStarts || q.got() != "plan quiesce resume" {
		t.Errorf("calls %q, quiescer %q", got, q.got())
	}
	if log, _ := os.ReadFile(cfg.GuardLogPath()); !strings.Contains(string(log), "a new freeze found the marker") {
		t.Errorf("guard.log:\n%s", log)
	}

	writeTestMarker(t, cfg, "frozen.json", fakeAgent(t).Process.Pid, 30*time.Second)
	q = &fakeQuiescer{targets: web}
	_, _, _, err := Freeze(context.Background(), q, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "still holds the freeze marker") || q.got() != "" {
		t.Fatalf("err %v, calls %q", err, q.got())
	}
}

// TestRecoverFinishesInterruptedSwap: an agent killed mid-swap of a
// restore (first data path exchanged, second not) leaves its freeze marker;
// recover rolls the swap forward on both paths before it starts the
// containers on the data, and says so in its log.
func TestRecoverFinishesInterruptedSwap(t *testing.T) {
	calls := standInSystemctl(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	cfg, err := ParseConfig([]byte(`{"data_paths":["`+a+`","`+b+`"],"state_dir":"`+filepath.Join(dir, "state")+`",
		"quiesce":{"mode":"stop","containers":["web"],"guard_timeout":"30s"}}`), "test")
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Live       string `json:"live"`
		Staging    string `json:"staging"`
		Prev       string `json:"prev"`
		StagingIno uint64 `json:"staging_ino"`
	}
	var journal struct {
		Entries []entry         `json:"entries"`
		Marker  json.RawMessage `json:"marker"`
	}
	// The restore asked for a ready marker; the agent died before it.
	journal.Marker = json.RawMessage(`{"by":"restore","snapshot":"0123456789abcdef","snapshot_host":"vps"}`)
	for _, live := range []string{a, b} {
		staging := live + restore.StagingSuffix
		for _, d := range []struct{ dir, file string }{{live, "old"}, {staging, "new"}} {
			if err := os.MkdirAll(d.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d.dir, d.file), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(staging, &st); err != nil {
			t.Fatal(err)
		}
		journal.Entries = append(journal.Entries, entry{live, staging, live + restore.PrevInfix + "20240101T000000.000Z", st.Ino})
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteJSON(cfg.restoreHost().SwapJournal, &journal, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, journal.Entries[0].Staging, unix.AT_FDCWD, a, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	writeTestMarker(t, cfg, "frozen.json", deadPID(t), 30*time.Second)
	logf, log := logTo(t)
	if acted, err := Recover(context.Background(), cfg, logf); err != nil || !acted {
		t.Fatalf("Recover = %v, %v\n%s", acted, err, log)
	}
	for _, e := range journal.Entries {
		if _, err := os.Stat(filepath.Join(e.Live, "new")); err != nil {
			t.Errorf("%s is not the restored tree: %v", e.Live, err)
		}
		if _, err := os.Stat(filepath.Join(e.Prev, "old")); err != nil {
			t.Errorf("old data of %s not kept: %v", e.Live, err)
		}
	}
	var m ReadyMarker
	if b, err := os.ReadFile(cfg.ReadyMarker); err != nil || json.Unmarshal(b, &m) != nil || m.By != "restore" || m.Snapshot != "0123456789abcdef" || m.Host != cfg.Host {
		t.Errorf("ready marker after recover: %s, %v; want the restore's, written by recover", b, err)
	}
	l := log.String()
	if fin, res := strings.Index(l, "finished an interrupted swap"), strings.Index(l, "resuming"); fin < 0 || res < fin {
		t.Errorf("the swap was not finished before the containers were resumed:\n%s", l)
	}
	if got := readCalls(calls); got != wantStarts {
		t.Errorf("calls %q, want %q", got, wantStarts)
	}
}
