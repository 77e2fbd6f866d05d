package pull_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/haulproject/haul/puller/internal/clitest"
)

// TestBackupProgressOnATerminal runs the real haul backup (through the
// real haul-agent) with stderr on a real pseudo-terminal: the screen shows
// the phases, the agent's counts of its mirror syncs (pre-sync, freeze;
// of a total from the second backup on), and during the transfer bytes
// done of the total, percent and files. With stderr not a terminal, and
// with --quiet, there is none of it.
func TestBackupProgressOnATerminal(t *testing.T) {
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "data")
	clitest.Must(t, os.MkdirAll(data, 0o755))
	clitest.WriteRandom(t, filepath.Join(data, "big"), 128<<20)
	e.WriteConfig("[[hosts]]\nname = \"vps\"\ncommand = " + e.AgentCommand("vps", data) + "\n")

	screen := onTerminal(t, e, "backup")
	wantScreen(t, "backup", screen,
		`\r\x1b\[K. \[0/1 done\] vps: pre-sync \d:\d\d`,
		// The agent's counts of its mirror sync: the first has no
		// totals to go by.
		`vps: pre-sync \d:\d\d 128\.0 MiB 1 files`,
		`\r\x1b\[K. \[0/1 done\] vps: freeze \d:\d\d`,
		`vps: transfer \d:\d\d [\d.]+ [KMG]?i?B/128\.0 MiB \d+% 1/1 files`,
	)
	if !strings.Contains(screen, "snapshot") {
		t.Errorf("no summary on the terminal:\n%q", screen)
	}

	// The second backup's syncs know their totals from the first.
	wantScreen(t, "second backup", onTerminal(t, e, "backup"),
		`vps: pre-sync \d:\d\d 128\.0 MiB/128\.0 MiB 100% 1/1 files`,
		`vps: freeze \d:\d\d 128\.0 MiB/128\.0 MiB 100% 1/1 files`,
	)

	// restore --target on the terminal: restic's restorer counts, shown
	// with the same line.
	screen = onTerminal(t, e, "restore", "--host", "vps", "--target", filepath.Join(e.Dir, "restored"))
	wantScreen(t, "restore", screen, `vps: (restore|verify) \d:\d\d [\d.]+ [KMG]?i?B/128\.0 MiB \d+% \d+/\d+ files`)
	if !regexp.MustCompile(`\x1b\[K\r?\n?restored snapshot [0-9a-f]{8} to `).MatchString(screen) {
		t.Errorf("restore result not printed on a cleared line:\n%q", screen)
	}

	clitest.WriteRandom(t, filepath.Join(data, "big"), 8<<20)
	for _, args := range [][]string{{"backup"}, {"backup", "--quiet"}} {
		r := e.MustHaul(args...)
		if strings.ContainsAny(r.Stderr+r.Stdout, "\r\x1b") || strings.Contains(r.Stderr, "%") {
			t.Errorf("haul %v with stderr not a terminal prints progress:\n%q", args, r.Stderr)
		}
	}
}
