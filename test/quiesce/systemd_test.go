package quiesce_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// No systemd runs here (nor in CI), so these tests put a stand-in
// systemctl first on the agent's PATH. It records every call and keeps
// each unit's state in a file, answering `show`, `stop` and `start` the
// way systemctl does; a unit named *stuck* refuses to stop.
const systemctlStandIn = `#!/bin/bash
dir="$(cd "$(dirname "$0")" && pwd)"
echo "$*" >> "$dir/calls.log"
cmd="$1"
unit="${!#}"
state="$dir/units/$unit"
case "$cmd" in
show)
	if [[ -f "$state" ]]; then echo "LoadState=loaded"; echo "ActiveState=$(cat "$state")"
	else echo "LoadState=not-found"; echo "ActiveState=inactive"; fi ;;
stop)
	[[ -f "$state" ]] || { echo "Failed to stop $unit: Unit $unit not loaded." >&2; exit 5; }
	if [[ "$unit" == *stuck* ]]; then echo "Job for $unit canceled." >&2; exit 1; fi
	echo inactive > "$state" ;;
start)
	[[ -f "$state" ]] || { echo "Failed to start $unit: Unit $unit not found." >&2; exit 5; }
	echo active > "$state" ;;
*) echo "stand-in systemctl: unsupported: $*" >&2; exit 1 ;;
esac
`

// standInSystemctl writes the stand-in into a fresh dir with the given
// units and their states, and returns the dir.
func standInSystemctl(t *testing.T, units map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(systemctlStandIn), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "units"), 0o755); err != nil {
		t.Fatal(err)
	}
	for u, st := range units {
		if err := os.WriteFile(filepath.Join(dir, "units", u), []byte(st+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func systemctlCalls(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls.log"))
	if err != nil {
		t.Fatalf("the stand-in systemctl was never called: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func unitState(t *testing.T, dir, unit string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "units", unit))
	return strings.TrimSpace(string(b))
}

// TestUnitsQuiescedThroughSystemd: units are stopped through systemctl in
// reverse order and started in order, only those that were active, and
// Docker is never asked (its socket does not even exist).
func TestUnitsQuiescedThroughSystemd(t *testing.T) {
	sc := standInSystemctl(t, map[string]string{
		"haul-qa-db.service": "active", "haul-qa-web.service": "active", "haul-qa-off.service": "inactive",
	})
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "state.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, data, map[string]any{
		"mode":        "stop",
		"units":       []string{"haul-qa-db.service", "haul-qa-web.service", "haul-qa-off.service"},
		"docker_host": "unix:///nonexistent/docker.sock",
	}, "PATH="+sc+":"+os.Getenv("PATH"))
	r, stderr, err := h.backup()
	if err != nil || !r.OK {
		t.Fatalf("backup: %v %+v\n%s", err, r, stderr)
	}
	want := []string{
		"show --property=LoadState,ActiveState -- haul-qa-db.service",
		"show --property=LoadState,ActiveState -- haul-qa-web.service",
		"show --property=LoadState,ActiveState -- haul-qa-off.service",
		"stop -- haul-qa-web.service",
		"show --property=LoadState,ActiveState -- haul-qa-web.service",
		"stop -- haul-qa-db.service",
		"show --property=LoadState,ActiveState -- haul-qa-db.service",
		"start -- haul-qa-db.service",
		"start -- haul-qa-web.service",
	}
	if got := systemctlCalls(t, sc); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("systemctl calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for u, st := range map[string]string{"haul-qa-db.service": "active", "haul-qa-web.service": "active", "haul-qa-off.service": "inactive"} {
		if got := unitState(t, sc, u); got != st {
			t.Errorf("unit %s is %s after the backup, want %s", u, got, st)
		}
	}
	if !hasPhase(r.Hosts[0].Freeze.Phases, "stop haul-qa-web.service") {
		t.Errorf("freeze phases %+v lack the unit's stop", r.Hosts[0].Freeze.Phases)
	}
}

// TestUnitThatWillNotStop: the backup fails naming the unit; the unit
// listed before it was never stopped, and the stuck one is started again.
func TestUnitThatWillNotStop(t *testing.T) {
	sc := standInSystemctl(t, map[string]string{"haul-qa-db.service": "active", "haul-qa-stuck.service": "active"})
	h := newHost(t, t.TempDir(), map[string]any{
		"mode": "stop", "units": []string{"haul-qa-db.service", "haul-qa-stuck.service"},
	}, "PATH="+sc+":"+os.Getenv("PATH"))
	r, stderr, err := h.backup()
	if err == nil || r.OK {
		t.Fatalf("backup with a stuck unit succeeded: %+v\n%s", r, stderr)
	}
	if msg := r.Hosts[0].Error; !strings.Contains(msg, "unit haul-qa-stuck.service will not stop") || !strings.Contains(msg, "Job for haul-qa-stuck.service canceled") {
		t.Errorf("error %q does not name the unit and systemctl's reason", msg)
	}
	calls := strings.Join(systemctlCalls(t, sc), "\n")
	if strings.Contains(calls, "stop -- haul-qa-db.service") {
		t.Errorf("haul-qa-db.service was stopped although the freeze failed before it:\n%s", calls)
	}
	if !strings.Contains(calls, "start -- haul-qa-stuck.service") {
		t.Errorf("the stuck unit was not started again:\n%s", calls)
	}
	checkNoSnapshotNoMarker(t, h)
}
