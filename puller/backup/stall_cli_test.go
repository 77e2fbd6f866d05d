package backup_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// TestStalledHostIsDropped: `haul backup` with a host whose agent goes
// silent after its manifest, and a good host. The stalled host fails after
// its idle_timeout with an error naming it, the good host's snapshot is
// written, both pings report what happened, the repository lock is free
// (`haul forget --prune` takes it exclusively right after), and no lock
// file is left.
func TestStalledHostIsDropped(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the whole haul backup against a stalling agent waits out its idle_timeout; make test runs it")
	}
	bins := testenv.Binaries(t)
	self, err := os.Executable()
	must(t, err)
	root := t.TempDir()
	data := filepath.Join(root, "vps", "data")
	must(t, os.MkdirAll(data, 0o755))
	must(t, os.WriteFile(filepath.Join(data, "acme.json"), []byte("{}"), 0o600))
	agentCfg := filepath.Join(root, "agent.json")
	must(t, os.WriteFile(agentCfg, []byte(fmt.Sprintf(`{"host":"good","data_paths":[%q],"state_dir":%q}`, data, filepath.Join(root, "state"))), 0o600))
	pw := filepath.Join(root, "pw")
	must(t, os.WriteFile(pw, []byte("stall-test\n"), 0o600))

	var mu sync.Mutex
	var pings []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		pings = append(pings, r.URL.Path+" "+string(body))
		mu.Unlock()
	}))
	defer srv.Close()

	cfg := filepath.Join(root, "haul.toml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`repository = %q
password_file = %q
cache_dir = %q
[retention]
keep_last = 1
[notify]
ping_url = "%s/run"

[[hosts]]
name = "stalled"
command = [%q, "hostile-agent", "stall"]
[hosts.limits]
idle_timeout = "2s"
[hosts.notify]
ping_url = "%s/stalled"

[[hosts]]
name = "good"
command = [%q, "serve", "--config", %q]
`, filepath.Join(root, "repo"), pw, filepath.Join(root, "cache"), srv.URL, self, srv.URL, filepath.Join(bins, "haul-agent"), agentCfg)), 0o600))

	if _, stderr, code := testenv.Haul(t, cfg, "init"); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	start := time.Now()
	stdout, stderr, code := testenv.Haul(t, cfg, "backup")
	took := time.Since(start)
	t.Logf("backup took %v, exit %d\n%s\n%s", took, code, stdout, stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one host failed)", code)
	}
	if !strings.Contains(stderr, "idle_timeout = 2s") || !strings.Contains(stdout, "stalled") {
		t.Fatalf("the failure does not name the idle timeout:\n%s\n%s", stdout, stderr)
	}
	if took > 60*time.Second {
		t.Errorf("the stalled host held the run for %v", took)
	}
	if out, _, code := testenv.Haul(t, cfg, "snapshots"); code != 0 || !strings.Contains(out, "good") || strings.Contains(out, "stalled") {
		t.Fatalf("snapshots (exit %d):\n%s", code, out)
	}
	if locks, _ := os.ReadDir(filepath.Join(root, "repo", "locks")); len(locks) != 0 {
		t.Fatalf("%d lock files left in the repository", len(locks))
	}
	if _, stderr, code := testenv.Haul(t, cfg, "forget", "--prune"); code != 0 {
		t.Fatalf("forget --prune after the stalled host: exit %d\n%s", code, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(pings, "\n")
	for _, want := range []string{"/stalled/fail", "/run/fail"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %s ping; pings:\n%s", want, all)
		}
	}
	if !strings.Contains(all, "idle_timeout") {
		t.Errorf("the fail pings do not say why:\n%s", all)
	}
}
