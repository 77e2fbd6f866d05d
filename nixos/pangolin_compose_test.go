package nixos_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/nixos/nixeval"
)

// installerConfig is config.yml as Pangolin's installer writes it
// (fosrl/pangolin install/config/config.yml, with e-mail enabled): the
// secret inline, SMTP settings the module does not own.
const installerConfig = `# To see all available options, please visit the docs:
gerbil:
    start_port: 51820
    base_endpoint: "pangolin.old.test"
app:
    dashboard_url: "https://pangolin.old.test"
    log_level: "info"
    telemetry:
        anonymous_usage: true
domains:
    domain1:
        base_domain: "old.test"
server:
    secret: "Inst4llerS3cretFromConfigYml"
    cors:
        origins: ["https://pangolin.old.test"]
        credentials: false
email:
    smtp_host: "smtp.old.test"
    smtp_port: 587
    smtp_user: "pangolin"
    smtp_pass: "smtp-password"
    no_reply: "noreply@old.test"
flags:
    require_email_verification: true
    disable_signup_without_invite: true
`

const installerDynamic = `http:
  middlewares:
    crowdsec:
      plugin:
        crowdsec:
          enabled: true
    redirect-to-https:
      redirectScheme:
        scheme: https
`

// yamlJSON reads a YAML file as JSON through yq (the same program the start
// script uses).
func yamlJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	out, err := exec.Command("yq", ".", path).Output()
	if err != nil {
		t.Fatalf("yq . %s: %v", path, err)
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, out)
	}
	return v
}

func dig(v map[string]any, keys ...string) any {
	var cur any = v
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func runScript(t *testing.T, script string) (string, error) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(script)
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// An installer-made config dir: the start script takes the inline secret,
// writes server-secret 0600, keeps SMTP and the extra middleware, applies
// the module's own keys, and keeps using that secret on later starts.
func TestStartScriptTakesInstallerSecret(t *testing.T) {
	data := t.TempDir()
	cfgDir := filepath.Join(data, "config")
	writeFile(t, filepath.Join(cfgDir, "config.yml"), installerConfig, 0o644)
	writeFile(t, filepath.Join(cfgDir, "db", "db.sqlite"), "SQLite format 3\x00", 0o644)
	writeFile(t, filepath.Join(cfgDir, "traefik", "dynamic_config.yml"), installerDynamic, 0o644)
	writeFile(t, filepath.Join(cfgDir, "letsencrypt", "acme.json"), "{}", 0o644)

	script := nixeval.StartScript(t, data)
	stderr, err := runScript(t, script)
	if err != nil {
		t.Fatalf("start script failed on an installer-made dir: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "took server.secret from") {
		t.Errorf("start script did not say it took the installer's secret:\n%s", stderr)
	}
	secretPath := filepath.Join(cfgDir, "server-secret")
	secret, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(secret) != "Inst4llerS3cretFromConfigYml" {
		t.Errorf("server-secret = %q, want the installer's secret", secret)
	}
	if m := mode(t, secretPath); m != 0o600 {
		t.Errorf("server-secret mode %o, want 0600", m)
	}
	cfg := filepath.Join(cfgDir, "config.yml")
	if m := mode(t, cfg); m != 0o600 {
		t.Errorf("config.yml mode %o, want 0600 (it holds the secret)", m)
	}
	if m := mode(t, filepath.Join(cfgDir, "letsencrypt", "acme.json")); m != 0o600 {
		t.Errorf("acme.json mode %o, want 0600", m)
	}
	v := yamlJSON(t, cfg)
	for _, c := range []struct {
		keys []string
		want any
	}{
		{[]string{"server", "secret"}, "Inst4llerS3cretFromConfigYml"},
		// Not owned by the module: kept as the installer wrote them.
		{[]string{"email", "smtp_host"}, "smtp.old.test"},
		{[]string{"email", "smtp_port"}, float64(587)},
		{[]string{"email", "smtp_pass"}, "smtp-password"},
		{[]string{"email", "no_reply"}, "noreply@old.test"},
		// Owned by the module: its values win.
		{[]string{"app", "dashboard_url"}, "https://pangolin.example.test"},
		{[]string{"gerbil", "base_endpoint"}, "pangolin.example.test"},
		{[]string{"domains", "domain1", "base_domain"}, "example.test"},
		{[]string{"app", "telemetry", "anonymous_usage"}, false},
		{[]string{"flags", "require_email_verification"}, false},
	} {
		if got := dig(v, c.keys...); got != c.want {
			t.Errorf("config.yml %s = %v, want %v", strings.Join(c.keys, "."), got, c.want)
		}
	}
	dyn := yamlJSON(t, filepath.Join(cfgDir, "traefik", "dynamic_config.yml"))
	if dig(dyn, "http", "middlewares", "crowdsec", "plugin", "crowdsec", "enabled") != true {
		t.Errorf("the installer's extra middleware was dropped from dynamic_config.yml: %v", dig(dyn, "http", "middlewares"))
	}
	if dig(dyn, "http", "middlewares", "badger", "plugin", "badger", "disableForwardAuth") != true {
		t.Errorf("the module's badger middleware is missing: %v", dig(dyn, "http", "middlewares"))
	}

	// A later start with server-secret in place (config.yml now says the
	// same) keeps the secret, and says nothing about taking it.
	stderr, err = runScript(t, script)
	if err != nil {
		t.Fatalf("second start failed: %v\n%s", err, stderr)
	}
	if again, _ := os.ReadFile(secretPath); string(again) != string(secret) {
		t.Errorf("second start changed the secret to %q", again)
	}
	if strings.Contains(stderr, "took server.secret") || strings.Contains(stderr, "generated") {
		t.Errorf("second start touched the secret:\n%s", stderr)
	}
}

// Data without any secret: the start fails, says what to restore, and
// changes nothing.
func TestStartScriptRefusesNewSecretForExistingData(t *testing.T) {
	data := t.TempDir()
	cfgDir := filepath.Join(data, "config")
	noSecret := strings.Replace(installerConfig, `    secret: "Inst4llerS3cretFromConfigYml"`+"\n", "", 1)
	writeFile(t, filepath.Join(cfgDir, "config.yml"), noSecret, 0o644)
	writeFile(t, filepath.Join(cfgDir, "db", "db.sqlite"), "SQLite format 3\x00", 0o644)

	stderr, err := runScript(t, nixeval.StartScript(t, data))
	if err == nil {
		t.Fatalf("start script generated a secret for an existing database:\n%s", stderr)
	}
	for _, want := range []string{"db.sqlite exists", "Restore config/server-secret", "none is generated"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("refusal does not say %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "server-secret")); err == nil {
		t.Error("server-secret was written although the start was refused")
	}
	if got, _ := os.ReadFile(filepath.Join(cfgDir, "config.yml")); string(got) != noSecret {
		t.Errorf("config.yml changed by a refused start:\n%s", got)
	}
}

// A fresh machine with no data: a new secret, in config.yml too.
func TestStartScriptGeneratesSecretWhenThereIsNoData(t *testing.T) {
	data := t.TempDir()
	stderr, err := runScript(t, nixeval.StartScript(t, data))
	if err != nil {
		t.Fatalf("start script failed on an empty dir: %v\n%s", err, stderr)
	}
	secret, err := os.ReadFile(filepath.Join(data, "config", "server-secret"))
	if err != nil || len(secret) != 64 {
		t.Fatalf("server-secret = %q, %v; want 64 hex digits", secret, err)
	}
	v := yamlJSON(t, filepath.Join(data, "config", "config.yml"))
	if dig(v, "server", "secret") != string(secret) {
		t.Errorf("config.yml server.secret = %v, want the generated secret", dig(v, "server", "secret"))
	}
	for _, f := range []string{"config.yml", "server-secret", "letsencrypt/acme.json"} {
		if m := mode(t, filepath.Join(data, "config", f)); m != 0o600 {
			t.Errorf("%s mode %o, want 0600", f, m)
		}
	}
}

// The placeholder left anywhere in the rendered file fails the start and
// leaves the previous config.yml in place.
func TestStartScriptRefusesLeftoverPlaceholder(t *testing.T) {
	data := t.TempDir()
	writeFile(t, filepath.Join(data, "config", "server-secret"), "s3cret", 0o600)
	writeFile(t, filepath.Join(data, "config", "config.yml"), installerConfig, 0o600)
	script := nixeval.StartScript(t, data, `{ services.pangolin-compose.settings.app.note = "@PANGOLIN_SERVER_SECRET@"; }`)
	stderr, err := runScript(t, script)
	if err == nil || !strings.Contains(stderr, "still holds the secret placeholder") {
		t.Fatalf("start with a leftover placeholder: err %v, stderr:\n%s", err, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(data, "config", "config.yml")); string(got) != installerConfig {
		t.Errorf("config.yml changed by a refused start:\n%s", got)
	}
	left, _ := filepath.Glob(filepath.Join(data, "config", "config.yml.*"))
	if len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}
