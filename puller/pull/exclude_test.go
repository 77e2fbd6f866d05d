package pull_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/internal/clitest"
)

// TestExcludeNeverCrossesTheWire backs up a Pangolin-shaped tree through
// the real haul and haul-agent with Traefik's access logs excluded, and
// checks with the stock restic CLI that the logs are absent from the
// snapshot while a '!' re-included file and the rest of the tree are there,
// and with haul's --json that the agent skipped them (excluded count) and
// their bytes were never sent.
func TestExcludeNeverCrossesTheWire(t *testing.T) {
	testenv.Slow(t, "a whole Pangolin-shaped backup judged by the restic CLI")
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "pangolin")
	logs := filepath.Join(data, "config", "traefik", "logs")
	clitest.Must(t, os.MkdirAll(logs, 0o755))
	clitest.Must(t, os.MkdirAll(filepath.Join(data, "config", "db"), 0o755))
	clitest.WriteRandom(t, filepath.Join(logs, "access.log"), 4<<20)
	clitest.WriteRandom(t, filepath.Join(data, "config", "db", "db.sqlite"), 64<<10)
	clitest.WriteRandom(t, filepath.Join(data, "config", "old.log"), 1<<20)
	clitest.WriteRandom(t, filepath.Join(data, "config", "keep.log"), 1000)
	clitest.Must(t, os.WriteFile(filepath.Join(data, "config", "acme.json"), []byte("{}"), 0o600))
	e.WriteConfig(`
[[hosts]]
name = "vps"
command = ` + e.AgentCommand("vps", data) + `
exclude = ["config/traefik/logs", "*.log", "!keep.log"]
`)
	out := e.MustHaul("backup", "--json").Stdout
	if !strings.Contains(out, `"excluded": 2`) {
		t.Errorf("backup --json does not report 2 excluded entries (the logs dir and old.log):\n%s", out)
	}
	ls := string(e.Restic("ls", "latest"))
	for _, gone := range []string{"/traefik/logs", "access.log", "old.log"} {
		if strings.Contains(ls, gone) {
			t.Errorf("restic ls latest lists excluded %s:\n%s", gone, ls)
		}
	}
	for _, kept := range []string{"/config/traefik\n", "db.sqlite", "keep.log", "acme.json"} {
		if !strings.Contains(ls+"\n", kept) {
			t.Errorf("restic ls latest lacks %q:\n%s", kept, ls)
		}
	}
	m := regexp.MustCompile(`"chunk_bytes": (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no chunk_bytes in backup --json:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n <= 64<<10 || n >= 1<<20 {
		t.Errorf("chunk_bytes %d: want the kept files (~65 KiB), not the 5 MiB of excluded logs", n)
	}

	// A bad pattern is a config error naming the host.
	e.WriteConfig(`
[[hosts]]
name = "vps"
command = ` + e.AgentCommand("vps", data) + `
exclude = ["[oops"]
`)
	if r := e.Run("backup"); r.Code != 2 || !strings.Contains(r.Stderr, `host "vps": exclude`) {
		t.Errorf("bad pattern: exit %d, stderr %q; want 2 and the host named", r.Code, r.Stderr)
	}
}
