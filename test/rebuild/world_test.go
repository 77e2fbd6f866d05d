// Package rebuild_test drives `haul rebuild` end to end on loopback. Only
// what cannot run here is a stand-in: Hetzner's API (tofu/fakehcloud, a
// stateful fake that the real terraform-provider-hcloud and haul's
// hcloud-go both talk to) and nixos-anywhere's module (tofu/tofutest's
// stand-in with the same inputs, which runs the real tofu/extra-files.sh
// and asks the test for the "new VPS"). Everything else is real: OpenTofu
// and the provider on a copy of tofu/, sshd with the agent as forced
// command, the kept host key, the pin, the backup, the restore, the
// restic CLI.
package rebuild_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/tofu/fakehcloud"
	"github.com/haulproject/haul/tofu/tofutest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

const (
	hostName  = "vps"
	dashboard = "example.com" // the name in httptest's TLS certificate
)

// world is one homelab (NAS config, repository, kept host key, pin), one
// "primary IPv4" (a loopback port that forwards to whichever server holds
// it), the old VPS behind it, made by a first `tofu apply` against the
// fake Hetzner API, and a TLS server standing in for the new VPS's
// dashboard.
type world struct {
	t       *testing.T
	bins    string
	root    string
	token   string
	cfgPath string
	repo    string
	pwFile  string
	cache   string
	known   string
	keys    string
	hostKey testenv.KeyPair // the kept key, as the NAS holds it

	backupKey, restoreKey testenv.KeyPair
	// installKey is tofu's admin_ssh_public_key and haul's
	// install_identity_file.
	installKey testenv.KeyPair

	primary *proxy
	data    string // the data path: the same on the old and the new VPS
	old     *server
	new     *server
	// gone is the old VPS's data, moved away when tofu "destroyed" it:
	// what the final backup saw.
	gone string

	api    *fakehcloud.Server
	tools  tofutest.Tools
	wd     *tofutest.Workdir // the copy of tofu/ haul runs tofu in
	oldID  int64             // the server the first apply made
	health *httptest.Server
	// healthDown makes the dashboard answer 503.
	healthDown atomic.Bool
	sni        atomic.Value // string: the SNI of the last health request
	hostHeader atomic.Value

	// extraEnv is added to haul's environment.
	extraEnv []string
	// inject makes the next bring-up of a new VPS misbehave.
	inject struct {
		noSSH       bool // sshd never comes up
		readyMarker bool // the fresh host is already marked ready
	}
	// pendingKey is the exported host key of a new VPS whose sshd did not
	// come up (inject.noSSH); startNew starts it later.
	pendingKey *testenv.KeyPair
	// newMarker is the new VPS's ready marker, for the dashboard handler.
	newMarker atomic.Value
	settings  map[string]string // [hosts.rebuild] overrides
}

// server is a VPS: sshd with the agent as the forced command of the backup
// key and of the restore key (with --allow-restore).
type server struct {
	sshd     *testenv.SSHD
	state    string
	agentCfg string
}

func (s *server) marker() string { return filepath.Join(s.state, "ready") }

func newWorld(t *testing.T) *world {
	t.Helper()
	testenv.Require(t, "jq", "apt-get install jq") // haul's preflight checks for it (nixos-anywhere needs it)
	testenv.Require(t, "nix", "apt-get install nix-bin")
	w := &world{t: t, bins: testenv.Binaries(t), root: t.TempDir(), settings: map[string]string{}}
	w.tools = tofutest.Find(t)
	// 64 characters, as terraform-provider-hcloud requires.
	w.token = randomHex(t, 32)
	nas := filepath.Join(w.root, "nas")
	must(t, os.MkdirAll(nas, 0o700))
	w.repo = filepath.Join(nas, "repo")
	w.pwFile = filepath.Join(nas, "password")
	writeFile(t, w.pwFile, "correct horse battery staple\n", 0o600)
	writeFile(t, filepath.Join(nas, "hcloud-token"), w.token+"\n", 0o600)
	w.cache = filepath.Join(nas, "cache")
	w.known = filepath.Join(nas, "known_hosts")
	w.keys = filepath.Join(nas, "keys")
	w.backupKey = testenv.NewKeyPair(t, w.keys, "backup")
	w.restoreKey = testenv.NewKeyPair(t, w.keys, "restore")
	w.installKey = testenv.NewKeyPair(t, w.keys, "install")

	w.primary = startProxy(t)
	// The primary IPv4 is the proxy's address.
	w.api = fakehcloud.Start(t, w.token, fakehcloud.WithIPv4Pool("127.0.0.1"))
	w.startHealth()

	w.data = filepath.Join(w.root, "srv", "pangolin")
	makeData(t, w.data)
	w.cfgPath = filepath.Join(nas, "haul.toml")
	w.wd = tofutest.NewWorkdir(t, w.tools)
	w.wd.WriteVars(t, fmt.Sprintf(`homelab_cidrs        = ["127.0.0.1/32"]
admin_ssh_public_key = %q
haul_bin             = %q
haul_config          = %q
haul_host            = %q
`, w.installKey.AuthorizedLine, filepath.Join(w.bins, "haul"), w.cfgPath, hostName))
	w.wd.Init(t)
	w.writeConfig()

	// The homelab side, once: a kept host key, pinned for the primary IP.
	w.haul("init")
	out := w.haul("hostkey", "generate", "--host", hostName)
	if !strings.Contains(out, "SHA256:") {
		t.Fatalf("hostkey generate printed %q", out)
	}
	w.haul("hostkey", "pin", "--host", hostName)
	priv := filepath.Join(nas, "hostkeys", hostName, "ssh_host_ed25519_key")
	w.hostKey = keyPairFrom(t, priv)

	// The first install, as docs/rebuild.md has it: a plain tofu apply.
	// The VPS it brings up has the kept key and holds the data; its stack
	// runs (it is ready).
	w.tofuApply()
	srv, ok := w.api.ServerByName(hostName)
	if !ok {
		t.Fatal("the first tofu apply made no server")
	}
	w.oldID = srv.ID
	w.old, w.new = w.new, nil
	if got := w.old.sshd.HostKey.AuthorizedLine; got != w.hostKey.AuthorizedLine {
		t.Fatalf("the first install has host key %s, not the kept one", got)
	}
	if out, err := exec.Command(filepath.Join(w.bins, "haul-agent"), "mark-ready", "--config", w.old.agentCfg).CombinedOutput(); err != nil {
		t.Fatalf("haul-agent mark-ready: %v\n%s", err, out)
	}
	return w
}

// tofuEnv is what an operator's shell has for a manual tofu run.
func (w *world) tofuEnv() []string {
	return []string{"TF_VAR_hcloud_token=" + w.token, "HCLOUD_ENDPOINT=" + w.api.URL, "STANDIN_WAIT=1"}
}

// tofuApply runs a plain `tofu apply` in the workdir, serving the
// stand-in install while it runs.
func (w *world) tofuApply(args ...string) {
	w.t.Helper()
	done := make(chan tofutest.Result, 1)
	go func() {
		done <- w.wd.Run(w.t, w.tofuEnv(), append([]string{"apply", "-input=false", "-auto-approve", "-no-color"}, args...)...)
	}()
	for {
		select {
		case r := <-done:
			if r.Code != 0 {
				w.t.Fatalf("tofu apply: exit %d\n%s", r.Code, r.Out)
			}
			return
		case <-time.After(20 * time.Millisecond):
			w.serveStandin()
		}
	}
}

// tofuPlan runs `tofu plan -detailed-exitcode` (0: no changes, 2: changes).
func (w *world) tofuPlan(args ...string) tofutest.Result {
	w.t.Helper()
	return w.wd.Run(w.t, w.tofuEnv(), append([]string{"plan", "-input=false", "-no-color", "-detailed-exitcode"}, args...)...)
}

func (w *world) writeConfig() {
	w.t.Helper()
	rebuild := map[string]string{
		"hcloud_token_file":     filepath.Join(w.root, "nas", "hcloud-token"),
		"hcloud_endpoint":       w.api.URL,
		"tofu":                  w.tools.Tofu,
		"tofu_dir":              w.wd.Dir,
		"install_identity_file": w.installKey.PrivatePath,
		"ssh_timeout":           "20s",
		"ready_timeout":         "5s",
		"dashboard":             dashboard,
		"health_address":        w.health.Listener.Addr().String(),
		"health_ca_file":        filepath.Join(w.root, "nas", "dashboard-ca.pem"),
		"health_timeout":        "5s",
	}
	for k, v := range w.settings {
		rebuild[k] = v
	}
	var rb strings.Builder
	for _, k := range sortedKeys(rebuild) {
		fmt.Fprintf(&rb, "%s = %q\n", k, rebuild[k])
	}
	writeFile(w.t, w.cfgPath, fmt.Sprintf(`repository = %q
password_file = %q
cache_dir = %q

[[hosts]]
name = %q
address = %q
user = "root"
identity_file = %q
restore_identity_file = %q
known_hosts = %q
connect_timeout = "5s"

[hosts.rebuild]
%s`, w.repo, w.pwFile, w.cache, hostName, w.primary.addr, w.backupKey.PrivatePath, w.restoreKey.PrivatePath, w.known, rb.String()), 0o600)
}

// set changes [hosts.rebuild] settings.
func (w *world) set(kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		w.settings[kv[i]] = kv[i+1]
	}
	w.writeConfig()
}

// startServer starts a VPS with hostKey on the data path. A fresh server
// has its own (empty) state dir, so it is not ready.
func (w *world) startServer(hostKey *testenv.KeyPair) *server {
	w.t.Helper()
	s := &server{state: filepath.Join(w.t.TempDir(), "state")}
	s.agentCfg = filepath.Join(w.t.TempDir(), "agent.json")
	cfg, _ := json.Marshal(map[string]any{"host": hostName, "data_paths": []string{w.data}, "state_dir": s.state})
	writeFile(w.t, s.agentCfg, string(cfg), 0o600)
	agent := filepath.Join(w.bins, "haul-agent")
	s.sshd = testenv.StartSSHD(w.t, testenv.SSHDOptions{
		HostKey: hostKey,
		Keys:    testenv.AgentKeys(agent, s.agentCfg, w.backupKey, w.restoreKey, nil),
	})
	return s
}

// bringUp is what tofu and nixos-anywhere do, done for real where it can
// be: the old server goes (its sshd stops, its data is moved aside), and a
// new one comes up with the host key the real extra-files script exported
// into root (etc/ssh/…), an empty data dir and a fresh agent state.
func (w *world) bringUp(root string) {
	w.t.Helper()
	if w.old != nil {
		w.old.sshd.Stop()
		w.old = nil
		w.gone = filepath.Join(w.root, "old-vps-data")
		must(w.t, os.Rename(w.data, w.gone))
		must(w.t, os.MkdirAll(w.data, 0o755))
	}
	w.primary.set("")
	exported := keyPairFrom(w.t, filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key"))
	if w.inject.noSSH {
		w.inject.noSSH = false
		w.pendingKey = &exported
		return
	}
	w.startNew(&exported)
}

func (w *world) startNew(key *testenv.KeyPair) {
	w.t.Helper()
	w.new = w.startServer(key)
	w.newMarker.Store(w.new.marker())
	if w.inject.readyMarker {
		w.inject.readyMarker = false
		must(w.t, os.MkdirAll(w.new.state, 0o700))
		writeFile(w.t, w.new.marker(), `{"by":"mark-ready"}`, 0o644)
	}
	w.primary.set(w.new.sshd.Addr)
}

// run is one `haul` command; rebuild runs react to the stand-in tofu's
// request for a new VPS while they run.
type run struct {
	stdout, stderr string
	code           int
}

func (w *world) haulRun(args ...string) run {
	w.t.Helper()
	cmd := exec.Command(filepath.Join(w.bins, "haul"), append([]string{"--config", w.cfgPath}, args...)...)
	cmd.Env = w.env()
	cmd.Stdin = nil // not a terminal
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	must(w.t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(5 * time.Minute)
	for {
		select {
		case err := <-done:
			r := run{stdout: o.String(), stderr: e.String()}
			if ee, ok := err.(*exec.ExitError); ok {
				r.code = ee.ExitCode()
			} else if err != nil {
				w.t.Fatal(err)
			}
			return r
		case <-deadline:
			_ = cmd.Process.Kill()
			w.t.Fatalf("haul %s did not finish within 5m\nstderr:\n%s", strings.Join(args, " "), e.String())
		case <-time.After(20 * time.Millisecond):
			w.serveStandin()
		}
	}
}

// haul runs a command that must succeed.
func (w *world) haul(args ...string) string {
	w.t.Helper()
	r := w.haulRun(args...)
	if r.code != 0 {
		w.t.Fatalf("haul %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// env is haul's environment: no token or endpoint of its own (haul gives
// tofu those), the CLI config with the provider mirror, nix with flakes
// (preflight checks it; the stand-in module does not run nix), the
// stand-in's directory.
func (w *world) env() []string {
	var env []string
	for _, kv := range w.tools.Env() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "NIX_CONFIG" || k == "SSH_AUTH_SOCK" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "STANDIN_DIR="+w.wd.Standin, "STANDIN_WAIT=1", "NIX_CONFIG=experimental-features = nix-command flakes")
	return append(env, w.extraEnv...)
}

// serveStandin brings up the new VPS when the stand-in install asks.
func (w *world) serveStandin() {
	n := w.wd.Installs()
	if n == 0 {
		return
	}
	up := filepath.Join(w.wd.Standin, fmt.Sprintf("up.%d", n))
	ready := filepath.Join(w.wd.Standin, fmt.Sprintf("ready.%d", n))
	if !exists(up) || exists(ready) {
		return
	}
	w.bringUp(filepath.Join(w.wd.Standin, fmt.Sprintf("root.%d", n)))
	writeFile(w.t, ready, "", 0o644)
}

func (w *world) standinFile(name string, n int) string {
	b, err := os.ReadFile(filepath.Join(w.wd.Standin, fmt.Sprintf("%s.%d", name, n)))
	must(w.t, err)
	return string(b)
}

// deletes lists the DELETE requests the API saw since mark.
func (w *world) deletes(mark int) []string {
	var out []string
	for _, r := range w.api.Since(mark) {
		if r.Method == http.MethodDelete {
			out = append(out, r.Path)
		}
	}
	return out
}

// startHealth serves the "dashboard": 200 once the new VPS's ready marker
// exists (its stack started), 503 before that or when healthDown is set.
func (w *world) startHealth() {
	h := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.hostHeader.Store(r.Host)
		marker, _ := w.newMarker.Load().(string)
		if w.healthDown.Load() || marker == "" || !exists(marker) {
			http.Error(rw, "no available server", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "Pangolin")
	}))
	h.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		w.sni.Store(hello.ServerName)
		return nil, nil
	}}
	// The health check's plain TCP probe closes without a handshake.
	h.Config.ErrorLog = log.New(io.Discard, "", 0)
	h.StartTLS()
	w.t.Cleanup(h.Close)
	w.health = h
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Certificate().Raw})
	writeFile(w.t, filepath.Join(w.root, "nas", "dashboard-ca.pem"), string(ca), 0o644)
}

// compareWithGone checks the new VPS's data is the old VPS's data.
func (w *world) compareWithGone() {
	w.t.Helper()
	sameTree(w.t, w.gone, w.data)
}

func sameTree(t *testing.T, a, b string) {
	t.Helper()
	diffs, err := treecmp.Compare(a, b, treecmp.Options{Owner: os.Geteuid() == 0, DirMtime: true, Hardlinks: true})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("%s and %s differ:\n%s", a, b, strings.Join(diffs, "\n"))
	}
}

// proxy is the primary IPv4: a fixed loopback address forwarding to
// whichever server holds it (none: connections are closed at once).
type proxy struct {
	addr   string
	mu     sync.Mutex
	target string
}

func startProxy(t *testing.T) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &proxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) set(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *proxy) serve(c net.Conn) {
	defer c.Close()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target == "" {
		return
	}
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(s, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, s); done <- struct{}{} }()
	<-done
}

// makeData writes a small Pangolin-like data dir: a database, keys and
// acme.json (0600), config, a symlink, an empty dir; set mtimes.
func makeData(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "config", "config.yml"), "app:\n  dashboard_url: https://example.com\n", 0o644)
	rnd := make([]byte, 300<<10)
	_, _ = rand.Read(rnd)
	writeFile(t, filepath.Join(dir, "config", "db", "db.sqlite"), string(rnd), 0o644)
	writeFile(t, filepath.Join(dir, "config", "letsencrypt", "acme.json"), `{"letsencrypt":{"Certificates":[]}}`, 0o600)
	writeFile(t, filepath.Join(dir, "config", "key"), "gerbil-wireguard-private-key\n", 0o600)
	must(t, os.MkdirAll(filepath.Join(dir, "config", "logs"), 0o755))
	must(t, os.Symlink("config/config.yml", filepath.Join(dir, "current-config")))
	old := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	var paths []string
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		if fi, _ := os.Lstat(paths[i]); fi.Mode()&os.ModeSymlink == 0 {
			must(t, os.Chtimes(paths[i], old, old.Add(time.Duration(i)*time.Minute)))
		}
	}
}

func keyPairFrom(t *testing.T, priv string) testenv.KeyPair {
	t.Helper()
	pub, err := os.ReadFile(priv + ".pub")
	must(t, err)
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		t.Fatalf("%s.pub: %q", priv, pub)
	}
	return testenv.KeyPair{PrivatePath: priv, PublicPath: priv + ".pub", AuthorizedLine: f[0] + " " + f[1]}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	_, err := rand.Read(b)
	must(t, err)
	return fmt.Sprintf("%x", b)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// must and writeFile are testenv's, under the short names these tests use.
var (
	must      = testenv.Must
	writeFile = testenv.WriteFile
)
