// Package rebuild_test drives `haul rebuild` end to end on loopback. Only
// what cannot run here is a stand-in: Hetzner's API (hcloud-go's mockutil
// server) and tofu (a script first on PATH that records its arguments,
// runs the real tofu/extra-files.sh and asks the test for the "new VPS").
// Everything else is real: sshd with the agent as forced command, the
// kept host key, the pin, the backup, the restore, the restic CLI.
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/treecmp"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/exp/mockutil"
	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopShared()
	os.Exit(code)
}

const (
	hostName  = "vps"
	dashboard = "example.com" // the name in httptest's TLS certificate
	oldID     = 42
	newID     = 43
	ipv4ID    = 1001
	ipv6ID    = 1002
)

// world is one homelab (NAS config, repository, kept host key, pin), one
// "primary IPv4" (a loopback port that forwards to whichever server holds
// it), the old VPS behind it, a mock Hetzner API, the stand-in tofu and a
// TLS server standing in for the new VPS's dashboard.
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

	primary *proxy
	data    string // the data path: the same on the old and the new VPS
	old     *server
	new     *server
	// gone is the old VPS's data, moved away when tofu "destroyed" it:
	// what the final backup saw.
	gone string

	api    *mockutil.Server
	health *httptest.Server
	// healthDown makes the dashboard answer 503.
	healthDown atomic.Bool
	sni        atomic.Value // string: the SNI of the last health request
	hostHeader atomic.Value

	standin string // the stand-in tofu's directory (on PATH, records)
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
	w := &world{t: t, bins: testenv.Binaries(t), root: t.TempDir(), settings: map[string]string{}}
	w.token = "hc-test-" + randomHex(t, 16)
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

	w.primary = startProxy(t)
	w.api = mockutil.NewServer(t, nil)
	w.startHealth()
	w.writeStandin()

	w.data = filepath.Join(w.root, "srv", "pangolin")
	makeData(t, w.data)
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

	// The old VPS runs with that key and holds the data; its stack runs
	// (it is ready).
	w.old = w.startServer(&w.hostKey)
	if out, err := exec.Command(filepath.Join(w.bins, "haul-agent"), "mark-ready", "--config", w.old.agentCfg).CombinedOutput(); err != nil {
		t.Fatalf("haul-agent mark-ready: %v\n%s", err, out)
	}
	w.primary.set(w.old.sshd.Addr)
	return w
}

func (w *world) writeConfig() {
	w.t.Helper()
	w.cfgPath = filepath.Join(w.root, "nas", "haul.toml")
	rebuild := map[string]string{
		"hcloud_token_file": filepath.Join(w.root, "nas", "hcloud-token"),
		"hcloud_endpoint":   w.api.URL,
		"tofu_dir":          filepath.Join(testenv.ModuleRoot(w.t), "tofu"),
		"ssh_timeout":       "20s",
		"ready_timeout":     "5s",
		"dashboard":         dashboard,
		"health_address":    w.health.Listener.Addr().String(),
		"health_ca_file":    filepath.Join(w.root, "nas", "dashboard-ca.pem"),
		"health_timeout":    "5s",
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
		Keys: []testenv.AuthorizedKey{
			{Key: w.backupKey, Options: fmt.Sprintf(`command="%s serve --config %s",restrict`, agent, s.agentCfg)},
			{Key: w.restoreKey, Options: fmt.Sprintf(`command="%s serve --config %s --allow-restore",restrict`, agent, s.agentCfg)},
		},
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
	deadline := time.After(90 * time.Second)
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
			w.t.Fatalf("haul %s did not finish within 90s\nstderr:\n%s", strings.Join(args, " "), e.String())
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

func (w *world) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "PATH" || k == "HCLOUD_TOKEN" || strings.HasPrefix(k, "TF_VAR_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "PATH="+w.standin+":"+os.Getenv("PATH"), "STANDIN_DIR="+w.standin)
}

// The stand-in tofu. It records each call's arguments and environment
// facts (never the token), prints what tofu would, fails if told to, runs
// the real extra-files script in a fresh root as nixos-anywhere would, and
// waits for the test to bring the new VPS up.
const standinScript = `#!/bin/sh
set -eu
d="$STANDIN_DIR"
n=$(( $(cat "$d/calls" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/calls"
printf '%s\n' "$@" > "$d/args.$n"
{
	echo "cwd=$PWD"
	if [ -n "${TF_VAR_hcloud_token:-}" ]; then echo "token=set"; fi
	echo "haul_host=${TF_VAR_haul_host:-}"
	echo "in_automation=${TF_IN_AUTOMATION:-}"
} > "$d/env.$n"
echo "hcloud_server.vps: Destroying... [id=42]"
if [ -e "$d/fail" ]; then
	echo "Error: creating server: server limit exceeded (stand-in)" >&2
	exit 1
fi
echo "hcloud_server.vps: Creation complete after 9s [id=43]"
tofudir="$PWD"
mkdir -p "$d/root.$n"
(cd "$d/root.$n" && HAUL_BIN="$TF_VAR_haul_bin" HAUL_CONFIG="$TF_VAR_haul_config" HAUL_HOST="$TF_VAR_haul_host" "$tofudir/extra-files.sh") > "$d/extra-files.$n" 2>&1
echo "module.deploy.module.install: nixos-anywhere installing"
: > "$d/up.$n"
i=0
while [ ! -e "$d/ready.$n" ]; do
	i=$((i + 1))
	if [ "$i" -gt 1200 ]; then echo "the test never brought the new VPS up" >&2; exit 3; fi
	sleep 0.05
done
echo "Apply complete! Resources: 1 added, 0 changed, 1 destroyed."
`

func (w *world) writeStandin() {
	w.standin = filepath.Join(w.root, "standin")
	must(w.t, os.MkdirAll(w.standin, 0o755))
	writeFile(w.t, filepath.Join(w.standin, "tofu"), standinScript, 0o755)
}

// serveStandin brings up the new VPS when the stand-in asks for it.
func (w *world) serveStandin() {
	n := w.tofuCalls()
	if n == 0 {
		return
	}
	up := filepath.Join(w.standin, fmt.Sprintf("up.%d", n))
	ready := filepath.Join(w.standin, fmt.Sprintf("ready.%d", n))
	if !exists(up) || exists(ready) {
		return
	}
	w.bringUp(filepath.Join(w.standin, fmt.Sprintf("root.%d", n)))
	writeFile(w.t, ready, "", 0o644)
}

func (w *world) tofuCalls() int {
	b, err := os.ReadFile(filepath.Join(w.standin, "calls"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func (w *world) tofuFile(name string, n int) string {
	b, err := os.ReadFile(filepath.Join(w.standin, fmt.Sprintf("%s.%d", name, n)))
	must(w.t, err)
	return string(b)
}

// The mock Hetzner API. Each helper queues the requests one phase makes,
// in order; the server fails the test on any other request, and at the
// end if a queued one never came.
func (w *world) wantAuth(t *testing.T, r *http.Request) {
	if got := r.Header.Get("Authorization"); got != "Bearer "+w.token {
		t.Errorf("API request with Authorization %q", got)
	}
}

func (w *world) expect(reqs ...mockutil.Request) {
	for i := range reqs {
		if reqs[i].Want == nil {
			reqs[i].Want = w.wantAuth
		}
	}
	w.api.Expect(reqs)
}

func serverJSON(id int64, status string, locked bool) schema.ServerListResponse {
	return schema.ServerListResponse{Servers: []schema.Server{{
		ID: id, Name: hostName, Status: status, Locked: locked,
		PublicNet: schema.ServerPublicNet{
			IPv4: schema.ServerPublicNetIPv4{ID: ipv4ID, IP: "127.0.0.1"},
			IPv6: schema.ServerPublicNetIPv6{ID: ipv6ID, IP: "2001:db8:1::1"},
		},
	}}}
}

func primaryIPJSON(id int64, name, typ, ip string, assignee int64) schema.PrimaryIPListResponse {
	return schema.PrimaryIPListResponse{PrimaryIPs: []schema.PrimaryIP{{
		ID: id, Name: name, Type: typ, IP: ip, AssigneeID: &assignee, AssigneeType: "server",
		AutoDelete: false, Protection: schema.PrimaryIPProtection{Delete: true},
	}}}
}

func getServer(body any) mockutil.Request {
	return mockutil.Request{Method: "GET", Path: "/servers?name=" + hostName, Status: 200, JSON: body}
}

func getIPv4(body any) mockutil.Request {
	return mockutil.Request{Method: "GET", Path: "/primary_ips?name=" + hostName + "-ipv4", Status: 200, JSON: body}
}

func getIPv6(body any) mockutil.Request {
	return mockutil.Request{Method: "GET", Path: "/primary_ips?name=" + hostName + "-ipv6", Status: 200, JSON: body}
}

// preflightOK is what preflight asks about a healthy running server.
func (w *world) preflightOK() {
	w.expect(
		getServer(serverJSON(oldID, "running", false)),
		getIPv4(primaryIPJSON(ipv4ID, hostName+"-ipv4", "ipv4", "127.0.0.1", oldID)),
		getIPv6(primaryIPJSON(ipv6ID, hostName+"-ipv6", "ipv6", "2001:db8:1::/64", oldID)),
	)
}

// newServerUp is the wait-ssh phase's look at the new server.
func (w *world) newServerUp() {
	w.expect(getServer(serverJSON(newID, "running", false)))
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

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(content), mode))
	must(t, os.Chmod(path, mode))
}
