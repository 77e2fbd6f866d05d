package forget_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/internal/clitest"
)

// The global policy and beta's own, as haul config and as restic flags.
const retentionTOML = `
[retention]
keep_last = 1
keep_hourly = 2
keep_daily = 3
keep_weekly = 2
keep_monthly = 3
keep_yearly = 2
`

var globalFlags = []string{"--keep-last", "1", "--keep-hourly", "2", "--keep-daily", "3",
	"--keep-weekly", "2", "--keep-monthly", "3", "--keep-yearly", "2"}

const betaRetentionTOML = `
[hosts.retention]
keep_within = "40d"
keep_yearly = -1
`

var betaFlags = []string{"--keep-within", "40d", "--keep-yearly", "unlimited"}

// TestForgetMatchesResticAndPruneKeepsRestorable writes snapshots with
// varied times (restic backup --time, and haul's own), checks that `haul
// forget --dry-run --json` prints exactly what `restic forget --dry-run
// --json` prints for the same policies, then forgets and prunes for real
// and checks the repository with `restic check --read-data` and restores
// every kept snapshot with restic.
func TestForgetMatchesResticAndPruneKeepsRestorable(t *testing.T) {
	testenv.Slow(t, "the restic CLI forgets, prunes, checks --read-data and restores each policy")
	e := clitest.New(t)
	alpha1 := filepath.Join(e.Dir, "alpha-data")
	alpha2 := filepath.Join(e.Dir, "alpha-other")
	beta := filepath.Join(e.Dir, "beta-data")
	clitest.WriteRandom(t, filepath.Join(alpha1, "shared.bin"), 200<<10)

	want := map[string][32]byte{} // snapshot ID → sha256 of unique.bin
	resticBackup := func(host, dir, at string) {
		content := clitest.WriteRandom(t, filepath.Join(dir, "unique.bin"), 64<<10)
		out := e.Restic("backup", "--json", "--host", host, "--time", at, dir)
		id := summaryID(t, out)
		want[id] = sha256.Sum256(content)
	}
	for _, at := range []string{
		"2024-03-10 08:00:00", "2024-11-02 12:00:00", "2025-01-15 09:00:00", "2025-02-03 10:00:00",
		"2025-03-01 06:00:00", "2025-03-01 06:30:00", "2025-03-01 18:00:00",
		"2025-03-03 07:00:00", "2025-03-03 07:20:00", "2025-03-04 23:00:00",
	} {
		resticBackup("alpha", alpha1, at)
	}
	for _, at := range []string{"2025-02-01 10:00:00", "2025-03-01 10:00:00", "2025-03-03 10:00:00"} {
		resticBackup("alpha", alpha2, at)
	}
	for _, at := range []string{
		"2023-06-01 12:00:00", "2024-05-01 12:00:00", "2025-01-01 12:00:00",
		"2025-02-25 12:00:00", "2025-03-04 12:00:00",
	} {
		resticBackup("beta", beta, at)
	}

	// Without a policy haul, like restic, refuses to guess.
	if r := e.Run("forget"); r.Code != 2 || !strings.Contains(r.Stderr, "no retention policy applies") {
		t.Fatalf("forget without retention: exit %d\n%s", r.Code, r.Stderr)
	}

	// haul's own snapshots of alpha's first path join the same group.
	e.WriteConfig(retentionTOML + fmt.Sprintf(`
[[hosts]]
name = "alpha"
command = %s

[[hosts]]
name = "beta"
command = ["/bin/false"]
%s`, e.AgentCommand("alpha", alpha1), betaRetentionTOML))
	for range 2 {
		content := clitest.WriteRandom(t, filepath.Join(alpha1, "unique.bin"), 64<<10)
		var out struct {
			Hosts []struct {
				SnapshotID string `json:"snapshot_id"`
			} `json:"hosts"`
		}
		clitest.Must(t, json.Unmarshal([]byte(e.MustHaul("backup", "--host", "alpha", "--json").Stdout), &out))
		want[out.Hosts[0].SnapshotID] = sha256.Sum256(content)
	}
	total := len(want)

	// The decisions, and their JSON, must be restic's.
	haulGroups := groupsByKey(t, []byte(e.MustHaul("forget", "--dry-run", "--json").Stdout))
	resticGroups := groupsByKey(t, jsonLine(t, e.Restic(append([]string{"forget", "--dry-run", "--json", "--host", "alpha"}, globalFlags...)...)))
	for k, v := range groupsByKey(t, jsonLine(t, e.Restic(append([]string{"forget", "--dry-run", "--json", "--host", "beta"}, betaFlags...)...))) {
		resticGroups[k] = v
	}
	if len(haulGroups) != 3 {
		t.Fatalf("haul forget printed %d groups, want 3 (alpha×2 paths, beta)", len(haulGroups))
	}
	keep := map[string]bool{}
	removed := 0
	for k, rg := range resticGroups {
		hg, ok := haulGroups[k]
		if !ok {
			t.Errorf("group %s: restic has it, haul does not", k)
			continue
		}
		if !reflect.DeepEqual(hg, rg) {
			hj, _ := json.MarshalIndent(hg, "", " ")
			rj, _ := json.MarshalIndent(rg, "", " ")
			t.Errorf("group %s differs from restic's\nhaul:\n%s\nrestic:\n%s", k, hj, rj)
		}
		for _, s := range rg.(map[string]any)["keep"].([]any) {
			keep[s.(map[string]any)["id"].(string)] = true
		}
		if r, ok := rg.(map[string]any)["remove"].([]any); ok {
			removed += len(r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if removed == 0 || len(keep) == total {
		t.Fatalf("the policy removes nothing (%d kept of %d): the comparison proves little", len(keep), total)
	}
	t.Logf("%d snapshots: restic and haul both keep %d and remove %d", total, len(keep), removed)

	before := dirSize(t, filepath.Join(e.Repo, "data"))
	res := e.MustHaul("forget", "--prune")
	after := dirSize(t, filepath.Join(e.Repo, "data"))
	if after >= before {
		t.Fatalf("prune did not shrink the pack files: %d → %d bytes\n%s", before, after, res.Stderr)
	}
	t.Logf("forget --prune: pack files %d → %d bytes", before, after)

	var left []struct {
		ID string `json:"id"`
	}
	clitest.Must(t, json.Unmarshal(e.Restic("snapshots", "--json"), &left))
	var leftIDs []string
	for _, s := range left {
		leftIDs = append(leftIDs, s.ID)
	}
	var keepIDs []string
	for id := range keep {
		keepIDs = append(keepIDs, id)
	}
	sort.Strings(leftIDs)
	sort.Strings(keepIDs)
	if !reflect.DeepEqual(leftIDs, keepIDs) {
		t.Fatalf("after forget the repository holds\n%v\nwant the kept\n%v", leftIDs, keepIDs)
	}

	if out := e.Restic("check", "--read-data"); !bytes.Contains(out, []byte("no errors were found")) {
		t.Fatalf("restic check --read-data:\n%s", out)
	}
	for _, id := range keepIDs {
		target := t.TempDir()
		e.Restic("restore", id, "--target", target)
		var found bool
		err := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Name() != "unique.bin" {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if sha256.Sum256(b) != want[id] {
				return fmt.Errorf("%s: unique.bin differs from what was backed up", p)
			}
			found = true
			return nil
		})
		clitest.Must(t, err)
		if !found {
			t.Fatalf("snapshot %s restored without unique.bin", id[:8])
		}
	}
	// haul reads what is left too, including restic-written snapshots.
	target := t.TempDir()
	var restored struct {
		Snapshot string `json:"snapshot"`
	}
	clitest.Must(t, json.Unmarshal([]byte(e.MustHaul("restore", "--host", "beta", "--target", target, "--json").Stdout), &restored))
	b, err := os.ReadFile(filepath.Join(target, beta, "unique.bin"))
	clitest.Must(t, err)
	if !keep[restored.Snapshot] || sha256.Sum256(b) != want[restored.Snapshot] {
		t.Fatalf("haul restore of beta's latest snapshot %s: wrong snapshot or content", restored.Snapshot)
	}
	if r := e.MustHaul("check", "--read-data"); !strings.Contains(r.Stdout, "no errors were found") {
		t.Fatalf("haul check --read-data: %s", r.Stdout)
	}
}

// summaryID returns the snapshot ID from restic backup --json.
func summaryID(t *testing.T, out []byte) string {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m struct {
			Type string `json:"message_type"`
			ID   string `json:"snapshot_id"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Type == "summary" {
			return m.ID
		}
	}
	t.Fatalf("no summary in restic backup output:\n%s", out)
	return ""
}

// jsonLine returns the line of out that holds the JSON array.
func jsonLine(t *testing.T, out []byte) []byte {
	t.Helper()
	for _, line := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("[")) {
			return line
		}
	}
	t.Fatalf("no JSON array in:\n%s", out)
	return nil
}

// groupsByKey decodes forget JSON into generic values keyed by host and
// paths (restic prints groups in map order).
func groupsByKey(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var groups []map[string]any
	if err := json.Unmarshal(b, &groups); err != nil {
		t.Fatalf("forget JSON: %v\n%s", err, b)
	}
	out := map[string]any{}
	for _, g := range groups {
		out[fmt.Sprint(g["host"], g["paths"])] = g
	}
	return out
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	clitest.Must(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	}))
	return n
}
