package tofu_test

// These tests run the real OpenTofu and the real terraform-provider-hcloud
// (built by .ci/build-tofu) against tofu/fakehcloud, on a copy of this
// directory whose nixos-anywhere module is the stand-in (tofu/tofutest).

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/tofu/fakehcloud"
	"github.com/haulproject/haul/tofu/tofutest"
	"golang.org/x/crypto/ssh"
)

// token is 64 characters, as the provider insists (hcloud/provider.go).
var token = strings.Repeat("0123456789abcdef", 4)

type fixture struct {
	api *fakehcloud.Server
	wd  *tofutest.Workdir
	env []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	tools := tofutest.Find(t)
	f := &fixture{api: fakehcloud.Start(t, token), wd: tofutest.NewWorkdir(t, tools)}
	f.env = []string{"TF_VAR_hcloud_token=" + token, "HCLOUD_ENDPOINT=" + f.api.URL}
	// A haul stand-in for extra-files.sh: it writes the host key file
	// where `haul hostkey export --out .` would.
	haul := filepath.Join(t.TempDir(), "haul")
	writeFile(t, haul, "#!/bin/sh\nset -eu\nmkdir -p etc/ssh\necho \"$*\" > etc/ssh/ssh_host_ed25519_key\n", 0o755)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	f.wd.WriteVars(t, fmt.Sprintf(`homelab_cidrs        = ["203.0.113.7/32", "2001:db8:7::/64"]
admin_ssh_public_key = %q
haul_bin             = %q
haul_config          = "/etc/haul/haul.toml"
haul_host            = "vps"
`, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))), haul))
	f.wd.Init(t)
	return f
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) run(t *testing.T, args ...string) tofutest.Result {
	t.Helper()
	return f.wd.Run(t, f.env, append(args[:1:1], append([]string{"-no-color"}, args[1:]...)...)...)
}

func (f *fixture) must(t *testing.T, args ...string) string {
	t.Helper()
	r := f.run(t, args...)
	if r.Code != 0 {
		t.Fatalf("tofu %s: exit %d\n%s", strings.Join(args, " "), r.Code, r.Out)
	}
	return r.Out
}

// noChanges asserts an empty plan (-detailed-exitcode: 0 none, 2 changes).
func (f *fixture) noChanges(t *testing.T, what string, args ...string) {
	t.Helper()
	r := f.run(t, append([]string{"plan", "-input=false", "-detailed-exitcode"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("%s: tofu plan exit %d, want 0 (no changes)\n%s", what, r.Code, r.Out)
	}
}

func TestTofuFmtInitValidate(t *testing.T) {
	tools := tofutest.Find(t)
	wd := tofutest.NewWorkdir(t, tools)
	// fmt -check on the real files (and the stand-in module).
	if r := wd.Run(t, nil, "fmt", "-check", "-diff", "-recursive", "-no-color", "."); r.Code != 0 {
		t.Fatalf("tofu fmt -check in the copy: exit %d\n%s", r.Code, r.Out)
	}
	src, _ := filepath.Abs(".")
	if r := wd.Run(t, nil, "fmt", "-check", "-diff", "-recursive", "-no-color", src); r.Code != 0 {
		t.Fatalf("tofu fmt -check %s: exit %d (run `tofu fmt -recursive tofu/`)\n%s", src, r.Code, r.Out)
	}
	wd.Init(t)
	out := wd.Must(t, nil, "validate", "-no-color")
	if !strings.Contains(out, "The configuration is valid") {
		t.Fatalf("tofu validate:\n%s", out)
	}
	// init honoured the committed lock file's version for the provider
	// CI built.
	lock, err := os.ReadFile(filepath.Join(wd.Dir, ".terraform.lock.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(lock), `provider "registry.opentofu.org/hetznercloud/hcloud" {
  version     = "`+tofutest.ProviderVersion+`"`) {
		t.Errorf("lock file after init:\n%s", lock)
	}
	v := wd.Must(t, nil, "version")
	if !strings.Contains(v, "OpenTofu v"+tofutest.TofuVersion) {
		t.Errorf("tofu version:\n%s", v)
	}
}

// TestHomelabCIDRs: SSH open to the world, however written, is refused
// at plan time, before the API is asked to change anything.
func TestHomelabCIDRs(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		cidrs, want string
	}{
		{`["0.0.0.0/0"]`, "IPv4 blocks need a prefix of /8 or longer"},
		{`["0::/0"]`, "IPv6 blocks /32 or longer"},
		{`["0.0.0.0/1", "128.0.0.0/1"]`, "IPv4 blocks need a prefix of /8 or longer"},
		{`["203.0.113.7/32", "0.0.0.0/1"]`, "IPv4 blocks need a prefix of /8 or longer"},
		{`["::/1"]`, "IPv6 blocks /32 or longer"},
		{`["2001:db8:7::/64", "8000::/1"]`, "IPv6 blocks /32 or longer"},
		{`["10.0.0.0/7"]`, "IPv4 blocks need a prefix of /8 or longer"},
		{`["2001:db8::/31"]`, "IPv6 blocks /32 or longer"},
		{`["::ffff:0:0/96"]`, "no IPv4-mapped ::ffff: block"},
		{`["203.0.113.7"]`, "must be a CIDR block like 203.0.113.7/32"},
		{`["homelab"]`, "must be a CIDR block"},
		{`[]`, "homelab_cidrs is empty"},
	}
	for _, c := range cases {
		t.Run(c.cidrs, func(t *testing.T) {
			mark := f.api.Mark()
			r := f.run(t, "plan", "-input=false", "-lock=false", "-var", "homelab_cidrs="+c.cidrs)
			if r.Code == 0 {
				t.Fatalf("plan with homelab_cidrs=%s passed:\n%s", c.cidrs, r.Out)
			}
			if !strings.Contains(strings.Join(strings.Fields(r.Out), " "), c.want) {
				t.Errorf("plan output lacks %q:\n%s", c.want, r.Out)
			}
			if m := fakehcloud.Mutating(f.api.Since(mark)); len(m) > 0 {
				t.Errorf("a refused plan changed the API: %v", m)
			}
		})
	}
	t.Run("the homelab", func(t *testing.T) {
		f.must(t, "plan", "-input=false", "-lock=false", "-var", `homelab_cidrs=["203.0.113.0/24", "10.0.0.0/8", "2001:db8:7::/48", "2001:db8::/32"]`)
	})
}

// TestApplyReplaceAndRefusals is the server's life under tofu: the first
// apply, an empty re-plan, a changed image that replaces nothing, a
// replace that keeps both primary IPs, an empty re-plan after it; then
// the refusals: a server type Hetzner cannot create fails the plan before
// any DELETE (the old server stays), an Arm type, and prevent_destroy.
func TestApplyReplaceAndRefusals(t *testing.T) {
	f := newFixture(t)
	// No warnings: a deprecated attribute, type or image would show here.
	if out := f.must(t, "apply", "-input=false", "-auto-approve"); strings.Contains(out, "Warning:") {
		t.Errorf("the first apply warns:\n%s", out)
	}
	first, ok := f.api.ServerByName("vps")
	if !ok {
		t.Fatal("apply made no server vps")
	}
	v4, ok4 := f.api.PrimaryIPByName("vps-ipv4")
	v6, ok6 := f.api.PrimaryIPByName("vps-ipv6")
	if !ok4 || !ok6 {
		t.Fatal("apply made no primary IPs vps-ipv4 / vps-ipv6")
	}
	for _, ip := range []struct {
		name string
		id   int64
	}{{"ipv4", first.PublicNet.IPv4.ID}, {"ipv6", first.PublicNet.IPv6.ID}} {
		if ip.id == 0 {
			t.Errorf("the server has no %s", ip.name)
		}
	}
	if first.PublicNet.IPv4.ID != v4.ID || first.PublicNet.IPv6.ID != v6.ID || v4.AutoDelete || !v4.Protection.Delete || v6.AutoDelete || !v6.Protection.Delete {
		t.Fatalf("server public_net %+v; primary IPs %+v %+v", first.PublicNet, v4, v6)
	}
	if first.ServerType.Name != "cx23" || first.Location.Name != "fsn1" || first.Image == nil || *first.Image.Name != "debian-12" {
		t.Errorf("server is %s in %s from %v", first.ServerType.Name, first.Location.Name, first.Image)
	}
	if len(first.PublicNet.Firewalls) != 1 {
		t.Errorf("firewalls on the server: %+v", first.PublicNet.Firewalls)
	}
	fws := f.api.FirewallList()
	if len(fws) != 1 || len(fws[0].Rules) != 5 {
		t.Fatalf("firewalls %+v", fws)
	}
	ssh := ""
	for _, r := range fws[0].Rules {
		if r.Port != nil && *r.Port == "22" {
			ssh = strings.Join(r.SourceIPs, ",")
		}
	}
	if ssh != "203.0.113.7/32,2001:db8:7::/64" {
		t.Errorf("SSH is open to %q, want the homelab_cidrs", ssh)
	}
	if n := f.wd.Installs(); n != 1 {
		t.Fatalf("the install module ran %d times, want 1", n)
	}
	args, err := os.ReadFile(filepath.Join(f.wd.Standin, "args.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"target_host":"` + v4.IP + `"`, fmt.Sprintf(`"instance_id":"%d"`, first.ID), "#nixosConfigurations.vps.config.system.build.toplevel", `"install_ssh_key_set":false`, `"extra_environment_keys":["HAUL_BIN","HAUL_CONFIG","HAUL_HOST"]`} {
		if !strings.Contains(string(args), want) {
			t.Errorf("the install module's inputs lack %s:\n%s", want, args)
		}
	}
	if b, err := os.ReadFile(filepath.Join(f.wd.Standin, "root.1", "etc", "ssh", "ssh_host_ed25519_key")); err != nil || !strings.Contains(string(b), "hostkey export --host vps --out .") {
		t.Errorf("extra-files.sh did not run `haul hostkey export` in the install root: %q %v", b, err)
	}

	f.noChanges(t, "after the first apply")
	f.noChanges(t, "a new image for the next server", "-var", "image=debian-13")

	mark := f.api.Mark()
	f.must(t, "apply", "-input=false", "-auto-approve", "-replace=hcloud_server.vps")
	second, ok := f.api.ServerByName("vps")
	if !ok || second.ID == first.ID {
		t.Fatalf("the replace left server %+v (was %d)", second.ID, first.ID)
	}
	if second.PublicNet.IPv4.ID != v4.ID || second.PublicNet.IPv6.ID != v6.ID || second.PublicNet.IPv4.IP != v4.IP {
		t.Fatalf("the new server has %+v, not the kept primary IPs %d and %d", second.PublicNet, v4.ID, v6.ID)
	}
	var deletes []string
	for _, r := range f.api.Since(mark) {
		if r.Method == http.MethodDelete {
			deletes = append(deletes, r.Path)
		}
	}
	if strings.Join(deletes, " ") != fmt.Sprintf("/servers/%d", first.ID) {
		t.Errorf("the replace deleted %v, want only the old server", deletes)
	}
	if n := f.wd.Installs(); n != 2 {
		t.Errorf("the install module ran %d times, want 2 (once per server)", n)
	}
	f.noChanges(t, "after the replace")

	// Hetzner stops selling cx23 in fsn1: the replace fails at plan, and
	// nothing reaches the API but reads.
	f.api.SetServerTypeAvailable("cx23", "fsn1", false)
	mark = f.api.Mark()
	r := f.run(t, "apply", "-input=false", "-auto-approve", "-replace=hcloud_server.vps")
	if r.Code == 0 {
		t.Fatalf("a replace with an unavailable server type applied:\n%s", r.Out)
	}
	if out := strings.Join(strings.Fields(r.Out), " "); !strings.Contains(out, "Hetzner cannot create a cx23 in fsn1 now") || !strings.Contains(out, "Nothing was changed") {
		t.Errorf("the plan's error does not say why:\n%s", r.Out)
	}
	if m := fakehcloud.Mutating(f.api.Since(mark)); len(m) > 0 {
		t.Fatalf("the refused replace reached the API with %v", m)
	}
	if still, ok := f.api.ServerByName("vps"); !ok || still.ID != second.ID {
		t.Fatalf("the server is gone after a refused replace")
	}
	f.api.SetServerTypeAvailable("cx23", "fsn1", true)

	// cx22, deprecated and past its unavailable_after date, and an Arm
	// type are refused the same way.
	for _, c := range []struct{ typ, want string }{
		{"cx22", "Hetzner cannot create a cx22 in fsn1 now"},
		{"cax11", "Server type cax11 is arm, but nixosConfigurations.vps is x86_64-linux"},
	} {
		mark = f.api.Mark()
		r := f.run(t, "plan", "-input=false", "-lock=false", "-var", "server_type="+c.typ)
		if r.Code == 0 || !strings.Contains(strings.Join(strings.Fields(r.Out), " "), c.want) {
			t.Errorf("plan with server_type=%s: exit %d, want the error %q:\n%s", c.typ, r.Code, c.want, r.Out)
		}
		if m := fakehcloud.Mutating(f.api.Since(mark)); len(m) > 0 {
			t.Errorf("plan with server_type=%s changed the API: %v", c.typ, m)
		}
	}

	// prevent_destroy on the primary IPs refuses a destroy before it starts.
	mark = f.api.Mark()
	r = f.run(t, "destroy", "-input=false", "-auto-approve")
	if r.Code == 0 || !strings.Contains(r.Out, "prevent_destroy") {
		t.Fatalf("tofu destroy: exit %d, want the prevent_destroy refusal\n%s", r.Code, r.Out)
	}
	if m := fakehcloud.Mutating(f.api.Since(mark)); len(m) > 0 {
		t.Fatalf("the refused destroy reached the API with %v", m)
	}
	if _, ok := f.api.ServerByName("vps"); !ok {
		t.Fatal("the server is gone after a refused destroy")
	}
}
