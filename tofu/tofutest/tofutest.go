// Package tofutest runs the real OpenTofu with the real
// terraform-provider-hcloud (both built by .ci/build-tofu) on a copy of
// tofu/ in which nixos-anywhere's module is swapped for a stand-in with
// the same input variables (standin/). Everything is offline: the
// provider comes from a filesystem mirror named in a CLI config file, the
// module from the copy, the API from tofu/fakehcloud.
package tofutest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/haulproject/haul/internal/testenv"
	"github.com/zclconf/go-cty/cty"
)

// The versions .ci/build-tofu builds.
const (
	TofuVersion     = "1.12.6"
	ProviderVersion = "1.68.0"
)

const buildHint = ".ci/build-tofu (builds OpenTofu and terraform-provider-hcloud from the Go module proxy into bin/)"

// Tools are the tofu binary and the provider mirror.
type Tools struct {
	Tofu    string
	Plugins string // the filesystem mirror directory
	// CLIConfig is a CLI configuration file installing providers only
	// from Plugins (nothing from the network).
	CLIConfig string
}

// Find locates the tools: $HAUL_TOFU, else tofu in $HAUL_BIN_DIR or the
// module's bin/; the mirror is $HAUL_TOFU_PLUGINS, else tofu-plugins
// beside tofu. Missing tools fail the test under CI and skip it otherwise.
func Find(t testing.TB) Tools {
	t.Helper()
	tofu := os.Getenv("HAUL_TOFU")
	if tofu == "" {
		for _, d := range []string{os.Getenv("HAUL_BIN_DIR"), filepath.Join(testenv.ModuleRoot(t), "bin")} {
			if d == "" {
				continue
			}
			if _, err := os.Stat(filepath.Join(d, "tofu")); err == nil {
				tofu = filepath.Join(d, "tofu")
				break
			}
		}
	}
	if tofu == "" {
		tofu = filepath.Join(testenv.ModuleRoot(t), "bin", "tofu")
	}
	testenv.Require(t, tofu, buildHint)
	plugins := os.Getenv("HAUL_TOFU_PLUGINS")
	if plugins == "" {
		plugins = filepath.Join(filepath.Dir(tofu), "tofu-plugins")
	}
	provider := filepath.Join(plugins, "registry.opentofu.org", "hetznercloud", "hcloud", ProviderVersion,
		runtime.GOOS+"_"+runtime.GOARCH, "terraform-provider-hcloud_v"+ProviderVersion)
	testenv.Require(t, provider, buildHint)
	cfg := filepath.Join(t.TempDir(), "tofurc")
	// Only the mirror: with no direct {} block, tofu never asks a registry.
	testenv.WriteFile(t, cfg, fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path    = %q
    include = ["registry.opentofu.org/*/*"]
  }
}
`, plugins), 0o644)
	return Tools{Tofu: tofu, Plugins: plugins, CLIConfig: cfg}
}

// Env is the environment for tofu: the caller's, without anything that
// would change tofu's or the provider's behaviour (TF_*, HCLOUD_*), plus
// the CLI config and extra.
func (tl Tools) Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TF_") || strings.HasPrefix(k, "HCLOUD_") || strings.HasPrefix(k, "STANDIN_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{"TF_CLI_CONFIG_FILE=" + tl.CLIConfig, "TF_IN_AUTOMATION=1", "TF_INPUT=0"}, extra...)...)
}

// Workdir is a copy of tofu/ with the stand-in module.
type Workdir struct {
	Dir string
	// Standin is the stand-in's record directory (STANDIN_DIR).
	Standin string
	Tools   Tools
}

// NewWorkdir copies tofu/ (the .tf files, extra-files.sh and the lock
// file) into a temporary directory and swaps nixos-anywhere.tf for one
// whose module "deploy" has the stand-in as its source and no provider
// requirements of its own (the real module's hashicorp/null and
// hashicorp/external are not used by the stand-in). Every other line of
// the configuration is the real one.
func NewWorkdir(t testing.TB, tools Tools) *Workdir {
	t.Helper()
	src := filepath.Join(testenv.ModuleRoot(t), "tofu")
	w := &Workdir{Dir: filepath.Join(t.TempDir(), "tofu"), Standin: t.TempDir(), Tools: tools}
	files, err := filepath.Glob(filepath.Join(src, "*.tf"))
	testenv.Must(t, err)
	for _, f := range append(files, filepath.Join(src, "extra-files.sh"), filepath.Join(src, ".terraform.lock.hcl")) {
		name := filepath.Base(f)
		b, err := os.ReadFile(f)
		testenv.Must(t, err)
		fi, err := os.Stat(f)
		testenv.Must(t, err)
		if name == "nixos-anywhere.tf" {
			b = swapModule(t, b)
		}
		testenv.WriteFile(t, filepath.Join(w.Dir, name), string(b), fi.Mode().Perm())
	}
	standin := filepath.Join(src, "tofutest", "standin")
	ents, err := os.ReadDir(standin)
	testenv.Must(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(standin, e.Name()))
		testenv.Must(t, err)
		fi, err := e.Info()
		testenv.Must(t, err)
		testenv.WriteFile(t, filepath.Join(w.Dir, "nixos-anywhere-standin", e.Name()), string(b), fi.Mode().Perm())
	}
	return w
}

func swapModule(t testing.TB, src []byte) []byte {
	t.Helper()
	f, diags := hclwrite.ParseConfig(src, "nixos-anywhere.tf", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("tofu/nixos-anywhere.tf: %s", diags.Error())
	}
	found := false
	for _, b := range f.Body().Blocks() {
		switch {
		case b.Type() == "terraform":
			f.Body().RemoveBlock(b)
		case b.Type() == "module" && len(b.Labels()) == 1 && b.Labels()[0] == "deploy":
			b.Body().SetAttributeValue("source", cty.StringVal("./nixos-anywhere-standin"))
			found = true
		}
	}
	if !found {
		t.Fatal(`tofu/nixos-anywhere.tf has no module "deploy"`)
	}
	return f.Bytes()
}

// Result is one tofu run.
type Result struct {
	Out  string // stdout and stderr, interleaved
	Code int
}

// Run runs tofu in the workdir with env added to Tools.Env (and
// STANDIN_DIR). It fails the test only if tofu cannot be started.
func (w *Workdir) Run(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	cmd := exec.Command(w.Tools.Tofu, args...)
	cmd.Dir = w.Dir
	cmd.Env = w.Tools.Env(append([]string{"STANDIN_DIR=" + w.Standin}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := Result{Out: out.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tofu %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// Must runs tofu and fails the test unless it exits 0.
func (w *Workdir) Must(t testing.TB, env []string, args ...string) string {
	t.Helper()
	r := w.Run(t, env, args...)
	if r.Code != 0 {
		t.Fatalf("tofu %s: exit %d\n%s", strings.Join(args, " "), r.Code, r.Out)
	}
	return r.Out
}

// Init runs `tofu init` offline.
func (w *Workdir) Init(t testing.TB) {
	t.Helper()
	w.Must(t, nil, "init", "-input=false", "-no-color")
}

// WriteVars writes terraform.tfvars.
func (w *Workdir) WriteVars(t testing.TB, content string) {
	t.Helper()
	testenv.WriteFile(t, filepath.Join(w.Dir, "terraform.tfvars"), content, 0o600)
}

// Installs is how many times the stand-in module ran.
func (w *Workdir) Installs() int {
	b, err := os.ReadFile(filepath.Join(w.Standin, "installs"))
	if err != nil {
		return 0
	}
	var n int
	fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n)
	return n
}
