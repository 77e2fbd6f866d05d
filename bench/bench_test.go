package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
)

// TestSmoke runs the harness end to end on a small tree — haul, rsync and
// restic, scenarios (a) and (b) — and checks that every number it reports
// was measured, so that CI catches a broken harness before a long run does.
func TestSmoke(t *testing.T) {
	testenv.Require(t, "rsync", "apt-get install rsync")
	testenv.Require(t, "borg", "apt-get install borgbackup")
	e := NewEnv(t)
	rep, err := Peers(context.Background(), e, Options{
		Size: 4 << 20, Seed: 7,
		Tools: []string{ToolHaul, ToolRsync, ToolRestic},
		Steps: []string{"a", "b"},
		Logf:  t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Results), 3*3; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, r := range rep.Results {
		if r.Wire() < 1<<10 || r.Wall <= 0 || r.VPSRSS <= 0 || r.NASRSS <= 0 || r.VPSCPU <= 0 {
			t.Errorf("%s %s: a number is missing: %+v", r.Tool, r.Step, r)
		}
	}
	full, _ := rep.Get(ToolHaul, "full")
	if full.Haul == nil || full.Haul.ChunkBytes != rep.Tree.Bytes {
		t.Errorf("haul's full backup: %+v, want every byte of the %d-byte tree sent", full.Haul, rep.Tree.Bytes)
	}
	if none, _ := rep.Get(ToolHaul, "a"); none.Haul == nil || none.Haul.ChunksWanted != 0 {
		t.Errorf("haul with nothing changed: %+v", none.Haul)
	}
	if rs, _ := rep.Get(ToolRsync, "a"); rs.Wire() > 256<<10 {
		t.Errorf("rsync with nothing changed moved %d bytes", rs.Wire())
	}

	dir := t.TempDir()
	doc := filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(doc, []byte("# Benchmarks\n\nhand-written\n\n<!-- bench:other:start -->\nkeep me\n<!-- bench:other:end -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := Meta{Command: "test", Machine: ReadMachine(), Versions: e.Versions(), ChartFile: "chart.png"}
	for range 2 { // a rerun replaces the section, it does not add one
		if err := UpdateSection(doc, "peers", PeersMarkdown(rep, meta)); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(doc)
	s := string(b)
	if strings.Count(s, "<!-- bench:peers:start -->") != 1 || !strings.Contains(s, "keep me") || !strings.Contains(s, "hand-written") {
		t.Errorf("BENCHMARKS.md after two updates:\n%s", s)
	}
	f, err := os.Create(filepath.Join(dir, "chart.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteChart(f, rep); err != nil {
		t.Fatal(err)
	}
}
