package quiesce_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/nixos/nixeval"
)

// The files Pangolin's installer writes (github.com/fosrl/pangolin,
// install/main.go and install/config/): it runs in the project directory
// (/opt/pangolin or /root), renders config/config.yml with server.secret
// inline (32 letters and digits), config/traefik/traefik_config.yml and
// dynamic_config.yml, makes config/{db,letsencrypt,logs} 0755, and moves
// docker-compose.yml (project "pangolin", ./config mounted at /app/config,
// /var/config and under /etc/traefik) up into the project directory.
// Pangolin creates config/db/db.sqlite, Gerbil its WireGuard key at
// config/key (0644, as gerbil writes it), Traefik letsencrypt/acme.json
// (0600). The values here are made up; the shape is the installer's.
const installerCompose = `name: pangolin
services:
  pangolin:
    image: docker.io/fosrl/pangolin:1.0.0
    container_name: pangolin
    restart: unless-stopped
    volumes:
      - ./config:/app/config
  gerbil:
    image: docker.io/fosrl/gerbil:1.0.0
    container_name: gerbil
    restart: unless-stopped
    command:
      - --reachableAt=http://gerbil:3004
      - --generateAndSaveKeyTo=/var/config/key
      - --remoteConfig=http://pangolin:3001/api/v1/
    volumes:
      - ./config/:/var/config
  traefik:
    image: docker.io/traefik:v3.6
    container_name: traefik
    restart: unless-stopped
    network_mode: service:gerbil
    command:
      - --configFile=/etc/traefik/traefik_config.yml
    volumes:
      - ./config/traefik:/etc/traefik:ro
      - ./config/letsencrypt:/letsencrypt
      - ./config/traefik/logs:/var/log/traefik
`

const installerConfig = `# written by the installer
gerbil:
    start_port: 51820
    base_endpoint: "pangolin.old.example"

app:
    dashboard_url: "https://pangolin.old.example"
    log_level: "info"
    telemetry:
        anonymous_usage: true

domains:
    domain1:
        base_domain: "old.example"

server:
    secret: "%s"
    cors:
        origins: ["https://pangolin.old.example"]
        methods: ["GET", "POST", "PUT", "DELETE", "PATCH"]
        allowed_headers: ["X-CSRF-Token", "Content-Type"]
        credentials: false

email:
    smtp_host: "smtp.old.example"
    smtp_port: 587
    smtp_user: "pangolin@old.example"
    smtp_pass: "installer-smtp-password"
    no_reply: "noreply@old.example"

flags:
    require_email_verification: true
    disable_signup_without_invite: true
    disable_user_create_org: false
    allow_raw_resources: true
`

const installerTraefik = `api:
  insecure: true
  dashboard: true
providers:
  http:
    endpoint: "http://pangolin:3001/api/v1/traefik-config"
    pollInterval: "5s"
  file:
    filename: "/etc/traefik/dynamic_config.yml"
certificatesResolvers:
  letsencrypt:
    acme:
      httpChallenge:
        entryPoint: web
      email: "admin@old.example"
      storage: "/letsencrypt/acme.json"
entryPoints:
  web:
    address: ":80"
  websecure:
    address: ":443"
`

// The operator added a middleware by hand after installing: the module
// does not own it, so it must survive the first start on NixOS.
const installerDynamic = `http:
  middlewares:
    redirect-to-https:
      redirectScheme:
        scheme: https
    office-only:
      ipAllowList:
        sourceRange: ["192.0.2.0/24"]
`

// writeInstallerLayout lays out project dir as Pangolin's installer
// leaves it after the stack has run a while; it returns the secret.
func writeInstallerLayout(t *testing.T, project string) string {
	t.Helper()
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	for i := range raw {
		raw[i] = letters[int(raw[i])%len(letters)]
	}
	secret := string(raw)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	files := []struct {
		rel, content string
		mode         os.FileMode
	}{
		{"docker-compose.yml", installerCompose, 0o644},
		{"config/config.yml", fmt.Sprintf(installerConfig, secret), 0o644},
		{"config/traefik/traefik_config.yml", installerTraefik, 0o644},
		{"config/traefik/dynamic_config.yml", installerDynamic, 0o644},
		{"config/letsencrypt/acme.json", `{"letsencrypt":{"Account":{"Email":"admin@old.example"},"Certificates":[{"domain":{"main":"pangolin.old.example"},"certificate":"MIIB","key":"MIIE"}]}}`, 0o600},
		{"config/key", base64.StdEncoding.EncodeToString(key), 0o644}, // gerbil: wgtypes.Key.String(), no newline
	}
	for _, f := range files {
		p := filepath.Join(project, f.rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"config/db", "config/logs", "config/traefik/logs"} {
		if err := os.MkdirAll(filepath.Join(project, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return secret
}

// TestMigrationDrill is the user's first day: Pangolin installed by its
// own installer under an /opt/pangolin-like project directory, its stack
// (stand-in containers for pangolin, gerbil and traefik, labelled as
// Compose labels them) running and writing its database; haul-agent
// configured as docs/migrate.md says (data path config/, the compose
// project quiesced). `haul migrate` moves it onto a second agent whose
// data path is the NixOS module's layout (dataDir, config/ below it),
// mapping the path by itself. Then the module's own start script, rendered
// from nixos/modules by nixeval, runs against the restored dir: the server
// secret is the installer's, the database and Gerbil's key are
// byte-identical to OLD's snapshot (read back with the restic CLI),
// acme.json is 0600, and the settings the module does not own (SMTP, the
// hand-added Traefik middleware) are still there.
func TestMigrationDrill(t *testing.T) {
	t.Parallel()
	d := testenv.SharedDockerd(t)
	root := t.TempDir()
	oldProject := filepath.Join(root, "handbuilt", "opt", "pangolin")
	newDataDir := filepath.Join(root, "nixos", "var", "lib", "pangolin")
	secret := writeInstallerLayout(t, oldProject)
	project := "pangolin-drill"
	s := newStack(t, d, project, oldProject)

	h := newHost(t, filepath.Join(oldProject, "config"), map[string]any{
		"mode": "stop", "compose_project": project, "docker_host": d.Host, "timeout": "20s",
	})
	newCfg := filepath.Join(root, "nixos-agent.json")
	b, _ := json.Marshal(map[string]any{"host": "nixos", "data_paths": []string{newDataDir}, "state_dir": filepath.Join(root, "nixos-state")})
	if err := os.WriteFile(newCfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(h.bins, "haul-agent")
	h.writePullerConfig(h.execCommand(), "", "[[hosts]]", `name = "nixos"`,
		fmt.Sprintf("command = [%q, \"serve\", \"--config\", %q]", agent, newCfg))

	// Step 1 of the runbook: the agent's own check on the old host.
	if out, err := exec.Command(agent, "check-config", "--config", h.AgentCfg).CombinedOutput(); err != nil {
		t.Fatalf("check-config on the hand-built host: %v\n%s", err, out)
	}

	out, errOut, err := h.haulErr("migrate", "--from", "qa", "--to", "nixos", "--json")
	if err != nil {
		t.Fatalf("haul migrate: %v\n%s\n%s", err, out, errOut)
	}
	var m struct {
		Backup struct {
			SnapshotID string `json:"snapshot_id"`
		} `json:"backup"`
		Mapping struct {
			Auto bool `json:"auto"`
			Maps []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"maps"`
		} `json:"mapping"`
		Comparison struct {
			Nodes     int64 `json:"nodes_compared"`
			DiffCount int   `json:"diff_count"`
		} `json:"comparison"`
		Marker string `json:"marker"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("migrate --json: %v\n%s", err, out)
	}
	if !m.Mapping.Auto || len(m.Mapping.Maps) != 1 || m.Mapping.Maps[0].From != oldProject+"/config" || m.Mapping.Maps[0].To != newDataDir+"/config" {
		t.Errorf("mapping: %+v", m.Mapping)
	}
	if m.Comparison.DiffCount != 0 || m.Comparison.Nodes < 10 || m.Marker == "" {
		t.Errorf("verification: %+v, marker %q", m.Comparison, m.Marker)
	}
	s.checkUp("after the migration's backup")

	// What OLD's snapshot holds, read by the reference reader.
	dump := func(rel string) []byte {
		t.Helper()
		out, errOut, err := testenv.ResticErr(t, h.Repo, h.Password, "dump", m.Backup.SnapshotID, filepath.Join(oldProject, "config", rel))
		if err != nil {
			t.Fatalf("restic dump %s: %v\n%s", rel, err, errOut)
		}
		return []byte(out)
	}
	newConfig := filepath.Join(newDataDir, "config")
	wantDB, wantKey, wantAcme := dump("db/db.sqlite"), dump("key"), dump("letsencrypt/acme.json")
	if len(wantDB) == 0 {
		t.Fatal("the snapshot's database is empty: the stand-in pangolin wrote nothing")
	}

	script := nixeval.StartScript(t, newDataDir)
	cmd := exec.Command(script)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		t.Fatalf("the module's start script on the restored dir: %v\n%s%s", err, so.String(), se.String())
	}
	t.Logf("start script said: %s", strings.TrimSpace(se.String()))

	read := func(rel string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(newConfig, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := strings.TrimSpace(string(read("server-secret"))); got != secret {
		t.Errorf("server-secret is %q, the installer's secret is %q", got, secret)
	}
	if fi, err := os.Stat(filepath.Join(newConfig, "server-secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("server-secret: %v %v, want 0600", fi.Mode(), err)
	}
	yq := func(file, expr string) string {
		t.Helper()
		out, err := exec.Command("yq", "-r", expr, filepath.Join(newConfig, file)).Output()
		if err != nil {
			t.Fatalf("yq %s %s: %v", expr, file, err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := yq("config.yml", ".server.secret"); got != secret {
		t.Errorf("config.yml server.secret after the start script: %q, want the installer's %q", got, secret)
	}
	for expr, want := range map[string]string{
		".email.smtp_host": "smtp.old.example", ".email.smtp_pass": "installer-smtp-password", ".email.smtp_port": "587",
		".flags.allow_raw_resources": "true",
	} {
		if got := yq("config.yml", expr); got != want {
			t.Errorf("config.yml %s = %q after the start script, want %q (the installer's, not owned by the module)", expr, got, want)
		}
	}
	if got := yq("traefik/dynamic_config.yml", ".http.middlewares[\"office-only\"].ipAllowList.sourceRange[0]"); got != "192.0.2.0/24" {
		t.Errorf("the hand-added Traefik middleware is gone: %q", got)
	}
	for rel, want := range map[string][]byte{"db/db.sqlite": wantDB, "key": wantKey, "letsencrypt/acme.json": wantAcme} {
		if !bytes.Equal(read(rel), want) {
			t.Errorf("%s differs from OLD's snapshot (%d bytes, want %d)", rel, len(read(rel)), len(want))
		}
	}
	if fi, err := os.Stat(filepath.Join(newConfig, "letsencrypt", "acme.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("acme.json: %v %v, want 0600", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(newConfig, "key")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("gerbil's key: mode %v %v, want 0644 as on OLD", fi.Mode(), err)
	}
	// The database is a database: SQLite opens it and it passes its own
	// integrity check.
	if out, err := exec.Command("sqlite3", filepath.Join(newConfig, "db", "db.sqlite"), "PRAGMA integrity_check;").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("sqlite3 integrity_check on the migrated database: %v %s", err, out)
	}
}
