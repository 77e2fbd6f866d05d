package nixos_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/nixos/nixeval"
)

// composeBin is Docker Compose v2: $HAUL_DOCKER_COMPOSE (.ci/run builds it
// into bin/ with .ci/build-compose), else bin/docker-compose, else
// docker-compose on PATH if it is v2.
func composeBin(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("HAUL_DOCKER_COMPOSE"), filepath.Join(testenv.ModuleRoot(t), "bin", "docker-compose")}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		out, err := exec.Command(c, "version", "--short").Output()
		if err == nil && strings.HasPrefix(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), "2.") {
			return c
		}
	}
	testenv.Require(t, filepath.Join(testenv.ModuleRoot(t), "bin", "docker-compose"), ".ci/build-compose (Docker Compose v2 from the Go module proxy)")
	return ""
}

// A stack module for tests against a private dockerd: the stand-in image
// for all three services (a plain definition beats the module's mkDefault),
// a quick health check, and no published ports (the private dockerd has no
// networking to publish them on).
func testStack(dataDir, image string) string {
	return nixeval.StackModule(dataDir) + fmt.Sprintf(` {
  services.pangolin-compose.compose.services = {
    pangolin.image = %[1]s;
    pangolin.healthcheck = { test = [ "CMD" "/usr/bin/standin" "health" ]; interval = "1s"; retries = 30; };
    gerbil.image = %[1]s;
    gerbil.ports = [ ];
    traefik.image = %[1]s;
  };
}`, nixeval.NixString(image))
}

// importStandin imports testdata/standin as an image whose entrypoint is
// /usr/bin/standin, with /app a directory: Pangolin's container mounts
// config/ at /app/config (testenv.ImportImage puts its binary at /app).
func importStandin(t *testing.T, d *testenv.Dockerd) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "standin")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, "./testdata/standin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/standin: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"app/", 0o755, nil}, {"etc/", 0o755, nil}, {"tmp/", 0o1777, nil}, {"usr/", 0o755, nil}, {"usr/bin/", 0o755, nil},
		{"usr/bin/standin", 0o755, exe},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/:/usr/bin/standin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\n")},
	} {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(tarball, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	const name = "haul-standin:test"
	d.Docker(t, "import", "--change", `ENTRYPOINT ["/usr/bin/standin"]`, tarball, name)
	return name
}

// generation is what one NixOS generation would install for the stack.
type generation struct {
	Unit    string `json:"unit"`
	Compose string `json:"compose"`
	Prepare string `json:"prepare"`
}

func renderGeneration(t *testing.T, composeDir string, modules ...string) generation {
	t.Helper()
	var g generation
	nixeval.EvalJSON(t, fmt.Sprintf(`let e = eval { host = false; tools = { docker-compose = %s; }; modules = [ %s ]; }; in {
  unit = e.result.units."pangolin-compose.service".text;
  compose = e.result.etc."pangolin-compose/compose.json".source;
  prepare = e.result.etc."pangolin-compose/prepare".source;
}`, nixeval.NixString(composeDir), strings.Join(modules, " ")), &g)
	return g
}

// activate does what NixOS's activation does for these files: /etc is
// emulated by etc (the tests must not write the host's /etc).
func activate(t *testing.T, g generation, etc string) {
	t.Helper()
	for src, name := range map[string]string{g.Compose: "compose.json", g.Prepare: "prepare"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(etc, "pangolin-compose", name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := dst + ".tmp"
		if err := os.WriteFile(tmp, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			t.Fatal(err)
		}
	}
}

// execLines returns the unit's values of key (ExecStartPre, ExecReload, …)
// with /etc/pangolin-compose pointed at the emulated /etc.
func execLines(unit, key, etc string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^`+key+`=(.*)$`).FindAllStringSubmatch(unit, -1) {
		out = append(out, strings.ReplaceAll(m[1], "/etc/pangolin-compose/", filepath.Join(etc, "pangolin-compose")+"/"))
	}
	return out
}

// run runs unit command lines as systemd would (they are plain argv: every
// argument our module writes is shell-safe and unquoted, which the test
// checks), with the private dockerd as DOCKER_HOST.
func runLines(t *testing.T, d *testenv.Dockerd, lines []string) {
	t.Helper()
	for _, l := range lines {
		if strings.ContainsAny(l, `'"\$`) {
			t.Fatalf("unit command line needs systemd's quoting rules, which this test does not implement: %s", l)
		}
		argv := strings.Fields(l)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s\ndockerd log:\n%s", l, err, out.String(), d.LogTail())
		}
	}
}

// containerIDs returns name -> container ID for the compose project.
func containerIDs(t *testing.T, d *testenv.Dockerd) map[string]string {
	t.Helper()
	out := d.Docker(t, "ps", "--all", "--filter", "label=com.docker.compose.project=pangolin", "--format", "{{.Names}} {{.ID}} {{.State}}")
	ids := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		if f[2] != "running" {
			t.Errorf("container %s is %s, not running", f[0], f[2])
		}
		ids[f[0]] = f[1]
	}
	return ids
}

// The rendered compose file is one Compose v2 accepts as it is.
func TestComposeConfig(t *testing.T) {
	compose := composeBin(t)
	var g struct {
		Compose string `json:"compose"`
	}
	data := t.TempDir()
	nixeval.EvalJSON(t, fmt.Sprintf(`let e = eval { modules = [ { services.pangolin-compose.dataDir = %s; services.pangolin-compose.enableIPv6 = true; } ]; }; in { compose = e.result.etc."pangolin-compose/compose.json".source; }`, nixeval.NixString(data)), &g)
	cmd := exec.Command(compose, "--project-name", "pangolin", "--file", g.Compose, "--project-directory", data, "config", "--format", "json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, stderr.String())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		t.Errorf("docker compose config warned:\n%s", s)
	}
	var cfg struct {
		Services map[string]struct {
			Labels      map[string]string `json:"labels"`
			DNS         []string          `json:"dns"`
			NetworkMode string            `json:"network_mode"`
			Volumes     []struct {
				Source string `json:"source"`
				Target string `json:"target"`
			} `json:"volumes"`
		} `json:"services"`
		Networks map[string]struct {
			EnableIPv6 bool `json:"enable_ipv6"`
		} `json:"networks"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 3 {
		t.Errorf("services %v, want pangolin, gerbil, traefik", cfg.Services)
	}
	const label = "org.haulproject.pangolin-compose.config-hash"
	if cfg.Services["pangolin"].Labels[label] == "" || cfg.Services["traefik"].Labels[label] == "" {
		t.Errorf("config hash labels missing: %+v", cfg.Services)
	}
	if _, ok := cfg.Services["gerbil"].Labels[label]; ok {
		t.Error("gerbil carries a config hash, but reads none of the rendered files")
	}
	if got := cfg.Services["gerbil"].DNS; len(got) != 1 || got[0] != "8.8.8.8" {
		t.Errorf("gerbil dns %v, want the installer's [8.8.8.8]", got)
	}
	if cfg.Services["traefik"].NetworkMode != "service:gerbil" {
		t.Errorf("traefik network_mode %q", cfg.Services["traefik"].NetworkMode)
	}
	if !cfg.Networks["default"].EnableIPv6 {
		t.Errorf("enableIPv6 did not reach the compose network: %+v", cfg.Networks)
	}
	if v := cfg.Services["pangolin"].Volumes; len(v) != 1 || v[0].Source != filepath.Join(data, "config") || v[0].Target != "/app/config" {
		t.Errorf("pangolin volumes %+v, want dataDir/config at /app/config", v)
	}
}

// Issue 15 item 2: a switch that changes a settings value recreates exactly
// the containers whose files changed. Each generation's unit differs from
// the last only in X-Reload-Triggers, so switch-to-configuration reloads it
// (nixos/lib/systemd-unit-options.nix, reloadTriggers: "If anything but a
// reload trigger changes in the unit file, the unit will be restarted
// instead"); the test then runs the new generation's ExecReload against a
// real dockerd and compares container IDs.
func TestSwitchRecreatesOnlyChangedContainers(t *testing.T) {
	compose := composeBin(t)
	composeDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(composeDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(compose, filepath.Join(composeDir, "bin", "docker-compose")); err != nil {
		t.Fatal(err)
	}
	d := testenv.StartDockerd(t)
	image := importStandin(t, d)
	data, etc := t.TempDir(), t.TempDir()
	t.Cleanup(func() {
		// The unit's ExecStop: take the project down before dockerd stops.
		cmd := exec.Command(compose, "--project-name", "pangolin", "--file", filepath.Join(etc, "pangolin-compose", "compose.json"), "--project-directory", data, "down", "--timeout", "1")
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		_ = cmd.Run()
	})
	stack := testStack(data, image)

	// Generation 1: first start (ExecStartPre, ExecStart).
	g1 := renderGeneration(t, composeDir, stack)
	activate(t, g1, etc)
	runLines(t, d, execLines(g1.Unit, "ExecStartPre", etc))
	runLines(t, d, execLines(g1.Unit, "ExecStart", etc))
	ids1 := containerIDs(t, d)
	if len(ids1) != 3 {
		t.Fatalf("after the first start: containers %v, want pangolin, gerbil, traefik", ids1)
	}
	cfg1, _ := os.ReadFile(filepath.Join(data, "config", "config.yml"))

	steps := []struct {
		name      string
		module    string
		recreated []string
	}{
		{"Pangolin setting", `{ services.pangolin-compose.settings.app.log_level = "debug"; }`, []string{"pangolin"}},
		{"Traefik dynamic config", `{ services.pangolin-compose.settings.app.log_level = "debug"; services.pangolin-compose.traefik.dynamicSettings.http.middlewares.extra.compress = { }; }`, []string{"traefik"}},
		{"nothing", `{ services.pangolin-compose.settings.app.log_level = "debug"; services.pangolin-compose.traefik.dynamicSettings.http.middlewares.extra.compress = { }; }`, nil},
	}
	prev, prevIDs := g1, ids1
	for _, s := range steps {
		g := renderGeneration(t, composeDir, stack, s.module)
		if withoutTriggers(g.Unit) != withoutTriggers(prev.Unit) {
			t.Fatalf("%s: the unit changed beyond X-Reload-Triggers, so the switch would restart the stack:\n%s\n---\n%s", s.name, prev.Unit, g.Unit)
		}
		if (g.Unit == prev.Unit) != (s.recreated == nil) {
			t.Fatalf("%s: X-Reload-Triggers changed %v, want a change only when something changed", s.name, g.Unit != prev.Unit)
		}
		activate(t, g, etc)
		runLines(t, d, execLines(g.Unit, "ExecReload", etc))
		ids := containerIDs(t, d)
		for name, id := range ids {
			wantNew := false
			for _, r := range s.recreated {
				wantNew = wantNew || r == name
			}
			if changed := id != prevIDs[name]; changed != wantNew {
				t.Errorf("%s: container %s recreated=%v, want %v (ids before %v, after %v)", s.name, name, changed, wantNew, prevIDs, ids)
			}
		}
		prev, prevIDs = g, ids
	}
	cfg2, _ := os.ReadFile(filepath.Join(data, "config", "config.yml"))
	if bytes.Equal(cfg1, cfg2) || !bytes.Contains(cfg2, []byte("log_level: debug")) {
		t.Errorf("config.yml was not re-rendered by the reload:\n%s", cfg2)
	}
}
