package inspect_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// haul diff and haul ls print what restic diff and restic ls print for the
// same snapshots: the same paths, modifiers and records, line for line.
func TestLsAndDiffMatchRestic(t *testing.T) {
	t.Parallel() // each test has its own sshd, agent and repository
	e := newEnv(t)
	makeTree(t, e.data)
	id1 := e.backup()
	d := e.data

	// One of each change restic diff reports.
	writeFile(t, filepath.Join(d, "config", "new.yml"), "added\n", 0o644)                             // +
	must(t, os.Remove(filepath.Join(d, "logs", "pangolin.log")))                                      // -
	writeFile(t, filepath.Join(d, "config", "config.yml"), "app:\n  dashboard_url: changed\n", 0o644) // M
	must(t, os.Remove(filepath.Join(d, "config", "key.hardlink")))
	must(t, os.Symlink("key", filepath.Join(d, "config", "key.hardlink"))) // T
	writeFile(t, filepath.Join(d, "newdir", "sub", "file"), "x\n", 0o644)  // + dir and below
	must(t, os.Remove(filepath.Join(d, "empty")))                          // - dir
	must(t, os.Chmod(filepath.Join(d, "config", "traefik", "dynamic_config.yml"), 0o600))
	old := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	must(t, os.Chtimes(filepath.Join(d, "config", "traefik", "dynamic_config.yml"), old, old)) // U (metadata only)
	id2 := e.backup()

	for _, args := range [][]string{{}, {"--json"}, {"--metadata"}, {"--metadata", "--json"}} {
		a := append(append([]string{"diff"}, args...), id1[:8], id2)
		mine, theirs := e.haul(a...), string(e.restic(a...))
		if mine != theirs {
			t.Errorf("haul %s differs from restic's:\nhaul:\n%s\nrestic:\n%s", strings.Join(a, " "), mine, theirs)
		}
	}
	// Not vacuous: every kind of change is there.
	text := e.haul("diff", id1, id2)
	for _, want := range []string{
		"+    " + d + "/config/new.yml\n",
		"-    " + d + "/logs/pangolin.log\n",
		"M    " + d + "/config/config.yml\n",
		"T    " + d + "/config/key.hardlink\n",
		"+    " + d + "/newdir/\n",
		"+    " + d + "/newdir/sub/file\n",
		"-    " + d + "/empty/\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("haul diff lacks %q:\n%s", want, text)
		}
	}
	if want := "U    " + d + "/config/traefik/dynamic_config.yml\n"; !strings.Contains(e.haul("diff", "--metadata", id1, id2), want) {
		t.Errorf("haul diff --metadata lacks %q", want)
	}
	if strings.Contains(text, "U    ") {
		t.Errorf("haul diff without --metadata shows metadata changes:\n%s", text)
	}

	for _, c := range []struct{ haul, restic []string }{
		{[]string{"ls", "--host", "vps"}, []string{"ls", "latest"}},
		{[]string{"ls", "--snapshot", id1, "--json"}, []string{"ls", "--json", id1}},
		{[]string{"ls", "--host", "vps", "--long", d + "/config"}, []string{"ls", "--long", "latest", d + "/config"}},
		{[]string{"ls", "--host", "vps", "--recursive", "--json", d + "/config", d + "/newdir"}, []string{"ls", "--recursive", "--json", "latest", d + "/config", d + "/newdir"}},
	} {
		mine, theirs := e.haul(c.haul...), string(e.restic(c.restic...))
		if mine != theirs {
			t.Errorf("haul %s differs from restic %s:\nhaul:\n%s\nrestic:\n%s", strings.Join(c.haul, " "), strings.Join(c.restic, " "), mine, theirs)
		}
		if n := strings.Count(mine, "\n"); n < 5 {
			t.Errorf("haul %s: only %d lines:\n%s", strings.Join(c.haul, " "), n, mine)
		}
	}
}
