// Package tofu_test checks the OpenTofu configuration without tofu, its
// providers or the network: every .tf file parses and is canonically
// formatted, and the resources a rebuild depends on are there with the
// settings that keep addresses, host key and firewall right.
package tofu_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/haulproject/haul/puller/config"
	"github.com/zclconf/go-cty/cty"
)

// load parses every .tf file in this directory.
func load(t *testing.T) map[string]*hclsyntax.Body {
	t.Helper()
	files, err := filepath.Glob("*.tf")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"main.tf", "nixos-anywhere.tf", "outputs.tf", "variables.tf", "versions.tf"}
	for _, w := range want {
		if !slices.Contains(files, w) {
			t.Fatalf("tofu/%s is missing (have %v)", w, files)
		}
	}
	p := hclparse.NewParser()
	out := map[string]*hclsyntax.Body{}
	for _, f := range files {
		file, diags := p.ParseHCLFile(f)
		if diags.HasErrors() {
			t.Fatalf("%s does not parse: %s", f, diags.Error())
		}
		out[f] = file.Body.(*hclsyntax.Body)
	}
	return out
}

func TestEveryFileParsesAndIsFormatted(t *testing.T) {
	files, _ := filepath.Glob("*.tf")
	if len(files) == 0 {
		t.Fatal("no .tf files")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s: %s", f, diags.Error())
		}
		if formatted := hclwrite.Format(src); !bytes.Equal(formatted, src) {
			t.Errorf("%s is not canonically formatted (run `tofu fmt`); formatted:\n%s", f, formatted)
		}
	}
}

// blocks returns the blocks of a type (and first label, if given) in all files.
func blocks(bodies map[string]*hclsyntax.Body, typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	names := make([]string, 0, len(bodies))
	for n := range bodies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, b := range bodies[n].Blocks {
			if b.Type != typ {
				continue
			}
			if len(labels) > 0 && (len(b.Labels) < len(labels) || !slices.Equal(b.Labels[:len(labels)], labels)) {
				continue
			}
			out = append(out, b)
		}
	}
	return out
}

func one(t *testing.T, bodies map[string]*hclsyntax.Body, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	bs := blocks(bodies, typ, labels...)
	if len(bs) != 1 {
		t.Fatalf("want exactly one %s %v block, found %d", typ, labels, len(bs))
	}
	return bs[0]
}

func attr(t *testing.T, b *hclsyntax.Block, name string) *hclsyntax.Attribute {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %v has no %s", b.Type, b.Labels, name)
	}
	return a
}

// literal evaluates an attribute that must not refer to anything.
func literal(t *testing.T, b *hclsyntax.Block, name string) cty.Value {
	t.Helper()
	v, diags := attr(t, b, name).Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s %v: %s is not a literal: %s", b.Type, b.Labels, name, diags.Error())
	}
	return v
}

// reference returns the traversal an attribute is, as "a.b.c".
func reference(t *testing.T, b *hclsyntax.Block, name string) string {
	t.Helper()
	return traversalString(t, attr(t, b, name).Expr)
}

func traversalString(t *testing.T, e hclsyntax.Expression) string {
	t.Helper()
	st, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok {
		t.Fatalf("expression at %s is %T, want a reference", e.Range(), e)
	}
	parts := []string{st.Traversal.RootName()}
	for _, step := range st.Traversal[1:] {
		if a, ok := step.(hcl.TraverseAttr); ok {
			parts = append(parts, a.Name)
		}
	}
	return strings.Join(parts, ".")
}

func TestProviderPinned(t *testing.T) {
	bodies := load(t)
	var tf *hclsyntax.Block
	for _, b := range blocks(bodies, "terraform") {
		if _, ok := b.Body.Attributes["required_version"]; ok {
			tf = b
		}
	}
	if tf == nil {
		t.Fatal("no terraform {} block with required_version")
	}
	if rv := literal(t, tf, "required_version").AsString(); rv != ">= 1.10.0" {
		t.Errorf("required_version %q: terraform-provider-hcloud v1.68.0 is tested with OpenTofu 1.10 and later", rv)
	}
	rp := blocks(map[string]*hclsyntax.Body{"": tf.Body}, "required_providers")
	if len(rp) != 1 {
		t.Fatal("terraform {} has no required_providers")
	}
	hc := literal(t, rp[0], "hcloud")
	if src := hc.GetAttr("source").AsString(); src != "hetznercloud/hcloud" {
		t.Errorf("hcloud source %q", src)
	}
	version := hc.GetAttr("version").AsString()
	if !regexp.MustCompile(`^(~> ?|= ?)?1\.\d+(\.\d+)?$`).MatchString(version) {
		t.Errorf("hcloud provider version %q is not pinned to a 1.x series (e.g. \"~> 1.68\")", version)
	}
	// Every provider the configuration uses, nixos-anywhere's module's
	// included, has a version constraint.
	constrained := map[string]bool{}
	for _, tfb := range blocks(bodies, "terraform") {
		for _, rpb := range blocks(map[string]*hclsyntax.Body{"": tfb.Body}, "required_providers") {
			for name := range rpb.Body.Attributes {
				p := literal(t, rpb, name)
				if !p.Type().IsObjectType() || !p.Type().HasAttribute("version") || p.GetAttr("version").AsString() == "" {
					t.Errorf("provider %s has no version constraint", name)
				}
				constrained[name] = true
			}
		}
	}
	for _, name := range []string{"hcloud", "null", "external"} {
		if !constrained[name] {
			t.Errorf("provider %s (used by this configuration or nixos-anywhere's module) has no required_providers entry", name)
		}
	}
	one(t, bodies, "provider", "hcloud")
	if got := reference(t, one(t, bodies, "provider", "hcloud"), "token"); got != "var.hcloud_token" {
		t.Errorf("provider token = %s", got)
	}
}

func TestVariablesTypedDescribedAndUsed(t *testing.T) {
	bodies := load(t)
	declared := map[string]bool{}
	for _, v := range blocks(bodies, "variable") {
		name := v.Labels[0]
		declared[name] = true
		if _, ok := v.Body.Attributes["type"]; !ok {
			t.Errorf("variable %s has no type", name)
		}
		if d := literal(t, v, "description"); d.Type() != cty.String || len(strings.TrimSpace(d.AsString())) < 10 {
			t.Errorf("variable %s has no real description", name)
		}
	}
	tok := one(t, bodies, "variable", "hcloud_token")
	if s := literal(t, tok, "sensitive"); !s.True() {
		t.Error("variable hcloud_token is not sensitive")
	}
	if _, ok := tok.Body.Attributes["default"]; ok {
		t.Error("variable hcloud_token has a default: the token must come from TF_VAR_hcloud_token")
	}
	// Every var.X used is declared, every declared one used.
	used := map[string]bool{}
	for name, body := range bodies {
		hclsyntax.VisitAll(body, func(n hclsyntax.Node) hcl.Diagnostics {
			if e, ok := n.(hclsyntax.Expression); ok {
				for _, tr := range e.Variables() {
					if tr.RootName() == "var" && len(tr) > 1 {
						if a, ok := tr[1].(hcl.TraverseAttr); ok {
							used[a.Name] = true
							if !declared[a.Name] {
								t.Errorf("%s uses var.%s, which is not declared", name, a.Name)
							}
						}
					}
				}
			}
			return nil
		})
	}
	for v := range declared {
		if !used[v] {
			t.Errorf("variable %s is declared but never used", v)
		}
	}
}

func TestPrimaryIPsOutliveTheServer(t *testing.T) {
	bodies := load(t)
	types := map[string]bool{}
	for _, b := range blocks(bodies, "resource", "hcloud_primary_ip") {
		typ := literal(t, b, "type").AsString()
		types[typ] = true
		if literal(t, b, "auto_delete").True() {
			t.Errorf("primary IP %s: auto_delete must be false (deleting the server would delete the address)", b.Labels[1])
		}
		if !literal(t, b, "delete_protection").True() {
			t.Errorf("primary IP %s: delete_protection must be true", b.Labels[1])
		}
		if _, ok := b.Body.Attributes["datacenter"]; ok {
			t.Errorf("primary IP %s uses datacenter, which Hetzner retired; use location", b.Labels[1])
		}
	}
	if !types["ipv4"] || !types["ipv6"] {
		t.Fatalf("want an ipv4 and an ipv6 hcloud_primary_ip, have %v", types)
	}
}

func TestFirewall(t *testing.T) {
	bodies := load(t)
	fw := one(t, bodies, "resource", "hcloud_firewall")
	type rule struct{ proto, port string }
	open := map[rule]string{}
	for _, r := range fw.Body.Blocks {
		if r.Type != "rule" {
			continue
		}
		if d := literal(t, r, "direction").AsString(); d != "in" {
			t.Errorf("firewall rule with direction %q", d)
			continue
		}
		k := rule{literal(t, r, "protocol").AsString(), literal(t, r, "port").AsString()}
		expr := attr(t, r, "source_ips").Expr
		if _, ok := expr.(*hclsyntax.ScopeTraversalExpr); ok {
			open[k] = traversalString(t, expr)
		} else {
			v, diags := expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("rule %v: source_ips: %s", k, diags.Error())
			}
			var ips []string
			for _, ip := range v.AsValueSlice() {
				ips = append(ips, ip.AsString())
			}
			open[k] = strings.Join(ips, ",")
		}
	}
	want := map[rule]string{
		{"tcp", "22"}:    "var.homelab_cidrs",
		{"tcp", "80"}:    "0.0.0.0/0,::/0",
		{"tcp", "443"}:   "0.0.0.0/0,::/0",
		{"udp", "51820"}: "0.0.0.0/0,::/0",
		{"udp", "21820"}: "0.0.0.0/0,::/0",
	}
	for k, w := range want {
		if open[k] != w {
			t.Errorf("firewall %s/%s: source_ips %q, want %q", k.port, k.proto, open[k], w)
		}
	}
	for k := range open {
		if _, ok := want[k]; !ok {
			t.Errorf("firewall opens %s/%s, which nothing needs", k.port, k.proto)
		}
	}
	v := one(t, bodies, "variable", "homelab_cidrs")
	if len(blocks(map[string]*hclsyntax.Body{"": v.Body}, "validation")) == 0 {
		t.Error("variable homelab_cidrs has no validation refusing 0.0.0.0/0")
	}
}

func TestServer(t *testing.T) {
	bodies := load(t)
	// haul's default tofu_resource must name this server.
	typ, name, _ := strings.Cut(config.DefaultTofuResource, ".")
	srv := one(t, bodies, "resource", typ, name)
	one(t, bodies, "resource", "hcloud_ssh_key")
	if got := traversalString(t, attr(t, srv, "ssh_keys").Expr.(*hclsyntax.TupleConsExpr).Exprs[0]); !strings.HasPrefix(got, "hcloud_ssh_key.") {
		t.Errorf("ssh_keys refers to %s", got)
	}
	if got := traversalString(t, attr(t, srv, "firewall_ids").Expr.(*hclsyntax.TupleConsExpr).Exprs[0]); !strings.HasPrefix(got, "hcloud_firewall.") {
		t.Errorf("firewall_ids refers to %s", got)
	}
	v4 := ipResource(t, bodies, "ipv4")
	v6 := ipResource(t, bodies, "ipv6")
	pn := blocks(map[string]*hclsyntax.Body{"": srv.Body}, "public_net")
	if len(pn) != 1 {
		t.Fatal("hcloud_server has no public_net block")
	}
	if got := reference(t, pn[0], "ipv4"); got != "hcloud_primary_ip."+v4+".id" {
		t.Errorf("public_net.ipv4 = %s", got)
	}
	if got := reference(t, pn[0], "ipv6"); got != "hcloud_primary_ip."+v6+".id" {
		t.Errorf("public_net.ipv6 = %s", got)
	}
	lc := blocks(map[string]*hclsyntax.Body{"": srv.Body}, "lifecycle")
	if len(lc) != 1 {
		t.Fatal("hcloud_server has no lifecycle block")
	}
	ic, ok := attr(t, lc[0], "ignore_changes").Expr.(*hclsyntax.TupleConsExpr)
	var ignored []string
	for _, e := range ic.Exprs {
		ignored = append(ignored, traversalString(t, e))
	}
	if !ok || !slices.Equal(ignored, []string{"ssh_keys", "image"}) {
		t.Errorf("lifecycle.ignore_changes is %v, must be [ssh_keys, image]: neither may replace a running server", ignored)
	}
	// The server's name is the one haul's preflight looks up by default,
	// and the primary IPs are <server_name>-ipv4/-ipv6.
	if got := reference(t, srv, "name"); got != "var.server_name" {
		t.Errorf("server name = %s", got)
	}
	for _, b := range blocks(bodies, "resource", "hcloud_primary_ip") {
		tmpl, ok := attr(t, b, "name").Expr.(*hclsyntax.TemplateExpr)
		if !ok || len(tmpl.Parts) != 2 {
			t.Fatalf("primary IP %s: name is not \"${var.server_name}-<type>\"", b.Labels[1])
		}
		suffix, _ := tmpl.Parts[1].Value(nil)
		if traversalString(t, tmpl.Parts[0]) != "var.server_name" || suffix.AsString() != "-"+literal(t, b, "type").AsString() {
			t.Errorf("primary IP %s is not named <server_name>-%s, haul's default", b.Labels[1], literal(t, b, "type").AsString())
		}
	}
}

func ipResource(t *testing.T, bodies map[string]*hclsyntax.Body, typ string) string {
	t.Helper()
	for _, b := range blocks(bodies, "resource", "hcloud_primary_ip") {
		if literal(t, b, "type").AsString() == typ {
			return b.Labels[1]
		}
	}
	t.Fatalf("no %s primary IP", typ)
	return ""
}

func TestNixosAnywhereInstallsWithKeptHostKey(t *testing.T) {
	bodies := load(t)
	var mod *hclsyntax.Block
	for _, m := range blocks(bodies, "module") {
		if strings.HasPrefix(literal(t, m, "source").AsString(), "github.com/nix-community/nixos-anywhere//terraform/all-in-one") {
			mod = m
		}
	}
	if mod == nil {
		t.Fatal("no module with source github.com/nix-community/nixos-anywhere//terraform/all-in-one")
	}
	// Pinned to a release tag, not the default branch.
	if src := literal(t, mod, "source").AsString(); !regexp.MustCompile(`\?ref=\d+\.\d+\.\d+$`).MatchString(src) {
		t.Errorf("module source %q is not pinned to a release tag (?ref=X.Y.Z)", src)
	}
	typ, name, _ := strings.Cut(config.DefaultTofuResource, ".")
	if got := reference(t, mod, "instance_id"); got != typ+"."+name+".id" {
		t.Errorf("instance_id = %s, want the server's id", got)
	}
	if got := reference(t, mod, "target_host"); got != typ+"."+name+".ipv4_address" {
		t.Errorf("target_host = %s", got)
	}
	for _, a := range []string{"nixos_system_attr", "nixos_partitioner_attr"} {
		tmpl, ok := attr(t, mod, a).Expr.(*hclsyntax.TemplateExpr)
		if !ok || len(tmpl.Parts) != 2 {
			t.Fatalf("%s is not \"${local.flake}#nixosConfigurations.vps…\"", a)
		}
		rest, _ := tmpl.Parts[1].Value(nil)
		if !strings.HasPrefix(rest.AsString(), "#nixosConfigurations.vps.") {
			t.Errorf("%s installs %q, not nixosConfigurations.vps", a, rest.AsString())
		}
	}
	// The extra-files script exists, is executable and exports the kept key.
	tmpl := attr(t, mod, "extra_files_script").Expr.(*hclsyntax.TemplateExpr)
	last, _ := tmpl.Parts[len(tmpl.Parts)-1].Value(nil)
	script := strings.TrimPrefix(last.AsString(), "/")
	fi, err := os.Stat(script)
	if err != nil {
		t.Fatalf("extra_files_script: %v", err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable", script)
	}
	body, _ := os.ReadFile(script)
	if !strings.Contains(string(body), "hostkey export") || !strings.Contains(string(body), "--out .") {
		t.Errorf("%s does not run `haul hostkey export --out .`", script)
	}
	env, ok := attr(t, mod, "extra_environment").Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatal("extra_environment is not an object")
	}
	keys := map[string]string{}
	for _, it := range env.Items {
		k, _ := it.KeyExpr.Value(nil)
		keys[k.AsString()] = traversalString(t, it.ValueExpr)
	}
	for k, v := range map[string]string{"HAUL_BIN": "var.haul_bin", "HAUL_CONFIG": "var.haul_config", "HAUL_HOST": "var.haul_host"} {
		if keys[k] != v {
			t.Errorf("extra_environment.%s = %q, want %s (haul rebuild sets TF_VAR_%s)", k, keys[k], v, strings.ToLower(k))
		}
	}
}

func TestReadmeListsInputsAndOutputs(t *testing.T) {
	bodies := load(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"variable", "output"} {
		for _, b := range blocks(bodies, kind) {
			if !strings.Contains(string(readme), "`"+b.Labels[0]+"`") {
				t.Errorf("README.md does not list %s `%s`", kind, b.Labels[0])
			}
		}
	}
	for _, o := range blocks(bodies, "output") {
		if d := literal(t, o, "description"); d.AsString() == "" {
			t.Errorf("output %s has no description", o.Labels[0])
		}
	}
}
