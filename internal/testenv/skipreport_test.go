package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelperRequiresMissingTool is run only as a child of
// TestSkipsAreReportedLoudly.
func TestHelperRequiresMissingTool(t *testing.T) {
	if os.Getenv("HAUL_TESTENV_CHILD") == "" {
		t.Skip("helper")
	}
	Require(t, "haul-no-such-tool", "apt-get install haul-no-such-tool")
}

// TestSkipsAreReportedLoudly: outside CI a test whose tool is missing
// skips, is written to $HAUL_SKIP_REPORT, and .ci/skip-summary (what `make
// test` runs afterwards) says how many skipped and why.
func TestSkipsAreReportedLoudly(t *testing.T) {
	report := filepath.Join(t.TempDir(), "skips")
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperRequiresMissingTool$", "-test.v")
	env := []string{"HAUL_TESTENV_CHILD=1", "HAUL_SKIP_REPORT=" + report}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CI=") && !strings.HasPrefix(kv, "HAUL_SKIP_REPORT=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "SKIP") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	b, err := os.ReadFile(report)
	if err != nil || string(b) != "haul-no-such-tool\tapt-get install haul-no-such-tool\tTestHelperRequiresMissingTool\n" {
		t.Fatalf("report %q (%v)", b, err)
	}
	out, err := exec.Command(filepath.Join(ModuleRoot(t), ".ci", "skip-summary"), report).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "WARNING: 1 integration tests SKIPPED") || !strings.Contains(string(out), "apt-get install haul-no-such-tool") {
		t.Fatalf("skip-summary: %v\n%s", err, out)
	}
}
