// Package nixeval evaluates this repository's NixOS modules for tests, with
// Debian's nix-bin and no nixpkgs: nixos/tests/eval is a module-system
// evaluator that follows nixpkgs' lib, and declares the nixpkgs options our
// modules set (docs/nixos.md, "What CI checks").
//
// StartScript is what other packages' tests use: the start script of
// services.pangolin-compose (the unit's ExecStartPre), rendered from the
// module for a given data dir, ready to run on this machine.
package nixeval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// Hint is the install hint for nix-instantiate.
const Hint = "apt-get install nix-bin"

// Cmd returns nix-instantiate with args, set up to run without a daemon:
// its store, state and config live in a temp dir of t (root with the
// default build-users-group would need nixbld users). Store paths made with
// --read-write-mode stay there until t ends.
//
// All calls for one t share that store, so the same files get the same
// store paths (a test can compare two generations' units).
func Cmd(t testing.TB, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	testenv.Require(t, "nix-instantiate", Hint)
	dir := nixDir(t)
	cmd := exec.CommandContext(ctx, "nix-instantiate", args...)
	cmd.Env = append(os.Environ(),
		"NIX_CONF_DIR="+filepath.Join(dir, "conf"),
		"NIX_STATE_DIR="+filepath.Join(dir, "state"),
		"NIX_STORE_DIR="+filepath.Join(dir, "store"),
		"NIX_LOG_DIR="+filepath.Join(dir, "log"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"HOME="+dir,
	)
	return cmd
}

var nixDirs sync.Map // testing.TB -> string

// nixDir returns t's Nix state directory, made on first use.
func nixDir(t testing.TB) string {
	t.Helper()
	if d, ok := nixDirs.Load(t); ok {
		return d.(string)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "nix.conf"), []byte("build-users-group =\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, loaded := nixDirs.LoadOrStore(t, dir); loaded {
		return d.(string)
	}
	t.Cleanup(func() { nixDirs.Delete(t) })
	return dir
}

// NixString quotes s as a Nix string literal.
func NixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `${`, `\${`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// EvalJSON evaluates expr (which may use `eval`, the function in
// nixos/tests/eval/default.nix) with --strict --json and --read-write-mode
// (files the modules write with the stand-in builders land in t's store)
// and decodes the result into out.
func EvalJSON(t testing.TB, expr string, out any) {
	t.Helper()
	root := testenv.ModuleRoot(t)
	full := fmt.Sprintf("let eval = import %s; in %s", filepath.Join(root, "nixos", "tests", "eval", "default.nix"), expr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := Cmd(t, ctx, "--eval", "--strict", "--json", "--read-write-mode", "--expr", full)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-instantiate --eval %s: %v\n%s", full, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("evaluation result is not the expected JSON: %v\n%s", err, stdout.String())
	}
}

// StackModule is the Nix module (an attrset expression) StartScript
// evaluates services.pangolin-compose with: enabled, on dataDir, with
// test domains and image names. More modules can be added after it.
func StackModule(dataDir string) string {
	return fmt.Sprintf(`{
  services.pangolin-compose = {
    enable = true;
    dataDir = %s;
    dashboardDomain = "pangolin.example.test";
    baseDomain = "example.test";
    letsEncryptEmail = "admin@example.test";
    images = {
      pangolin = "docker.io/fosrl/pangolin:test@sha256:%s";
      gerbil = "docker.io/fosrl/gerbil:test@sha256:%[2]s";
      traefik = "docker.io/traefik:test@sha256:%[2]s";
    };
  };
}`, NixString(dataDir), strings.Repeat("0", 64))
}

// StartScript renders services.pangolin-compose's start script from the
// module (nixos/modules/pangolin-compose.nix through
// nixos/lib/pangolin-compose-prepare.nix) for a stack whose data dir is
// dataDir (the script works on dataDir/config), and returns the path of an
// executable copy in a temp dir of t. It runs with this machine's bash,
// coreutils, grep and yq/jq (Debian's yq package), the same programs the
// module takes from nixpkgs. modules are further Nix modules (attrset
// expressions), e.g. `{ services.pangolin-compose.settings.app.log_level = "debug"; }`.
//
// The script fails (non-zero, message on stderr) when a secret would have
// to be generated for existing data, when the placeholder is left in
// config.yml, or when a config file is not valid YAML.
func StartScript(t testing.TB, dataDir string, modules ...string) string {
	t.Helper()
	testenv.Require(t, "yq", "apt-get install yq")
	var r struct {
		Script           string   `json:"script"`
		FailedAssertions []string `json:"failedAssertions"`
	}
	mods := append([]string{StackModule(dataDir)}, modules...)
	EvalJSON(t, fmt.Sprintf(`let e = eval { host = false; modules = [ %s ]; }; in {
  script = e.result.etc."pangolin-compose/prepare".source;
  inherit (e.result) failedAssertions;
}`, strings.Join(mods, " ")), &r)
	if len(r.FailedAssertions) > 0 {
		t.Fatalf("services.pangolin-compose: failed assertions: %s", strings.Join(r.FailedAssertions, "; "))
	}
	text, err := os.ReadFile(r.Script)
	if err != nil {
		t.Fatalf("the rendered start script is missing: %v", err)
	}
	out := filepath.Join(t.TempDir(), "pangolin-compose-prepare")
	if err := os.WriteFile(out, text, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}
