package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadRebuild(t *testing.T, extra string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "haul.toml")
	body := `repository = "repo"
password_file = "pw"

[[hosts]]
name = "vps"
address = "203.0.113.10"
identity_file = "keys/backup"
restore_identity_file = "keys/restore"
known_hosts = "known_hosts"
max_age = "30h"
` + extra
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

func TestRebuildDefaults(t *testing.T) {
	c, err := loadRebuild(t, `
[hosts.rebuild]
tofu_dir = "tofu"
dashboard = "pangolin.example.com"
hcloud_token_file = "hcloud-token"
`)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Dir(c.Path)
	r := c.Hosts[0].Rebuild
	want := Rebuild{
		HcloudTokenFile: filepath.Join(base, "hcloud-token"),
		Server:          "vps", PrimaryIPv4: "vps-ipv4", PrimaryIPv6: "vps-ipv6",
		Tofu: "tofu", TofuDir: filepath.Join(base, "tofu"), TofuResource: "hcloud_server.vps",
		MaxSnapshotAge: Duration(30 * time.Hour), Dashboard: "pangolin.example.com", HealthPath: "/",
	}
	if r.HcloudTokenFile != want.HcloudTokenFile || r.Server != want.Server || r.PrimaryIPv4 != want.PrimaryIPv4 ||
		r.PrimaryIPv6 != want.PrimaryIPv6 || r.Tofu != want.Tofu || r.TofuDir != want.TofuDir ||
		r.TofuResource != want.TofuResource || r.MaxSnapshotAge != want.MaxSnapshotAge || r.HealthPath != want.HealthPath {
		t.Fatalf("got %+v\nwant %+v", *r, want)
	}
	if c.HostKeysDir != filepath.Join(base, "hostkeys") {
		t.Fatalf("host_keys_dir default %s", c.HostKeysDir)
	}
	if err := os.WriteFile(r.HcloudTokenFile, []byte("  tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, err := r.HcloudToken(); err != nil || tok != "tok-123" {
		t.Fatalf("token %q, %v", tok, err)
	}
	if err := os.WriteFile(r.HcloudTokenFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.HcloudToken(); err == nil || strings.Contains(err.Error(), "tok-123") {
		t.Fatalf("empty token file: %v", err)
	}
}

func TestRebuildRefusals(t *testing.T) {
	for _, c := range []struct{ extra, want string }{
		{"[hosts.rebuild]\ndashboard = \"d\"\n", "tofu_dir is not set"},
		{"[hosts.rebuild]\ntofu_dir = \"t\"\n", "dashboard is not set"},
		{"[hosts.rebuild]\ntofu_dir = \"t\"\ndashboard = \"d\"\ntofu_args = [\"-replace=hcloud_server.other\"]\n", "haul sets -replace itself"},
		{"[hosts.rebuild]\ntofu_dir = \"t\"\ndashboard = \"d\"\ntofu_resource = \"vps\"\n", "is not a resource address"},
		{"[hosts.rebuild]\ntofu_dir = \"t\"\ndashboard = \"d\"\nhealth_address = \"nohost\"\n", "health_address"},
		{"[hosts.rebuild]\ntofu_dir = \"t\"\ndashboard = \"d\"\nhcloud_token = \"x\"\n", "unknown keys"},
	} {
		_, err := loadRebuild(t, c.extra)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.extra, err, c.want)
		}
	}
}
