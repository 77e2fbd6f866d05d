package pull_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/ptytest"
	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/internal/clitest"
)

// onTerminal runs haul with stdout and stderr on a fresh pseudo-terminal
// and returns the screen.
func onTerminal(t *testing.T, e *clitest.Env, args ...string) string {
	t.Helper()
	pty := ptytest.Open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Haul, append([]string{"--config", e.Config}, args...)...)
	cmd.Stdout, cmd.Stderr = pty.Slave, pty.Slave
	clitest.Must(t, cmd.Start())
	err := cmd.Wait()
	pty.CloseSlave()
	screen := pty.Output()
	if err != nil {
		t.Fatalf("haul %s: %v\n%s", strings.Join(args, " "), err, screen)
	}
	if os.Getenv("HAUL_PRINT_SCREEN") != "" {
		t.Logf("haul %s screen:\n%s", strings.Join(args, " "), screen)
	}
	return screen
}

func wantScreen(t *testing.T, what, screen string, res ...string) {
	t.Helper()
	for _, re := range res {
		if !regexp.MustCompile(re).MatchString(screen) {
			t.Errorf("%s screen lacks %s:\n%q", what, re, screen)
		}
	}
}

// progressMarks finds a redrawn line or progress counts (a terminal ends
// lines with \r\n).
var progressMarks = regexp.MustCompile(`\r[^\n]|\x1b\[K|\d+%|ETA|\d+/\d+ (packs|chunks|files|snapshots)`)

// TestCheckProgressOnATerminal runs the real `haul check --read-data` with
// stderr on a real pseudo-terminal: the screen shows the phases, the
// snapshots checked of their total, and while reading the data the pack
// bytes read of the total, percent and packs done of the total; the result
// follows on a cleared line. With --json or --quiet on the terminal, and
// with stderr not a terminal, there is none of it.
func TestCheckProgressOnATerminal(t *testing.T) {
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "data")
	clitest.WriteRandom(t, filepath.Join(data, "big"), 32<<20)
	e.WriteConfig("[[hosts]]\nname = \"vps\"\ncommand = " + e.AgentCommand("vps", data) + "\n")
	e.MustHaul("backup")

	screen := onTerminal(t, e, "check", "--read-data")
	wantScreen(t, "check --read-data", screen,
		`check: load index \d:\d\d`,
		`check: check snapshots \d:\d\d 1/1 snapshots 100%`,
		`check: read data \d:\d\d [\d.]+ [KMG]?i?B/3\d\.\d MiB \d+% \d+/\d+ packs`,
		`check: read data \d:\d\d 3\d\.\d MiB/3\d\.\d MiB 100% (\d+)/\d+ packs`,
		`\x1b\[K\r?\n?no errors were found \(1 snapshots, read \d+ of \d+ packs`,
	)
	// The packs counted are those the result reports.
	last := regexp.MustCompile(`read data \d:\d\d [^|\r]* (\d+)/(\d+) packs`).FindAllStringSubmatch(screen, -1)
	res := regexp.MustCompile(`read (\d+) of (\d+) packs`).FindStringSubmatch(screen)
	if len(last) == 0 || res == nil || last[len(last)-1][1] != res[1] || last[len(last)-1][2] != res[1] {
		t.Errorf("progress packs %v, result %v", last, res)
	}

	for _, args := range [][]string{{"check", "--read-data", "--json"}, {"check", "--read-data", "--quiet"}} {
		if s := onTerminal(t, e, args...); progressMarks.MatchString(s) {
			t.Errorf("haul %v on a terminal shows progress:\n%q", args, s)
		}
	}
	r := e.MustHaul("check", "--read-data")
	if progressMarks.MatchString(r.Stderr + r.Stdout) {
		t.Errorf("check --read-data with stderr not a terminal prints progress:\n%q", r.Stderr)
	}
	if !strings.Contains(r.Stderr, "read all of the data") {
		t.Errorf("check --read-data not on a terminal lost its phase lines:\n%q", r.Stderr)
	}
}

// TestAgentRestoreProgressOnATerminal restores a snapshot onto a real
// haul-agent (a fresh host, over the exec transport) with `haul restore`
// on a real pseudo-terminal: the screen shows the tree streamed (files and
// bytes of the snapshot's totals), the transfer (chunk bytes and chunks
// sent of those the agent asked for, percent), and the steps the agent
// reports while it verifies and swaps; the result follows on a cleared
// line. A dry
// run not on a terminal, and one with --json on it, show none of it.
func TestAgentRestoreProgressOnATerminal(t *testing.T) {
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "data")
	clitest.WriteRandom(t, filepath.Join(data, "big"), 48<<20)
	for i := range 20 {
		clitest.WriteRandom(t, filepath.Join(data, "small", string(rune('a'+i))), 4<<10)
	}
	newData := filepath.Join(e.Dir, "new-data")
	newArgv := e.AgentArgv("new", newData)
	e.WriteConfig("[[hosts]]\nname = \"vps\"\ncommand = " + e.AgentCommand("vps", data) + "\n" +
		"[[hosts]]\nname = \"new\"\ncommand = " + clitest.TOMLArray(newArgv...) + "\n" +
		"restore_command = " + clitest.TOMLArray(append(newArgv, "--allow-restore")...) + "\n")
	e.MustHaul("backup", "--host", "vps")

	r := e.MustHaul("restore", "--host", "vps", "--to", "new", "--dry-run")
	if progressMarks.MatchString(r.Stderr + r.Stdout) {
		t.Errorf("restore --dry-run with stderr not a terminal prints progress:\n%q", r.Stderr)
	}
	if s := onTerminal(t, e, "restore", "--host", "vps", "--to", "new", "--dry-run", "--json"); progressMarks.MatchString(s) {
		t.Errorf("restore --json on a terminal shows progress:\n%q", s)
	}

	screen := onTerminal(t, e, "restore", "--host", "vps", "--to", "new")
	wantScreen(t, "restore onto an agent", screen,
		`new: connect \d:\d\d`,
		`new: tree \d:\d\d [\d.]+ [KMG]?i?B/48\.1 MiB \d+% \d+/21 files`,
		`new: tree \d:\d\d 48\.1 MiB/48\.1 MiB 100% 21/21 files`,
		`new: transfer \d:\d\d [\d.]+ [KMG]?i?B/48\.1 MiB \d+% \d+/\d+ chunks`,
		`new: transfer \d:\d\d 48\.1 MiB/48\.1 MiB 100% (\d+)/\d+ chunks`,
		// The agent's own steps after the commit, from its progress frames.
		`new: sync \d:\d\d`,
		`new: verify \d:\d\d`,
		`new: metadata \d:\d\d`,
		`new: swap \d:\d\d`,
		`new: finish \d:\d\d`,
		`\x1b\[K\r?\n?restored snapshot [0-9a-f]{8} of vps onto new: 21 files`,
	)
	// The chunks counted are those the result reports sent.
	last := regexp.MustCompile(`transfer \d:\d\d [^|\r]* (\d+)/(\d+) chunks`).FindAllStringSubmatch(screen, -1)
	res := regexp.MustCompile(`\((\d+) chunks, `).FindStringSubmatch(screen)
	if len(last) == 0 || res == nil || last[len(last)-1][1] != res[1] || last[len(last)-1][2] != res[1] {
		t.Errorf("progress chunks %v, result %v", last, res)
	}
	if b, err := os.ReadFile(filepath.Join(newData, "big")); err != nil || len(b) != 48<<20 {
		t.Errorf("restored big: %d bytes, %v", len(b), err)
	}
}

// TestMigrateProgressOnATerminal migrates between two real haul-agents
// with `haul migrate` on a real pseudo-terminal: each step is an entry of
// the progress line (the old host's backup, the restore onto the new one,
// the new one's verifying backup), with the agents' phases.
func TestMigrateProgressOnATerminal(t *testing.T) {
	testenv.Slow(t, "three sessions with two agents; restore's own progress runs in TestAgentRestoreProgressOnATerminal")
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "data")
	clitest.WriteRandom(t, filepath.Join(data, "big"), 16<<20)
	newArgv := e.AgentArgv("new", filepath.Join(e.Dir, "new-data"))
	e.WriteConfig("[[hosts]]\nname = \"vps\"\ncommand = " + e.AgentCommand("vps", data) + "\n" +
		"[[hosts]]\nname = \"new\"\ncommand = " + clitest.TOMLArray(newArgv...) + "\n" +
		"restore_command = " + clitest.TOMLArray(append(newArgv, "--allow-restore")...) + "\n")

	screen := onTerminal(t, e, "migrate", "--from", "vps", "--to", "new")
	wantScreen(t, "migrate", screen,
		`\[0/1 done\] vps: pre-sync \d:\d\d`,
		`\[0/1 done\] vps: transfer \d:\d\d [\d.]+ [KMG]?i?B/16\.0 MiB \d+% 1/1 files`,
		`\[1/2 done\] new: transfer \d:\d\d [\d.]+ [KMG]?i?B/16\.0 MiB \d+% \d+/\d+ chunks`,
		`\[1/2 done\] new: swap \d:\d\d`,
		`\[2/3 done\] new: freeze \d:\d\d`,
		`\x1b\[K\r?\n?migrated vps → new in `,
	)
}
