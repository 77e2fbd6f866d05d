package nixos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/nixos/nixeval"
)

// evalResult is nixos/tests/eval/default.nix's `result`.
type evalResult struct {
	Declared         []string `json:"declared"`
	Collisions       []string `json:"collisions"`
	FailedAssertions []string `json:"failedAssertions"`
	Warnings         []string `json:"warnings"`
	Units            map[string]struct {
		Text           string   `json:"text"`
		WantedBy       []string `json:"wantedBy"`
		ReloadTriggers []string `json:"reloadTriggers"`
	} `json:"units"`
	Etc map[string]struct {
		Text   *string `json:"text"`
		Source *string `json:"source"`
	} `json:"etc"`
	Compose  json.RawMessage `json:"compose"`
	Firewall struct {
		AllowedTCPPorts []int `json:"allowedTCPPorts"`
		AllowedUDPPorts []int `json:"allowedUDPPorts"`
	} `json:"firewall"`
	DataPaths []string `json:"dataPaths"`
	Checks    []string `json:"checks"`
	VM        struct {
		FailedAssertions []string `json:"failedAssertions"`
		Checks           []string `json:"checks"`
		MemorySize       int      `json:"memorySize"`
		ForwardPorts     []struct {
			Host  struct{ Port int } `json:"host"`
			Guest struct{ Port int } `json:"guest"`
		} `json:"forwardPorts"`
	} `json:"vm"`
}

// evalHost evaluates nixosConfigurations.vps's modules (the Hetzner host,
// our two modules, the nixpkgs declarations) plus modules.
func evalHost(t *testing.T, args string, modules ...string) evalResult {
	t.Helper()
	var r evalResult
	nixeval.EvalJSON(t, fmt.Sprintf("(eval { %s modules = [ %s ]; }).result", args, strings.Join(modules, " ")), &r)
	return r
}

// evalErr evaluates expr and returns nix-instantiate's stderr and error.
func evalErr(t *testing.T, expr string) (string, error) {
	t.Helper()
	root := testenv.ModuleRoot(t)
	full := fmt.Sprintf("let eval = import %s; in %s", filepath.Join(root, "nixos", "tests", "eval", "default.nix"), expr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := nixeval.Cmd(t, ctx, "--eval", "--strict", "--json", "--expr", full)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = nil, &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// The collision test: none of our option names is one nixpkgs declares
// (its native services.pangolin above all). On the main of 2026-12-01,
// with services.pangolin.* declared by nixos/modules/pangolin.nix, the
// evaluation stopped with "The option `services.pangolin.baseDomain' in
// `…/nixos/modules/pangolin.nix' is already declared in
// `…/nixos/tests/eval/nixpkgs-declared.nix'".
func TestModulesDeclareNoNixpkgsOption(t *testing.T) {
	r := evalHost(t, "")
	if len(r.Collisions) > 0 {
		t.Fatalf("our modules declare options nixpkgs already declares: %v", r.Collisions)
	}
	// A walk that found nothing must not pass as "no collision".
	for _, want := range []string{"services.pangolin-compose.enable", "services.pangolin-compose.settings", "services.haul-agent.enable"} {
		if !slices.Contains(r.Declared, want) {
			t.Errorf("%s is not among our declared options (%d found)", want, len(r.Declared))
		}
	}
	for _, d := range r.Declared {
		if strings.HasPrefix(d, "services.pangolin.") || strings.HasPrefix(d, "services.gerbil.") || strings.HasPrefix(d, "services.traefik.") {
			t.Errorf("%s is in a namespace nixpkgs' native Pangolin module owns", d)
		}
	}
}

// The evaluator refuses what nixpkgs refuses: a second declaration of an
// option, and a definition of an option nothing declares. Both are what
// the tests above rely on to fail.
func TestEvaluatorRefusesWhatNixpkgsRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, module, want string
	}{
		{
			name:   "redeclared nixpkgs option",
			module: `({ lib, ... }: { options.services.pangolin.enable = lib.mkEnableOption "a second Pangolin"; })`,
			want:   "The option `services.pangolin.enable' in",
		},
		{
			name:   "misspelt unit option",
			module: `{ systemd.services.pangolin-compose.serviceConfg.Type = "oneshot"; }`,
			want:   "The option `systemd.services.pangolin-compose.serviceConfg' does not exist",
		},
		{
			name:   "wrong type",
			module: `{ services.pangolin-compose.openFirewall = "yes"; }`,
			want:   "is not of type `boolean'",
		},
		{
			name:   "conflicting definitions",
			module: `{ services.haul-agent.host = "other"; }`,
			want:   "has conflicting definition values",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stderr, err := evalErr(t, fmt.Sprintf("(eval { modules = [ %s ]; }).result", tc.module))
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Fatalf("evaluation with %s: err %v, want an error containing %q; stderr:\n%s", tc.module, err, tc.want, stderr)
			}
		})
	}
	// mkForce beats a plain definition, as in nixpkgs.
	r := evalHost(t, "", `{ networking.firewall.allowedTCPPorts = (eval {}).lib.mkForce [ 443 ]; }`)
	if !slices.Equal(r.Firewall.AllowedTCPPorts, []int{443}) {
		t.Errorf("mkForce [ 443 ] gave allowedTCPPorts %v", r.Firewall.AllowedTCPPorts)
	}
}

// nixosConfigurations.vps-equivalent: no failed assertion, no warning, and
// the Hetzner host's choices (issue 15 item 5) are in place.
func TestHostConfigurationEvaluates(t *testing.T) {
	r := evalHost(t, "")
	if len(r.FailedAssertions) > 0 {
		t.Fatalf("failed assertions:\n%s", strings.Join(r.FailedAssertions, "\n"))
	}
	if len(r.Warnings) > 0 {
		t.Errorf("warnings:\n%s", strings.Join(r.Warnings, "\n"))
	}
	if !slices.Equal(r.Firewall.AllowedTCPPorts, []int{80, 443}) || !slices.Equal(r.Firewall.AllowedUDPPorts, []int{51820, 21820}) {
		t.Errorf("firewall %+v, want TCP 80, 443 and UDP 51820, 21820 opened by the host", r.Firewall)
	}
	if !slices.Equal(r.DataPaths, []string{"/var/lib/pangolin"}) {
		t.Errorf("haul-agent dataPaths %v", r.DataPaths)
	}
	// The example site.nix stops a real build (system.checks), not the VM
	// variant (`nix run .#vm`), whose qemu-vm.nix options must exist too.
	if !slices.Equal(r.Checks, []string{"nixos-hosts-hetzner-site-nix-is-the-example"}) {
		t.Errorf("system.checks %v, want the example-site refusal", r.Checks)
	}
	if len(r.VM.FailedAssertions) > 0 || len(r.VM.Checks) > 0 {
		t.Errorf("vmVariant: failed assertions %v, checks %v", r.VM.FailedAssertions, r.VM.Checks)
	}
	if r.VM.MemorySize != 2048 || len(r.VM.ForwardPorts) != 3 || r.VM.ForwardPorts[0].Host.Port != 2222 || r.VM.ForwardPorts[0].Guest.Port != 22 {
		t.Errorf("vmVariant: memorySize %d, forwardPorts %+v", r.VM.MemorySize, r.VM.ForwardPorts)
	}

	// Without the host's openFirewall, the module opens nothing (nixpkgs'
	// modules default to closed).
	bare := evalHost(t, "host = false;", nixeval.StackModule("/var/lib/pangolin"))
	if len(bare.Firewall.AllowedTCPPorts)+len(bare.Firewall.AllowedUDPPorts) != 0 {
		t.Errorf("openFirewall defaults to open: %+v", bare.Firewall)
	}

	// Both Pangolins at once is refused with a clear message.
	both := evalHost(t, "", `{ services.pangolin.enable = true; }`)
	if !slices.ContainsFunc(both.FailedAssertions, func(m string) bool { return strings.Contains(m, "both enabled") }) {
		t.Errorf("native and compose Pangolin together: assertions %v", both.FailedAssertions)
	}
}

// The host's network, disk and guest agent (issue 15 item 5, and the
// reflink-capable /var/lib the agent's mirror clones into).
func TestHostNetworkDiskAndGuest(t *testing.T) {
	var r struct {
		Match    any      `json:"match"`
		Address  []string `json:"address"`
		Guest    bool     `json:"guest"`
		Format   string   `json:"format"`
		MkfsArgs []string `json:"mkfsArgs"`
		Mount    string   `json:"mount"`
	}
	nixeval.EvalJSON(t, `let
  c = (eval { modules = [ ]; }).config;
  n = c.systemd.network.networks."10-uplink";
  root = c.disko.devices.disk.main.content.partitions.root.content;
in {
  match = n.matchConfig.Name;
  inherit (n) address;
  guest = c.services.qemuGuest.enable;
  format = root.format;
  mkfsArgs = root.extraArgs;
  mount = root.mountpoint;
}`, &r)
	if r.Match != "enp1s0" {
		t.Errorf("uplink matches %v; a wildcard such as en* would also catch a private network's NIC", r.Match)
	}
	if !r.Guest {
		t.Error("services.qemuGuest.enable is off; Hetzner's password reset needs the guest agent")
	}
	if r.Format != "xfs" || !slices.Equal(r.MkfsArgs, []string{"-m", "reflink=1"}) || r.Mount != "/" {
		t.Errorf("root file system %s %v on %s, want xfs with -m reflink=1 on / (so /var/lib can FICLONE)", r.Format, r.MkfsArgs, r.Mount)
	}
	if len(r.Address) != 0 {
		t.Errorf("example site (ipv6Address = null) has IPv6 addresses %v", r.Address)
	}
}

// The Hetzner host with an IPv6 address in tofu's output format.
func TestHostIPv6FromTofuOutput(t *testing.T) {
	root := testenv.ModuleRoot(t)
	// A copy of the host directory with ipv6Address set as tofu prints it.
	dir := t.TempDir()
	host := filepath.Join(dir, "nixos", "hosts", "hetzner")
	if err := os.MkdirAll(host, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"default.nix", "disko.nix", "site.nix"} {
		b, err := os.ReadFile(filepath.Join(root, "nixos", "hosts", "hetzner", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "site.nix" {
			b = regexp.MustCompile(`ipv6Address = null;`).ReplaceAll(b, []byte(`ipv6Address = "2a01:4f8:c0c:1234::1";`))
		}
		if err := os.WriteFile(filepath.Join(host, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "nixos", "modules"), filepath.Join(dir, "nixos", "modules")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "nixos", "lib"), filepath.Join(dir, "nixos", "lib")); err != nil {
		t.Fatal(err)
	}
	var v6 struct {
		Address []string         `json:"address"`
		Routes  []map[string]any `json:"routes"`
	}
	nixeval.EvalJSON(t, fmt.Sprintf(`let n = (eval { repo = %s; }).config.systemd.network.networks."10-uplink"; in { inherit (n) address routes; }`, dir), &v6)
	if !slices.Equal(v6.Address, []string{"2a01:4f8:c0c:1234::1/64"}) {
		t.Errorf("address %v, want tofu's ipv6_address with /64", v6.Address)
	}
	if len(v6.Routes) != 1 || v6.Routes[0]["Gateway"] != "fe80::1" {
		t.Errorf("routes %v, want the default route via fe80::1", v6.Routes)
	}
}

// The rendered units pass `systemd-analyze verify` in a root that has what
// NixOS would put there: the units, /etc/pangolin-compose/*, the programs
// they run, and systemd's own units (docker.service from Debian's package).
func TestRenderedUnitsVerify(t *testing.T) {
	testenv.Require(t, "systemd-analyze", "apt-get install systemd")
	bins := testenv.Binaries(t)
	root := t.TempDir()
	for _, d := range []string{"usr/lib/systemd", "etc/systemd/system", "etc/pangolin-compose", "opt/haul/bin", "opt/compose/bin", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-r", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copying systemd's units: %v\n%s", err, out)
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	copyExe := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dst), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyExe(filepath.Join(bins, "haul-agent"), "opt/haul/bin/haul-agent")
	copyExe("/bin/systemctl", "usr/bin/systemctl")
	// The compose binary only needs to exist here; TestComposeConfig runs it.
	copyExe("/bin/true", "opt/compose/bin/docker-compose")

	r := evalHost(t, `agentPackage = "/opt/haul"; tools = { docker-compose = "/opt/compose"; };`)
	var names []string
	for name, u := range r.Units {
		names = append(names, name)
		if err := os.WriteFile(filepath.Join(root, "etc/systemd/system", name), []byte(u.Text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"pangolin-compose.service", "pangolin-compose-ready.path", "pangolin-compose-ready.service", "haul-agent-recover.service", "haul-agent-recover.timer"} {
		if !slices.Contains(names, want) {
			t.Errorf("unit %s was not rendered (have %v)", want, names)
		}
	}
	for name, e := range r.Etc {
		if e.Source == nil || !strings.HasPrefix(name, "pangolin-compose/") {
			continue
		}
		copyExe(*e.Source, filepath.Join("etc", name))
	}
	slices.Sort(names)
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root}, names...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify %v: %v\n%s", names, err, out)
	}

	// The stack's unit: no Requires= on docker.service (a Docker restart
	// must not take the stack down), and nothing in it that changes with
	// the settings but X-Reload-Triggers.
	unit := r.Units["pangolin-compose.service"].Text
	if strings.Contains(unit, "Requires=") || !strings.Contains(unit, "Wants=docker.service") {
		t.Errorf("pangolin-compose.service must want, not require, docker.service:\n%s", unit)
	}
	other := evalHost(t, `agentPackage = "/opt/haul"; tools = { docker-compose = "/opt/compose"; };`,
		`{ services.pangolin-compose.settings.app.log_level = "debug"; services.pangolin-compose.traefik.dynamicSettings.http.middlewares.x.compress = { }; }`)
	a, b := withoutTriggers(unit), withoutTriggers(other.Units["pangolin-compose.service"].Text)
	if a != b {
		t.Errorf("a settings change changes more of the unit than X-Reload-Triggers (the switch would restart, not reload):\n%s\n---\n%s", a, b)
	}
	if unit == other.Units["pangolin-compose.service"].Text {
		t.Error("a settings change leaves X-Reload-Triggers alone: the switch would not reload the stack")
	}
	// The ready path starts a oneshot that stays active, not the stack.
	if p := r.Units["pangolin-compose-ready.path"].Text; !strings.Contains(p, "Unit=pangolin-compose-ready.service") {
		t.Errorf("pangolin-compose-ready.path:\n%s", p)
	}
	if s := r.Units["pangolin-compose-ready.service"].Text; !strings.Contains(s, "RemainAfterExit=true") {
		t.Errorf("pangolin-compose-ready.service must stay active so the path unit triggers it once:\n%s", s)
	}
}

func withoutTriggers(unit string) string {
	return regexp.MustCompile(`(?m)^X-Reload-Triggers=.*\n`).ReplaceAllString(unit, "")
}
