package truenas_test

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/internal/clitest"
	"github.com/haulproject/haul/puller/truenas"
	"golang.org/x/net/websocket"
)

const (
	apiKey  = "7-s3cr3tAPIkeyDoNotLog"
	apiUser = "truenas_admin"
)

func TestMain(m *testing.M) {
	if state := os.Getenv("HAUL_FAKE_MIDCLT"); state != "" {
		os.Exit(fakeMidclt(state, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// jsonrpcNAS stands in for TrueNAS 25.04+'s API server over TLS: GET
// /api/versions (unauthenticated, a JSON list, main.py
// api_versions_handler) and the JSON-RPC 2.0 websocket at /api/current
// (docs/jsonrpc.rst): requests {jsonrpc, id, method, params: array},
// answers {jsonrpc, id, result} or {jsonrpc, id, error: {code, message,
// data: {error, errname, reason}}}, collection_update notifications in
// between, and nothing but auth.login_ex before a login
// (mechanism API_KEY_PLAIN with username and api_key, answered
// {response_type: SUCCESS | AUTH_ERR}).
type jsonrpcNAS struct {
	*httptest.Server
	mw     *middleware
	logins atomic.Int32
	caFile string
}

func newJSONRPCNAS(t *testing.T) *jsonrpcNAS {
	n := &jsonrpcNAS{mw: newMiddleware()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/versions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`["v25.04.0", "v25.04.1", "v25.04.2"]`))
	})
	mux.Handle("GET /api/current", websocket.Server{Handler: n.serve})
	n.Server = httptest.NewTLSServer(mux)
	t.Cleanup(n.Close)
	n.caFile = filepath.Join(t.TempDir(), "nas-ca.pem")
	clitest.Must(t, os.WriteFile(n.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: n.Certificate().Raw}), 0o600))
	return n
}

type rpcIn struct {
	JSONRPC string            `json:"jsonrpc"`
	ID      json.RawMessage   `json:"id"`
	Method  string            `json:"method"`
	Params  []json.RawMessage `json:"params"`
}

func (n *jsonrpcNAS) serve(ws *websocket.Conn) {
	defer ws.Close()
	authed := false
	for {
		var req rpcIn
		if err := websocket.JSON.Receive(ws, &req); err != nil {
			return
		}
		reply := map[string]any{"jsonrpc": "2.0", "id": req.ID}
		fail := func(code int, errname, reason string) {
			reply["error"] = map[string]any{"code": code, "message": "Method call error",
				"data": map[string]any{"error": 22, "errname": errname, "reason": reason, "extra": []any{}}}
		}
		// A notification first: the client must skip it.
		websocket.JSON.Send(ws, map[string]any{"jsonrpc": "2.0", "method": "collection_update",
			"params": map[string]any{"msg": "changed", "collection": "core.get_jobs", "id": 1, "fields": map[string]any{}}})
		switch {
		case req.JSONRPC != "2.0" || req.ID == nil || req.Params == nil:
			reply["error"] = map[string]any{"code": -32600, "message": "Invalid Request"}
		case req.Method == "auth.login_ex":
			var login struct {
				Mechanism string `json:"mechanism"`
				Username  string `json:"username"`
				APIKey    string `json:"api_key"`
			}
			if len(req.Params) != 1 || json.Unmarshal(req.Params[0], &login) != nil || login.Mechanism != "API_KEY_PLAIN" || login.Username == "" {
				fail(-32001, "EINVAL", "login_data: invalid")
				break
			}
			n.logins.Add(1)
			if login.Username == apiUser && login.APIKey == apiKey {
				authed = true
				reply["result"] = map[string]any{"response_type": "SUCCESS", "user_info": nil, "authenticator": "LEVEL_1"}
			} else {
				reply["result"] = map[string]any{"response_type": "AUTH_ERR"}
			}
		case !authed:
			fail(-32001, "ENOTAUTHENTICATED", "Not authenticated")
		default:
			res, cerr := n.mw.call(req.Method, req.Params)
			if cerr != nil {
				fail(-32001, "EINVAL", cerr.Reason)
			} else {
				reply["result"] = res
			}
		}
		if err := websocket.JSON.Send(ws, reply); err != nil {
			return
		}
	}
}

// restNAS stands in for TrueNAS 24.10's REST API v2.0: no /api/versions
// (404), GET /api/v2.0/system/version, GET and POST /api/v2.0/cronjob and
// PUT /api/v2.0/cronjob/id/{id}, a Bearer API key.
func newRESTNAS(t *testing.T, version string) (*httptest.Server, *middleware, string) {
	mw := newMiddleware()
	mux := http.NewServeMux()
	auth := func(h func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+apiKey {
				http.Error(w, `{"message": "Not authenticated"}`, http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	answer := func(w http.ResponseWriter, res any, cerr *callError) {
		if cerr != nil {
			http.Error(w, `{"message": "`+cerr.Reason+`"}`, http.StatusUnprocessableEntity)
			return
		}
		json.NewEncoder(w).Encode(res)
	}
	body := func(r *http.Request) json.RawMessage {
		var b json.RawMessage
		json.NewDecoder(r.Body).Decode(&b)
		return b
	}
	mux.HandleFunc("GET /api/v2.0/system/version", auth(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(version)
	}))
	mux.HandleFunc("GET /api/v2.0/cronjob", auth(func(w http.ResponseWriter, r *http.Request) {
		res, cerr := mw.call("cronjob.query", nil)
		answer(w, res, cerr)
	}))
	mux.HandleFunc("POST /api/v2.0/cronjob", auth(func(w http.ResponseWriter, r *http.Request) {
		res, cerr := mw.call("cronjob.create", []json.RawMessage{body(r)})
		answer(w, res, cerr)
	}))
	mux.HandleFunc("PUT /api/v2.0/cronjob/id/{id}", auth(func(w http.ResponseWriter, r *http.Request) {
		res, cerr := mw.call("cronjob.update", []json.RawMessage{json.RawMessage(r.PathValue("id")), body(r)})
		answer(w, res, cerr)
	}))
	s := httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	ca := filepath.Join(t.TempDir(), "nas-ca.pem")
	clitest.Must(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600))
	return s, mw, ca
}

func keyFile(t *testing.T, e *clitest.Env, key string) string {
	f := filepath.Join(e.Dir, "truenas-api-key")
	clitest.Must(t, os.WriteFile(f, []byte(key+"\n"), 0o600))
	return f
}

// checkIdempotent installs three times through args: created, unchanged,
// updated in place with a new schedule and --forget; the other job is
// never touched and no duplicate appears.
func checkIdempotent(t *testing.T, e *clitest.Env, mw *middleware, args ...string) {
	t.Helper()
	install := func(extra ...string) clitest.Result {
		return e.Run(append(append([]string{"truenas", "cron", "install", "--user", "root",
			"--config", "/mnt/tank/haul/haul.toml", "--binary", "/mnt/tank/haul/bin/haul"}, args...), extra...)...)
	}
	before := mw.job(1)
	r := install("--schedule", "0 3 * * *")
	if r.Code != 0 {
		t.Fatalf("install: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := mw.take(); !slices.Equal(got, []string{"cronjob.query", "cronjob.create"}) {
		t.Fatalf("first install made calls %v", got)
	}
	j := mw.job(2)
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
	if got := mw.take(); r.Code != 0 || !slices.Equal(got, []string{"cronjob.query"}) || !strings.Contains(r.Stdout, "unchanged") {
		t.Fatalf("second install: exit %d, calls %v, output %s%s", r.Code, got, r.Stdout, r.Stderr)
	}
	r = install("--schedule", "30 4 * * 1-5", "--forget", "--quiet")
	if got := mw.take(); r.Code != 0 || !slices.Equal(got, []string{"cronjob.query", "cronjob.update"}) || r.Stdout+r.Stderr != "" {
		t.Fatalf("changed install (--quiet): exit %d, calls %v, output %q %q", r.Code, got, r.Stdout, r.Stderr)
	}
	j = mw.job(2)
	if j.Schedule != (truenas.Schedule{Minute: "30", Hour: "4", Dom: "*", Month: "*", Dow: "1-5"}) ||
		j.Command != "sh -c '/mnt/tank/haul/bin/haul --config /mnt/tank/haul/haul.toml backup --quiet && /mnt/tank/haul/bin/haul --config /mnt/tank/haul/haul.toml forget --prune --quiet'" {
		t.Fatalf("updated job %+v", j)
	}
	if mw.job(1) != before || mw.count() != 2 {
		t.Fatalf("the unrelated job was touched or a duplicate made")
	}
}

func noKeyIn(t *testing.T, r clitest.Result, keys ...string) {
	t.Helper()
	for _, out := range []string{r.Stdout, r.Stderr} {
		for _, k := range keys {
			if strings.Contains(out, k) {
				t.Fatalf("haul printed the API key:\n%s", out)
			}
		}
	}
}

// TestCronInstallOverJSONRPC: TrueNAS 25.04+ over wss with --ca-file,
// idempotent, and a wrong key fails clearly without being printed.
func TestCronInstallOverJSONRPC(t *testing.T) {
	n := newJSONRPCNAS(t)
	e := clitest.NewBare(t)
	kf := keyFile(t, e, apiKey)
	checkIdempotent(t, e, n.mw, "--url", n.URL, "--api-key-file", kf, "--api-user", apiUser, "--ca-file", n.caFile)

	r := e.Run("truenas", "cron", "install", "--url", n.URL, "--api-key-file", kf, "--api-user", apiUser, "--ca-file", n.caFile,
		"--config", "/mnt/tank/haul/haul.toml", "--binary", "/mnt/tank/haul/bin/haul")
	if !strings.Contains(r.Stdout, "JSON-RPC 2.0 at wss://") || !strings.Contains(r.Stdout, "v25.04.2") {
		t.Errorf("output does not say how the NAS was reached: %s", r.Stdout)
	}
	// Without --ca-file the self-signed certificate is refused.
	if r := e.Run("truenas", "cron", "install", "--url", n.URL, "--api-key-file", kf, "--config", "/x/haul.toml", "--binary", "/x/haul"); r.Code != 2 || !strings.Contains(r.Stderr, "certificate") {
		t.Errorf("untrusted certificate: exit %d\n%s", r.Code, r.Stderr)
	}
	kf = keyFile(t, e, "7-wrongkey")
	r = e.Run("truenas", "cron", "install", "--url", n.URL, "--api-key-file", kf, "--api-user", apiUser, "--ca-file", n.caFile,
		"--config", "/mnt/tank/haul/haul.toml", "--binary", "/mnt/tank/haul/bin/haul")
	if r.Code != 2 || !strings.Contains(r.Stderr, "API key was refused") {
		t.Fatalf("wrong key: exit %d\n%s", r.Code, r.Stderr)
	}
	noKeyIn(t, r, apiKey, "wrongkey")
}

// TestCronInstallRefusesPlainHTTP: with an http:// or ws:// URL haul
// sends nothing at all.
func TestCronInstallRefusesPlainHTTP(t *testing.T) {
	var hits atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer s.Close()
	e := clitest.NewBare(t)
	kf := keyFile(t, e, apiKey)
	for _, u := range []string{s.URL, strings.Replace(s.URL, "http://", "ws://", 1)} {
		r := e.Run("truenas", "cron", "install", "--url", u, "--api-key-file", kf, "--config", "/x/haul.toml", "--binary", "/x/haul")
		if r.Code != 2 || !strings.Contains(r.Stderr, "refusing to send the API key over plain HTTP") {
			t.Errorf("--url %s: exit %d\n%s", u, r.Code, r.Stderr)
		}
		noKeyIn(t, r, apiKey)
	}
	if hits.Load() != 0 {
		t.Fatalf("haul sent %d requests over plain HTTP", hits.Load())
	}
}

// TestCronInstallOver2410REST: a server without /api/versions that says it
// is 24.10 gets REST v2.0; one that says anything older is refused.
func TestCronInstallOver2410REST(t *testing.T) {
	s, mw, ca := newRESTNAS(t, "TrueNAS-SCALE-24.10.2.1")
	e := clitest.NewBare(t)
	kf := keyFile(t, e, apiKey)
	checkIdempotent(t, e, mw, "--url", s.URL, "--api-key-file", kf, "--ca-file", ca)

	old, _, oca := newRESTNAS(t, "TrueNAS-SCALE-24.04.2")
	r := e.Run("truenas", "cron", "install", "--url", old.URL, "--api-key-file", kf, "--ca-file", oca, "--config", "/x/haul.toml", "--binary", "/x/haul")
	if r.Code != 2 || !strings.Contains(r.Stderr, "24.04.2") || !strings.Contains(r.Stderr, "for 24.10 only") {
		t.Fatalf("old release: exit %d\n%s", r.Code, r.Stderr)
	}
}

// TestCronInstallOverMidclt: on the NAS itself, no key, midclt; the
// schedule is recorded and `haul status` derives max_age from it.
func TestCronInstallOverMidclt(t *testing.T) {
	self, err := os.Executable()
	clitest.Must(t, err)
	e := clitest.New(t)
	state := filepath.Join(e.Dir, "midclt-state.json")
	t.Setenv("HAUL_FAKE_MIDCLT", state)
	mw := &midcltView{path: state}
	checkIdempotentMidclt(t, e, mw, self)

	// The schedule (every 6 hours) is recorded; status derives 8h.
	e.WriteConfig("[[hosts]]\nname = \"vps\"\ncommand = [\"/bin/false\"]\n")
	e.MustHaul("truenas", "cron", "install", "--midclt", self, "--schedule", "0 */6 * * *", "--binary", "/mnt/tank/haul/bin/haul")
	r := e.Run("status", "--json")
	var rep struct {
		Hosts []struct {
			MaxAge       string `json:"max_age"`
			MaxAgeSource string `json:"max_age_source"`
			StaleReason  string `json:"stale_reason"`
		} `json:"hosts"`
	}
	clitest.Must(t, json.Unmarshal([]byte(r.Stdout), &rep))
	if r.Code != 1 || len(rep.Hosts) != 1 || rep.Hosts[0].MaxAge != "8h0m0s" || rep.Hosts[0].MaxAgeSource != "schedule" ||
		!strings.Contains(rep.Hosts[0].StaleReason, "derived from the installed cron schedule") {
		t.Fatalf("status after install: exit %d %+v\n%s", r.Code, rep, r.Stderr)
	}
	if r := e.Run("status"); !strings.Contains(r.Stdout, "8h (schedule)") {
		t.Errorf("text status does not say where max_age comes from:\n%s", r.Stdout)
	}
	// A middleware error reaches the user.
	r = e.Run("truenas", "cron", "install", "--midclt", self, "--user", "no body", "--binary", "/x/haul")
	if r.Code != 2 || !strings.Contains(r.Stderr, "--user") {
		t.Errorf("bad user: exit %d\n%s", r.Code, r.Stderr)
	}
}

// midcltView reads the stand-in midclt's state file.
type midcltView struct{ path string }

func checkIdempotentMidclt(t *testing.T, e *clitest.Env, v *midcltView, self string) {
	t.Helper()
	install := func(extra ...string) clitest.Result {
		return e.Run(append([]string{"truenas", "cron", "install", "--midclt", self, "--user", "root",
			"--binary", "/mnt/tank/haul/bin/haul"}, extra...)...)
	}
	calls := func() []string {
		m := loadMidcltState(v.path)
		c := m.Calls
		m.Calls = nil
		b, _ := json.Marshal(m)
		os.WriteFile(v.path, b, 0o600)
		return c
	}
	if r := install(); r.Code != 0 || !strings.Contains(r.Stdout, "created") || !strings.Contains(r.Stdout, "midclt") {
		t.Fatalf("install: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := calls(); !slices.Equal(got, []string{"cronjob.query", "cronjob.create"}) {
		t.Fatalf("calls %v", got)
	}
	if r := install(); r.Code != 0 || !strings.Contains(r.Stdout, "unchanged") {
		t.Fatalf("second install: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := install("--drill", "--schedule", "15 2 * * *"); r.Code != 0 || !strings.Contains(r.Stdout, "updated") {
		t.Fatalf("third install: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := calls(); !slices.Equal(got, []string{"cronjob.query", "cronjob.query", "cronjob.update"}) {
		t.Fatalf("calls %v", got)
	}
	m := loadMidcltState(v.path)
	if len(m.Jobs) != 2 || m.Jobs[1].Schedule.Minute != "15" || !strings.HasSuffix(m.Jobs[1].Command, "drill --quiet'") ||
		!strings.Contains(m.Jobs[1].Description, "[haul:"+e.Config+"]") {
		t.Fatalf("jobs %+v", m.Jobs)
	}
}

// TestGeneratedCommandIsQuietUnderShC runs the exact command the job
// holds the way TrueNAS does (plugins/cron/execute.py: `sh -c "COMMAND >
// /dev/null"`, stderr into the same pipe that is mailed): nothing on
// success, the error on failure, with a binary path that needs quoting.
func TestGeneratedCommandIsQuietUnderShC(t *testing.T) {
	testenv.Slow(t, "runs the generated backup-and-forget job through sh -c")
	e := clitest.New(t)
	data := filepath.Join(e.Dir, "data")
	clitest.WriteRandom(t, filepath.Join(data, "db.sqlite"), 64<<10)
	bin := filepath.Join(e.Dir, "pool's bin", "haul")
	clitest.Must(t, os.MkdirAll(filepath.Dir(bin), 0o755))
	src, err := os.ReadFile(e.Haul)
	clitest.Must(t, err)
	clitest.Must(t, os.WriteFile(bin, src, 0o755))
	e.WriteConfig(fmt.Sprintf("[retention]\nkeep_last = 1\n\n[[hosts]]\nname = \"vps\"\ncommand = %s\n", e.AgentCommand("vps", data)))

	sched, _ := truenas.ParseSchedule("0 3 * * *")
	job := truenas.HaulJob{Binary: bin, Config: e.Config, Forget: true, User: "root", Schedule: sched}
	cmd, err := job.Command()
	clitest.Must(t, err)
	run := func() (string, int) {
		c := exec.Command("sh", "-c", cmd+" > /dev/null")
		out, err := c.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	for i := range 2 { // the second run forgets the first snapshot
		if out, code := run(); code != 0 || out != "" {
			t.Fatalf("run %d: exit %d, mailed output %q from %s", i, code, out, cmd)
		}
	}
	if n := strings.Count(string(e.Restic("snapshots", "--json")), `"id"`); n != 1 {
		t.Fatalf("backup + forget --prune left %d snapshots, want 1", n)
	}
	// --quiet is quiet on every command that has it.
	for _, args := range [][]string{{"check", "--quiet"}, {"check", "--read-data", "--quiet"}, {"prune", "--quiet"},
		{"forget", "--quiet"}, {"status", "--quiet"}, {"backup", "--quiet"}} {
		if r := e.Run(args...); r.Code != 0 || r.Stdout+r.Stderr != "" {
			t.Errorf("haul %v: exit %d, printed %q %q", args, r.Code, r.Stdout, r.Stderr)
		}
	}
	// A failing host: the mail holds the error.
	e.WriteConfig("[[hosts]]\nname = \"vps\"\ncommand = [\"/bin/sh\", \"-c\", \"echo 'agent: disk full' >&2; exit 3\"]\n")
	out, code := run()
	if code == 0 || !strings.Contains(out, "vps") || !strings.Contains(out, "FAILED") || !strings.Contains(out, "disk full") {
		t.Fatalf("failing run: exit %d, output %q", code, out)
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

func TestLongestGap(t *testing.T) {
	for expr, want := range map[string]time.Duration{
		"0 3 * * *":      24 * time.Hour,
		"*/30 * * * *":   30 * time.Minute,
		"0 */6 * * *":    6 * time.Hour,
		"30 4 * * 1-5":   72 * time.Hour, // Friday to Monday
		"0 3 * * sun":    7 * 24 * time.Hour,
		"0 3 1 * *":      31 * 24 * time.Hour,
		"0 0,12 * * *":   12 * time.Hour,
		"0 3 1,15 * mon": 7 * 24 * time.Hour, // either day field
	} {
		s, err := truenas.ParseSchedule(expr)
		clitest.Must(t, err)
		got, err := s.LongestGap()
		if err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", expr, got, err, want)
		}
	}
	s, _ := truenas.ParseSchedule("0 3 30 2 *")
	if _, err := s.LongestGap(); err == nil {
		t.Errorf("February 30th runs")
	}
}

func TestCommandRefusesPathsCronMangles(t *testing.T) {
	for _, p := range []string{"relative/haul", "/mnt/50%/haul", "/mnt/a\nb/haul"} {
		if _, err := (truenas.HaulJob{Binary: p, Config: "/c.toml"}).Command(); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	cmd, err := (truenas.HaulJob{Binary: "/mnt/my pool/haul", Config: "/c.toml"}).Command()
	if err != nil || cmd != "'/mnt/my pool/haul' --config /c.toml backup --quiet" {
		t.Errorf("%q %v", cmd, err)
	}
}

// TestREADMECrontabIsTheGeneratedCommand: the README's crontab line is
// what `truenas cron install --forget` installs, plus the redirect.
func TestREADMECrontabIsTheGeneratedCommand(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	clitest.Must(t, err)
	cmd, err := (truenas.HaulJob{Binary: "/mnt/tank/haul/bin/haul", Config: "/mnt/tank/haul/haul.toml", Forget: true}).Command()
	clitest.Must(t, err)
	if want := "0 3 * * *    " + cmd + " > /dev/null\n"; !strings.Contains(string(readme), want) {
		t.Fatalf("README.md's crontab lacks the generated line:\n%s", want)
	}
}
