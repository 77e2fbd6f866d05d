package notify_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/internal/clitest"
	"github.com/haulproject/haul/puller/notify"
)

// pingServer is a healthchecks.io stand-in on loopback that records every
// request and answers with status().
type pingServer struct {
	*httptest.Server
	mu     sync.Mutex
	calls  []call
	status func(n int) int
}

type call struct {
	Method, Path, Body string
}

func newPingServer(t *testing.T) *pingServer {
	s := &pingServer{status: func(int) int { return http.StatusOK }}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.calls = append(s.calls, call{r.Method, r.URL.Path, string(b)})
		code := s.status(len(s.calls))
		s.mu.Unlock()
		w.WriteHeader(code)
		fmt.Fprintln(w, "OK")
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *pingServer) Calls() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]call(nil), s.calls...)
}

func TestPingerRetriesAndRedacts(t *testing.T) {
	s := newPingServer(t)
	var warnings []string
	p := &notify.Pinger{URL: s.URL + "/secret-uuid?create=1", RetryDelay: time.Millisecond,
		Logf: func(f string, a ...any) { warnings = append(warnings, fmt.Sprintf(f, a...)) }}

	// Two failures, then success: three requests, no warning.
	s.status = func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	p.Fail(context.Background(), "the tail")
	calls := s.Calls()
	if len(calls) != 3 || calls[2].Path != "/secret-uuid/fail" || calls[2].Body != "the tail" || calls[2].Method != http.MethodPost {
		t.Fatalf("calls = %+v", calls)
	}
	if len(warnings) != 0 {
		t.Fatalf("warnings after a retried success: %v", warnings)
	}

	// Always failing: three attempts, one warning without the token.
	s.status = func(int) int { return http.StatusInternalServerError }
	p.Start(context.Background())
	if n := len(s.Calls()); n != 6 {
		t.Fatalf("%d requests, want 3 more attempts", n)
	}
	if len(warnings) != 1 || strings.Contains(warnings[0], "secret-uuid") || !strings.Contains(warnings[0], "start ping") {
		t.Fatalf("warnings = %q", warnings)
	}
}

// TestBackupPingsAndTextfile runs `haul backup` with one good host and one
// failing host, each with its own check, and a run-wide check: the stand-in
// must see exactly start/success for the good host, start/fail (with the
// agent's error in the log tail) for the bad one, and start/fail for the
// run; the Prometheus textfile must hold both hosts' metrics.
func TestBackupPingsAndTextfile(t *testing.T) {
	s := newPingServer(t)
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "data")
	clitest.WriteRandom(t, filepath.Join(data, "acme.json"), 4096)
	goodURLFile := filepath.Join(e.Dir, "good-ping-url")
	clitest.Must(t, os.WriteFile(goodURLFile, []byte(s.URL+"/good-token\n"), 0o600))
	prom := filepath.Join(e.Dir, "textfile", "haul.prom")
	clitest.Must(t, os.MkdirAll(filepath.Dir(prom), 0o755))
	e.WriteConfig(fmt.Sprintf(`
[notify]
ping_url = "%[1]s/run-token"
prometheus_textfile = %[2]q

[[hosts]]
name = "good"
command = %[3]s
[hosts.notify]
ping_url_file = %[4]q

[[hosts]]
name = "bad"
command = ["/bin/sh", "-c", "echo 'disk on fire' >&2; exit 3"]
[hosts.notify]
ping_url = "%[1]s/bad-token"
`, s.URL, prom, e.AgentCommand("good", data), goodURLFile))

	r := e.Run("backup")
	if r.Code != 1 {
		t.Fatalf("backup with a failing host: exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if !strings.Contains(r.Stdout, "bad") || !strings.Contains(r.Stdout, "FAILED") || !strings.Contains(r.Stdout, "1 of 2 hosts failed: bad") {
		t.Errorf("summary does not name the failing host:\n%s", r.Stdout)
	}
	for _, secret := range []string{"run-token", "good-token", "bad-token"} {
		if strings.Contains(r.Stdout+r.Stderr, secret) {
			t.Errorf("haul printed the ping URL token %q", secret)
		}
	}

	calls := s.Calls()
	var got []string
	index := map[string]int{}
	for i, c := range calls {
		if c.Method != http.MethodPost {
			t.Errorf("%s %s: pings are POSTs", c.Method, c.Path)
		}
		got = append(got, c.Path)
		index[c.Path] = i
	}
	want := []string{"/bad-token/fail", "/bad-token/start", "/good-token", "/good-token/start", "/run-token/fail", "/run-token/start"}
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	if !slices.Equal(sorted, want) {
		t.Fatalf("ping calls = %v, want exactly %v", got, want)
	}
	if got[0] != "/run-token/start" || got[len(got)-1] != "/run-token/fail" {
		t.Errorf("the run's start must come first and its fail last: %v", got)
	}
	for _, h := range []string{"/good-token", "/bad-token"} {
		end := h
		if h == "/bad-token" {
			end += "/fail"
		}
		if index[h+"/start"] > index[end] {
			t.Errorf("%s finished before it started: %v", h, got)
		}
	}
	badFail := calls[index["/bad-token/fail"]].Body
	if !strings.Contains(badFail, "disk on fire") || !strings.Contains(badFail, "log tail") {
		t.Errorf("bad host's fail ping lacks the agent's error or the log tail:\n%s", badFail)
	}
	runFail := calls[index["/run-token/fail"]].Body
	if !strings.Contains(runFail, "1 of 2 hosts failed: bad") || !strings.Contains(runFail, "disk on fire") || !strings.Contains(runFail, "good: snapshot") {
		t.Errorf("run fail ping lacks the summary or the log tail:\n%s", runFail)
	}
	if goodOK := calls[index["/good-token"]].Body; !strings.Contains(goodOK, "snapshot") {
		t.Errorf("good host's success ping body: %q", goodOK)
	}

	b, err := os.ReadFile(prom)
	clitest.Must(t, err)
	text := string(b)
	sample := regexp.MustCompile(`^([a-z_]+)\{host="([a-z]+)"\} (\S+)$`)
	values := map[string]float64{}
	typed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			typed[f[2]] = f[3] == "gauge"
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("textfile line is not a sample: %q", line)
		}
		if !typed[m[1]] {
			t.Errorf("%s has no TYPE line before it", m[1])
		}
		v, err := strconv.ParseFloat(m[3], 64)
		clitest.Must(t, err)
		values[m[1]+"/"+m[2]] = v
	}
	now := float64(time.Now().UnixMilli()) / 1000
	checks := []struct {
		key string
		ok  func(v float64) bool
	}{
		{"haul_backup_last_run_success/good", func(v float64) bool { return v == 1 }},
		{"haul_backup_last_run_success/bad", func(v float64) bool { return v == 0 }},
		{"haul_backup_last_success_timestamp_seconds/good", func(v float64) bool { return now-v >= -1 && now-v < 300 }},
		{"haul_backup_last_run_timestamp_seconds/bad", func(v float64) bool { return now-v >= -1 && now-v < 300 }},
		{"haul_backup_last_success_bytes/good", func(v float64) bool { return v == 4096 }},
		{"haul_backup_last_success_duration_seconds/good", func(v float64) bool { return v > 0 }},
		{"haul_backup_last_success_freeze_seconds/good", func(v float64) bool { return v >= 0 }},
		{"haul_backup_last_success_wire_bytes/good", func(v float64) bool { return v > 4096 }},
	}
	for _, c := range checks {
		v, ok := values[c.key]
		if !ok || !c.ok(v) {
			t.Errorf("textfile %s = %v (present %v)\n%s", c.key, v, ok, text)
		}
	}
	if _, ok := values["haul_backup_last_success_timestamp_seconds/bad"]; ok {
		t.Errorf("a host that never succeeded has a last-success time")
	}
}
