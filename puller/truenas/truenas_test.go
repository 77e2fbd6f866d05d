package truenas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/haulproject/haul/puller/internal/clitest"
	"github.com/haulproject/haul/puller/truenas"
)

const apiKey = "1-s3cr3tAPIkeyDoNotLog"

// fakeTrueNAS stands in for TrueNAS SCALE's REST API v2.0 cron job
// endpoints: Bearer API key, GET and POST /api/v2.0/cronjob, PUT
// /api/v2.0/cronjob/id/{id}, and request bodies with no additional
// properties (an "id" in the body, or an unknown field, is refused as the
// real API's schema refuses it).
type fakeTrueNAS struct {
	*httptest.Server
	mu    sync.Mutex
	jobs  []truenas.CronJob
	next  int
	calls []string
}

func newFakeTrueNAS(t *testing.T) *fakeTrueNAS {
	f := &fakeTrueNAS{next: 2, jobs: []truenas.CronJob{{
		ID: 1, Enabled: true, Stdout: true, Command: "/usr/local/bin/scrub-report", Description: "weekly scrub report", User: "root",
		Schedule: truenas.Schedule{Minute: "0", Hour: "8", Dom: "*", Month: "*", Dow: "1"},
	}}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeTrueNAS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Bearer "+apiKey {
		http.Error(w, `{"message": "Not authenticated"}`, http.StatusUnauthorized)
		return
	}
	decode := func() (truenas.CronJob, bool) {
		var j truenas.CronJob
		body, _ := io.ReadAll(r.Body)
		var raw map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if json.Unmarshal(body, &raw) != nil || dec.Decode(&j) != nil || raw["id"] != nil {
			http.Error(w, fmt.Sprintf(`{"message": "invalid body %s"}`, body), http.StatusUnprocessableEntity)
			return j, false
		}
		for _, k := range []string{"command", "user", "schedule", "description", "enabled", "stdout", "stderr"} {
			if _, ok := raw[k]; !ok {
				http.Error(w, `{"message": "missing `+k+`"}`, http.StatusUnprocessableEntity)
				return j, false
			}
		}
		return j, true
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/api/v2.0/cronjob":
		json.NewEncoder(w).Encode(f.jobs)
	case r.Method == http.MethodPost && r.URL.Path == "/api/v2.0/cronjob":
		j, ok := decode()
		if !ok {
			return
		}
		j.ID = f.next
		f.next++
		f.jobs = append(f.jobs, j)
		json.NewEncoder(w).Encode(j)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/api/v2.0/cronjob/id/"):
		id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/api/v2.0/cronjob/id/"))
		i := slices.IndexFunc(f.jobs, func(j truenas.CronJob) bool { return j.ID == id })
		if err != nil || i < 0 {
			http.Error(w, `{"message": "no such job"}`, http.StatusNotFound)
			return
		}
		j, ok := decode()
		if !ok {
			return
		}
		j.ID = id
		f.jobs[i] = j
		json.NewEncoder(w).Encode(j)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// take returns and clears the calls seen so far.
func (f *fakeTrueNAS) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeTrueNAS) job(id int) truenas.CronJob {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return j
		}
	}
	return truenas.CronJob{}
}

// TestCronInstallIsIdempotent drives `haul truenas cron install` against
// the stand-in: the first run creates the job, the second changes nothing,
// a third with a new schedule updates the same job, the other job is never
// touched, and a wrong key fails clearly without printing it.
func TestCronInstallIsIdempotent(t *testing.T) {
	f := newFakeTrueNAS(t)
	e := clitest.NewBare(t)
	keyFile := filepath.Join(e.Dir, "truenas-api-key")
	clitest.Must(t, os.WriteFile(keyFile, []byte(apiKey+"\n"), 0o600))
	install := func(extra ...string) clitest.Result {
		args := append([]string{"truenas", "cron", "install", "--url", f.URL, "--api-key-file", keyFile,
			"--user", "root", "--config", "/mnt/tank/haul/haul.toml", "--binary", "/mnt/tank/haul/bin/haul"}, extra...)
		return e.Run(args...)
	}
	before := f.job(1)

	r := install("--schedule", "0 3 * * *")
	if r.Code != 0 {
		t.Fatalf("install: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := f.take(); !slices.Equal(got, []string{"GET /api/v2.0/cronjob", "POST /api/v2.0/cronjob"}) {
		t.Fatalf("first install made calls %v", got)
	}
	j := f.job(2)
	want := truenas.CronJob{
		ID: 2, Enabled: true, Stdout: true, Stderr: false, User: "root",
		Schedule:    truenas.Schedule{Minute: "0", Hour: "3", Dom: "*", Month: "*", Dow: "*"},
		Command:     "/mnt/tank/haul/bin/haul --config /mnt/tank/haul/haul.toml backup --quiet",
		Description: j.Description,
	}
	if j != want || !strings.Contains(j.Description, "[haul:/mnt/tank/haul/haul.toml]") {
		t.Fatalf("created job %+v\nwant %+v", j, want)
	}
	if !strings.Contains(r.Stdout, "created") {
		t.Errorf("output: %s", r.Stdout)
	}

	r = install("--schedule", "0 3 * * *")
	if got := f.take(); r.Code != 0 || !slices.Equal(got, []string{"GET /api/v2.0/cronjob"}) || !strings.Contains(r.Stdout, "unchanged") {
		t.Fatalf("second install: exit %d, calls %v, output %s", r.Code, got, r.Stdout)
	}

	r = install("--schedule", "30 4 * * 1-5", "--forget")
	if got := f.take(); r.Code != 0 || !slices.Equal(got, []string{"GET /api/v2.0/cronjob", "PUT /api/v2.0/cronjob/id/2"}) {
		t.Fatalf("changed install: exit %d, calls %v\n%s", r.Code, got, r.Stderr)
	}
	j = f.job(2)
	if j.Schedule != (truenas.Schedule{Minute: "30", Hour: "4", Dom: "*", Month: "*", Dow: "1-5"}) ||
		!strings.HasSuffix(j.Command, " && /mnt/tank/haul/bin/haul --config /mnt/tank/haul/haul.toml forget --prune --quiet") {
		t.Fatalf("updated job %+v", j)
	}
	if f.job(1) != before || len(f.jobs) != 2 {
		t.Fatalf("the unrelated job was touched or a duplicate made: %+v", f.jobs)
	}

	clitest.Must(t, os.WriteFile(keyFile, []byte("wrong-key\n"), 0o600))
	r = install()
	if r.Code != 2 || !strings.Contains(r.Stderr, "API key was refused") {
		t.Fatalf("wrong key: exit %d\n%s", r.Code, r.Stderr)
	}
	for _, out := range []string{r.Stdout, r.Stderr} {
		if strings.Contains(out, apiKey) || strings.Contains(out, "wrong-key") {
			t.Fatalf("haul printed the API key:\n%s", out)
		}
	}
}

func TestParseSchedule(t *testing.T) {
	if s, err := truenas.ParseSchedule(" 0 3  * * * "); err != nil || s.String() != "0 3 * * *" {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"0 3 * *", "0 3 * * * *", "0 3 * * ;reboot", ""} {
		if _, err := truenas.ParseSchedule(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
