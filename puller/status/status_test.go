package status_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/internal/clitest"
)

// The documented JSON (docs/operations.md): a change here is a change of
// a stable interface.
var (
	reportKeys = []string{"drill_failed", "hosts", "ok", "repository", "stale", "time", "version"}
	hostKeys   = []string{"host", "last_error", "last_run", "last_success", "max_age", "max_age_seconds", "max_age_source", "last_drill", "last_good_drill", "newest", "snapshots", "stale", "stale_reason"}
	newestKeys = []string{"age_seconds", "bytes", "bytes_added", "bytes_moved", "duration_ms", "files", "freeze_ms", "id", "paths", "short_id", "time"}
	runKeys    = []string{"bytes", "bytes_added", "duration_ms", "files", "finished", "freeze_ms", "ok", "snapshot_id", "started", "wire_bytes"}
)

// TestStatusExitsNonZeroForStaleHosts backs up one host with haul, gives
// two others only old snapshots (restic backup --time), lets a fourth fail
// and a fifth never run, and checks `haul status`: its exit code, which
// hosts it calls stale, the last error, and the JSON's keys.
func TestStatusExitsNonZeroForStaleHosts(t *testing.T) {
	e := clitest.New(t)
	fresh := filepath.Join(e.Dir, "fresh")
	clitest.WriteRandom(t, filepath.Join(fresh, "db.sqlite"), 100<<10)
	old := filepath.Join(e.Dir, "old")
	clitest.WriteRandom(t, filepath.Join(old, "f"), 1000)
	at := func(ago time.Duration) string { return time.Now().Add(-ago).Format("2006-01-02 15:04:05") }
	e.Restic("backup", "--host", "old", "--time", at(50*time.Hour), old)
	e.Restic("backup", "--host", "old", "--time", at(30*time.Hour), old)
	e.Restic("backup", "--host", "nomax", "--time", at(400*time.Hour), old)
	e.WriteConfig(fmt.Sprintf(`
[[hosts]]
name = "fresh"
command = %s
max_age = "1h"

[[hosts]]
name = "old"
command = ["/bin/false"]
max_age = "26h"

[[hosts]]
name = "nomax"
command = ["/bin/false"]

[[hosts]]
name = "failing"
command = ["/bin/sh", "-c", "echo 'agent: disk full' >&2; exit 3"]

[[hosts]]
name = "never"
command = ["/bin/false"]
max_age = "24h"
`, e.AgentCommand("fresh", fresh)))
	e.MustHaul("backup", "--host", "fresh")
	if r := e.Run("backup", "--host", "failing"); r.Code != 1 {
		t.Fatalf("backup of a failing host: exit %d, want 1\n%s", r.Code, r.Stderr)
	}

	r := e.Run("status", "--json")
	if r.Code != 1 {
		t.Fatalf("status with stale hosts: exit %d, want 1\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stderr, "old") || !strings.Contains(r.Stderr, "never") {
		t.Errorf("status's error does not name the stale hosts: %s", r.Stderr)
	}
	var raw map[string]any
	clitest.Must(t, json.Unmarshal([]byte(r.Stdout), &raw))
	checkKeys(t, "report", raw, reportKeys)
	var hosts = map[string]map[string]any{}
	for _, h := range raw["hosts"].([]any) {
		hm := h.(map[string]any)
		checkKeys(t, "host", hm, hostKeys)
		hosts[hm["host"].(string)] = hm
		if n, ok := hm["newest"].(map[string]any); ok {
			checkKeys(t, "newest", n, newestKeys)
		}
		if lr, ok := hm["last_run"].(map[string]any); ok {
			checkKeys(t, "last_run", lr, append([]string{"error"}, runKeys...))
		}
	}
	if got := fmt.Sprint(raw["stale"]); got != "[old nomax failing never]" {
		t.Errorf("stale = %s, want [old nomax failing never]", got)
	}
	if raw["ok"] != false || raw["version"] != float64(1) {
		t.Errorf("ok = %v, version = %v", raw["ok"], raw["version"])
	}
	f := hosts["fresh"]
	n := f["newest"].(map[string]any)
	if f["stale"] != false || n["bytes"] != float64(100<<10) || n["files"] != float64(1) ||
		n["bytes_moved"] == nil || n["freeze_ms"] == nil || n["age_seconds"].(float64) > 600 {
		t.Errorf("fresh host: %v", f)
	}
	if f["last_run"].(map[string]any)["ok"] != true || f["last_error"] != "" {
		t.Errorf("fresh host's last run: %v", f["last_run"])
	}
	o := hosts["old"]
	if o["stale"] != true || !strings.Contains(o["stale_reason"].(string), "max_age 26h") || o["snapshots"] != float64(2) {
		t.Errorf("old host: %v", o)
	}
	on := o["newest"].(map[string]any)
	if age := on["age_seconds"].(float64); age < 29*3600 || age > 31*3600 {
		t.Errorf("old host's newest snapshot is %.0fs old, want the 30h one", age)
	}
	if on["bytes_moved"] != nil || on["freeze_ms"] != nil {
		t.Errorf("a restic-written snapshot has no haul record, want nulls: %v", on)
	}
	// A host without max_age alerts out of the box: 26h, and says so.
	if nm := hosts["nomax"]; nm["stale"] != true || nm["max_age"] != "26h0m0s" || nm["max_age_source"] != "default" ||
		!strings.Contains(nm["stale_reason"].(string), "the default; set max_age") {
		t.Errorf("a host without max_age gets the 26h default: %v", nm)
	}
	if o["max_age_source"] != "config" {
		t.Errorf("old host's max_age_source = %v, want config", o["max_age_source"])
	}
	fl := hosts["failing"]
	if !strings.Contains(fl["last_error"].(string), "disk full") || fl["newest"] != nil || fl["stale"] != true {
		t.Errorf("failing host: last_error %q, newest %v, stale %v", fl["last_error"], fl["newest"], fl["stale"])
	}
	if nv := hosts["never"]; nv["stale"] != true || !strings.Contains(nv["stale_reason"].(string), "no snapshot") {
		t.Errorf("never-run host with max_age: %v", nv)
	}

	// Only fresh hosts: exit 0; quiet prints nothing.
	if r := e.Run("status", "--host", "fresh"); r.Code != 0 {
		t.Fatalf("status of a current host: exit %d, want 0\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := e.Run("status", "--host", "fresh", "--quiet"); r.Code != 0 || r.Stdout+r.Stderr != "" {
		t.Fatalf("status --quiet of a current host: exit %d, printed %q %q", r.Code, r.Stdout, r.Stderr)
	}
	// Text output names the failure; a host that never succeeded is stale
	// even without max_age.
	r = e.Run("status", "--host", "failing")
	if r.Code != 1 {
		t.Fatalf("status of a never-successful host: exit %d, want 1\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "failing: last run failed") || !strings.Contains(r.Stdout, "disk full") {
		t.Errorf("text status does not show the last error:\n%s", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "26h (default)") {
		t.Errorf("text status does not say the max_age is the default:\n%s", r.Stdout)
	}
	if r := e.Run("status", "--host", "old"); r.Code != 1 || !strings.Contains(r.Stdout, "STALE") {
		t.Errorf("status --host old: exit %d\n%s", r.Code, r.Stdout)
	}
	if r := e.Run("status", "--host", "nomax"); r.Code != 1 || !strings.Contains(r.Stdout, "the default; set max_age") {
		t.Errorf("status --host nomax: exit %d\n%s", r.Code, r.Stdout)
	}
}

func checkKeys(t *testing.T, what string, m map[string]any, want []string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	w := append([]string(nil), want...)
	sort.Strings(w)
	if what == "host" {
		// stale_reason is omitted when not stale.
		if _, ok := m["stale_reason"]; !ok {
			w = remove(w, "stale_reason")
		}
	}
	if what == "last_run" {
		if _, ok := m["error"]; !ok {
			w = remove(w, "error")
		}
		if _, ok := m["snapshot_id"]; !ok {
			w = remove(w, "snapshot_id")
		}
	}
	if !reflect.DeepEqual(got, w) {
		t.Errorf("%s keys = %v, want %v", what, got, w)
	}
}

func remove(list []string, s string) []string {
	var out []string
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}
