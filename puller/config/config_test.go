package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, body string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "haul.toml")
	if err := os.WriteFile(p, []byte("repository = \"repo\"\npassword_file = \"pw\"\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

func TestRetentionAndNotify(t *testing.T) {
	c, err := load(t, `
[retention]
keep_daily = 7
keep_weekly = 4
keep_within = "2d"

[notify]
ping_url = "https://hc-ping.com/uuid"
prometheus_textfile = "metrics/haul.prom"

[[hosts]]
name = "vps1"
command = ["haul-agent"]
max_age = "26h"

[[hosts]]
name = "vps2"
command = ["haul-agent"]
[hosts.retention]
keep_last = 3
keep_yearly = -1
[hosts.notify]
ping_url_file = "vps2-ping"
`)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.RetentionFor("vps1"); r.KeepDaily != 7 || r.KeepWithin != "2d" {
		t.Errorf("vps1 gets %+v, want the global policy", r)
	}
	if r := c.RetentionFor("vps2"); *r != (Retention{KeepLast: 3, KeepYearly: -1}) {
		t.Errorf("vps2 gets %+v, want its own (not merged)", r)
	}
	if r := c.RetentionFor("not-configured"); r != c.Retention {
		t.Errorf("unknown hosts get %+v, want the global policy", r)
	}
	if time.Duration(c.Hosts[0].MaxAge) != 26*time.Hour {
		t.Errorf("max_age = %v", c.Hosts[0].MaxAge)
	}
	dir := filepath.Dir(c.Path)
	if c.Notify.PrometheusTextfile != filepath.Join(dir, "metrics/haul.prom") || c.Hosts[1].Notify.PingURLFile != filepath.Join(dir, "vps2-ping") {
		t.Errorf("relative paths not resolved against the config's directory: %q %q", c.Notify.PrometheusTextfile, c.Hosts[1].Notify.PingURLFile)
	}
	if !filepath.IsAbs(c.Repository) {
		t.Errorf("repository %q is not absolute", c.Repository)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"[retention]\nkeep_within = \"2 weeks\"\n", "keep_within"},
		{"[retention]\nkeep_daily = -2\n", "keep_daily = -2"},
		{"[retention]\n", "sets no keep_* value"},
		{"[retention]\nkeep_dialy = 3\n", "unknown keys retention.keep_dialy"},
		{"[notify]\nping_url = \"hc-ping.com/x\"\n", "must start with https://"},
		{"[notify]\nping_url = \"https://a/b\"\nping_url_file = \"f\"\n", "not both"},
		{"[notify]\nprometheus_textfile = \"/var/lib/haul.txt\"\n", "must end in .prom"},
		{"[[hosts]]\nname = \"v\"\ncommand = [\"a\"]\n[hosts.retention]\nkeep_last = 0\n", `host "v": [hosts.retention]`},
	} {
		_, err := load(t, c.body)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one mentioning %q", c.body, err, c.want)
		}
	}
}

func TestPingURLErrorsDoNotEchoTheURL(t *testing.T) {
	_, err := load(t, "[notify]\nping_url = \"ftp://hc-ping.com/secret-token\"\n")
	if err == nil || strings.Contains(err.Error(), "secret-token") {
		t.Fatalf("error %v must not contain the token", err)
	}
}

// TestBackendURLOverride: a restic backend URL given as --repo or
// HAUL_REPOSITORY is refused too, not made into a local path.
func TestBackendURLOverride(t *testing.T) {
	p := filepath.Join(t.TempDir(), "haul.toml")
	if err := os.WriteFile(p, []byte("repository = \"repo\"\npassword_file = \"pw\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadWith(p, Overrides{Repository: "rest:http://user:secret@127.0.0.1:8000/x"})
	if err == nil || !strings.Contains(err.Error(), "haul copy") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %v", err)
	}
	c, err := LoadWith(p, Overrides{Repository: "local:/srv/repo"})
	if err != nil || c.Repository != "/srv/repo" {
		t.Fatalf("local: prefix: %v %v", c, err)
	}
}
