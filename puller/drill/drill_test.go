package drill_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/workload"
	"github.com/haulproject/haul/puller/internal/clitest"
)

type drillOut struct {
	OK    bool `json:"ok"`
	Hosts []struct {
		Host     string   `json:"host"`
		OK       bool     `json:"ok"`
		Files    int64    `json:"files"`
		Problems []string `json:"problems"`
		Checks   []struct {
			Kind string `json:"kind"`
			OK   bool   `json:"ok"`
		} `json:"checks"`
	} `json:"hosts"`
}

// TestDrillCatchesACorruptDatabaseAndATruncatedKey backs up a
// Pangolin-like tree and drills it (all good, recorded in status and the
// Prometheus textfile), then corrupts the SQLite database and truncates
// Gerbil's key on the VPS, backs up again, and drills: both problems are
// found and reported in the drill, status and Prometheus, and the last
// good drill's time stays.
func TestDrillCatchesACorruptDatabaseAndATruncatedKey(t *testing.T) {
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "vps", "pangolin")
	if _, err := workload.Generate(data, workload.Options{TargetSize: 2 << 20, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	prom := filepath.Join(e.Dir, "textfile", "haul.prom")
	clitest.Must(t, os.MkdirAll(filepath.Dir(prom), 0o755))
	e.WriteConfig(fmt.Sprintf("[notify]\nprometheus_textfile = %q\n\n[[hosts]]\nname = \"vps\"\ncommand = %s\n", prom, e.AgentCommand("vps", data)))
	e.MustHaul("backup")

	r := e.MustHaul("drill", "--json")
	var out drillOut
	clitest.Must(t, json.Unmarshal([]byte(r.Stdout), &out))
	h := out.Hosts[0]
	kinds := map[string]bool{}
	for _, c := range h.Checks {
		kinds[c.Kind] = c.OK
	}
	if !out.OK || !h.OK || h.Files < 6 || !kinds["sqlite"] || !kinds["acme.json"] || !kinds["wireguard-key"] {
		t.Fatalf("drill of a good snapshot: %s", r.Stdout)
	}
	if r := e.MustHaul("drill", "--quiet"); r.Stdout+r.Stderr != "" {
		t.Errorf("drill --quiet printed %q %q", r.Stdout, r.Stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.Dir, "cache", "drill", "vps")); len(ents) != 0 {
		t.Errorf("the scratch copy was left behind")
	}
	promGood := readProm(t, prom)
	goodAt := promGood[`haul_drill_last_success_timestamp_seconds{host="vps"}`]
	if promGood[`haul_drill_last_run_success{host="vps"}`] != "1" || goodAt == "" {
		t.Fatalf("textfile after a good drill:\n%v", promGood)
	}

	// Damage on the VPS: a b-tree page of the database overwritten, the
	// WireGuard key cut short. The backup stores it faithfully.
	db := filepath.Join(data, workload.DBPath)
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	clitest.Must(t, err)
	fi, _ := f.Stat()
	junk := []byte(strings.Repeat("\xde\xad\xbe\xef", 1024))
	for off := int64(4096 * 2); off+4096 < fi.Size(); off += 4096 * 7 {
		f.WriteAt(junk[:200], off+100)
	}
	f.Close()
	key := filepath.Join(data, workload.KeyPath)
	k, err := os.ReadFile(key)
	clitest.Must(t, err)
	clitest.Must(t, os.WriteFile(key, k[:20], 0o600))
	e.MustHaul("backup")

	r = e.Run("drill", "--json")
	if r.Code != 1 {
		t.Fatalf("drill of a damaged snapshot: exit %d, want 1\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	out = drillOut{}
	clitest.Must(t, json.Unmarshal([]byte(r.Stdout), &out))
	problems := strings.Join(out.Hosts[0].Problems, "\n")
	if out.OK || !strings.Contains(problems, "sqlite") || !strings.Contains(problems, "integrity_check") ||
		!strings.Contains(problems, "wireguard-key") || !strings.Contains(problems, "20 characters") {
		t.Fatalf("drill did not name both problems:\n%s", problems)
	}
	// --quiet shows the problems (on stderr) and only then.
	if r := e.Run("drill", "--quiet"); r.Code != 1 || r.Stdout != "" || !strings.Contains(r.Stderr, "integrity_check") {
		t.Errorf("drill --quiet of a damaged snapshot: exit %d, %q %q", r.Code, r.Stdout, r.Stderr)
	}

	// status: exit 1, the drill named as failed, the last good one kept.
	r = e.Run("status", "--json")
	var st struct {
		OK          bool     `json:"ok"`
		DrillFailed []string `json:"drill_failed"`
		Hosts       []struct {
			LastDrill     *struct{ OK bool } `json:"last_drill"`
			LastGoodDrill *struct{ OK bool } `json:"last_good_drill"`
		} `json:"hosts"`
	}
	clitest.Must(t, json.Unmarshal([]byte(r.Stdout), &st))
	if r.Code != 1 || st.OK || fmt.Sprint(st.DrillFailed) != "[vps]" || st.Hosts[0].LastDrill.OK || st.Hosts[0].LastGoodDrill == nil {
		t.Fatalf("status after a failed drill: exit %d\n%s", r.Code, r.Stdout)
	}
	if r := e.Run("status"); !strings.Contains(r.Stdout, "vps: drill FAILED") || !strings.Contains(r.Stdout, "integrity_check") {
		t.Errorf("text status:\n%s", r.Stdout)
	}
	promBad := readProm(t, prom)
	if promBad[`haul_drill_last_run_success{host="vps"}`] != "0" || promBad[`haul_drill_last_success_timestamp_seconds{host="vps"}`] != goodAt {
		t.Fatalf("textfile after a failed drill:\n%v", promBad)
	}
}

func readProm(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	clitest.Must(t, err)
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, " ")
		m[k] = v
	}
	return m
}
