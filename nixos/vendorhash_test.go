package nixos_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// CI recomputes the Go module download's hash offline (as buildGoModule's
// proxyVendor module derivation makes it, hashed as Nix hashes it) and
// fails when it is not the vendorHash committed in nixos/packages/haul.nix:
// go.mod or go.sum changed without it, and `nix build .#haul` would fail.
func TestVendorHashMatchesGoSum(t *testing.T) {
	testenv.Slow(t, "hashes the whole Go module download as Nix would (needed only when go.mod or go.sum change)")
	testenv.Require(t, "nix", "apt-get install nix-bin")
	root := testenv.ModuleRoot(t)
	pkg, err := os.ReadFile(filepath.Join(root, "nixos", "packages", "haul.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*vendorHash = "(sha256-[A-Za-z0-9+/]{43}=)";`).FindSubmatch(pkg)
	if m == nil {
		t.Fatal(`nixos/packages/haul.nix has no vendorHash = "sha256-…"; line (lib.fakeHash cannot build)`)
	}
	committed := string(m[1])

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "nixos", "packages", "vendor-hash.sh"))
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nixos/packages/vendor-hash.sh: %v\n%s\n(if a module is missing from the module cache, run `go mod download` first)", err, stderr.String())
	}
	got := strings.TrimSpace(stdout.String())
	if !regexp.MustCompile(`^sha256-[A-Za-z0-9+/]{43}=$`).MatchString(got) {
		t.Fatalf("vendor-hash.sh printed %q, not an SRI sha256", got)
	}
	if got != committed {
		t.Fatalf("vendorHash in nixos/packages/haul.nix is %s, but go.mod/go.sum now give %s.\n"+
			"Set vendorHash = \"%s\"; there (nixos/packages/vendor-hash.sh prints it), or `nix build .#haul` fails with a hash mismatch.", committed, got, got)
	}
}
