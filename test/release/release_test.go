// Package release checks `make release`: static binaries for amd64 and
// arm64 carrying the version, and a SHA256SUMS that verifies.
package release

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
)

func TestMakeRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles four binaries")
	}
	testenv.Require(t, "make", "apt-get install make")
	testenv.Require(t, "sha256sum", "apt-get install coreutils")
	root := testenv.ModuleRoot(t)
	dist := t.TempDir()
	const version = "v9.8.7-test"
	cmd := exec.Command("make", "--no-print-directory", "release", "VERSION="+version, "DIST="+dist)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, name := range []string{"haul", "haul-agent"} {
		for arch, machine := range machines {
			path := filepath.Join(dist, name+"-"+version+"-linux-"+arch)
			f, err := elf.Open(path)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if f.Machine != machine {
				t.Errorf("%s: machine %v, want %v", path, f.Machine, machine)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("%s is dynamically linked (%v)", path, p.Type)
				}
			}
			f.Close()
		}
	}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil || strings.Count(string(sums), "\n") != 4 {
		t.Fatalf("SHA256SUMS: %v\n%s", err, sums)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c: %v\n%s", err, out)
	}
	if runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") {
		for _, args := range [][]string{{"haul", "version"}, {"haul-agent", "--version"}} {
			out, err := exec.Command(filepath.Join(dist, args[0]+"-"+version+"-linux-"+runtime.GOARCH), args[1:]...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), version) {
				t.Errorf("%s %s: %v\n%s (want the version %s)", args[0], args[1], err, out, version)
			}
		}
	}
}
