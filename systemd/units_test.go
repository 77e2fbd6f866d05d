package systemd

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
)

// binaryPath matches the install paths the units name; the test points
// them at freshly built binaries, because `systemd-analyze verify` fails
// when an ExecStart= executable does not exist.
var binaryPath = regexp.MustCompile(`/usr/local/bin/(haul-agent|haul)\b`)

// units copies every unit in this directory to a temporary directory with
// the binaries' paths rewritten, and returns the copies.
func units(t *testing.T) []string {
	t.Helper()
	bins := testenv.Binaries(t)
	var files []string
	for _, pat := range []string{"*.service", "*.timer"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 6 {
		t.Fatalf("found units %v, want at least haul.service, haul.timer, haul-check.service, haul-check.timer, haul-agent-recover.service, haul-agent-recover.timer", files)
	}
	dir := t.TempDir()
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = binaryPath.ReplaceAll(b, []byte(bins+"/$1"))
		p := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// TestUnitsVerify runs `systemd-analyze verify` on all units together (so
// timers find their services); any warning is a failure.
func TestUnitsVerify(t *testing.T) {
	testenv.Require(t, "systemd-analyze", "apt-get install systemd")
	files := units(t)
	out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, files...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", files, err, out)
	}
	// The check fails when it should: a missing executable is an error.
	bad := filepath.Join(t.TempDir(), "haul.service")
	if err := os.WriteFile(bad, []byte("[Service]\nType=oneshot\nExecStart=/nonexistent/haul backup\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", bad).CombinedOutput(); err == nil {
		t.Fatalf("verify accepted a unit whose ExecStart does not exist:\n%s", out)
	}
}

// TestServicesHardened asks systemd-analyze security for each service's
// exposure (0 best, 10 worst) and wants it at most 2.0, and checks the
// settings the issue names are present.
func TestServicesHardened(t *testing.T) {
	testenv.Require(t, "systemd-analyze", "apt-get install systemd")
	for _, f := range units(t) {
		if !strings.HasSuffix(f, ".service") {
			continue
		}
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=20", f).CombinedOutput()
		if err != nil {
			t.Errorf("%s: exposure above 2.0 (%v):\n%s", filepath.Base(f), err, lastLine(out))
		}
		b, _ := os.ReadFile(f)
		for _, want := range []string{"ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", "ProtectHome=yes"} {
			if !bytes.Contains(b, []byte("\n"+want+"\n")) {
				t.Errorf("%s lacks %s", filepath.Base(f), want)
			}
		}
	}
}

// TestExecStartsAreHaulCommands runs each ExecStart= of the units with
// --help appended: haul and haul-agent reject an unknown command or flag,
// so a unit cannot drift from the CLI.
func TestExecStartsAreHaulCommands(t *testing.T) {
	bins := testenv.Binaries(t)
	n := 0
	for _, f := range units(t) {
		b, _ := os.ReadFile(f)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "ExecStart=")
			if !ok {
				continue
			}
			argv := strings.Fields(strings.ReplaceAll(strings.TrimLeft(line, "-"), "%%", "%"))
			if argv[0] != filepath.Join(bins, "haul") && argv[0] != filepath.Join(bins, "haul-agent") {
				continue
			}
			n++
			out, err := exec.Command(argv[0], append(argv[1:], "--help")...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: %s --help: %v\n%s", filepath.Base(f), strings.Join(argv[1:], " "), err, out)
			}
		}
	}
	if n < 4 {
		t.Fatalf("found %d haul and haul-agent ExecStart= lines, want at least 4", n)
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
