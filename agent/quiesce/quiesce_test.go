package quiesce

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	for _, c := range []struct {
		name, in   string
		status     int
		body, fail string
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "hello", ""},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nTrailer: x\r\n\r\n", 200, "hello", ""},
		{"until EOF", "HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"no\"}", 404, `{"message":"no"}`, ""},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", ""},
		{"not modified", "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", 304, "", ""},
		{"bad status", "SSH-2.0-OpenSSH\r\n\r\n", 0, "", "malformed status line"},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, "", "malformed Content-Length"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", 0, "", "unexpected EOF"},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, "", "malformed chunk size"},
		{"huge", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", maxBody+1), 0, "", "too large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body, err := readResponse(bufio.NewReader(strings.NewReader(c.in)))
			if c.fail != "" {
				if err == nil || !strings.Contains(err.Error(), c.fail) {
					t.Fatalf("err = %v, want one containing %q", err, c.fail)
				}
				return
			}
			if err != nil || status != c.status || string(body) != c.body {
				t.Fatalf("got %d %q %v, want %d %q", status, body, err, c.status, c.body)
			}
		})
	}
}

// FuzzReadResponse: the parser never panics and never returns more than
// maxBody bytes, whatever the socket sends.
func FuzzReadResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	f.Add([]byte("HTTP/1.1 409 Conflict\r\n\r\n{\"message\":\"Container x is not paused\"}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, body, err := readResponse(bufio.NewReader(strings.NewReader(string(in))))
		if err == nil && len(body) > maxBody {
			t.Fatalf("body of %d bytes", len(body))
		}
	})
}

func TestNewDockerHost(t *testing.T) {
	t.Setenv("DOCKER_HOST", "")
	d, err := NewDocker("")
	if err != nil || d.Socket != "/var/run/docker.sock" {
		t.Fatalf("default: %+v %v", d, err)
	}
	t.Setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
	if d, err := NewDocker(""); err != nil || d.Socket != "/run/user/1000/docker.sock" {
		t.Fatalf("from DOCKER_HOST: %+v %v", d, err)
	}
	if d, err := NewDocker("unix:///srv/d.sock"); err != nil || d.Socket != "/srv/d.sock" {
		t.Fatalf("configured host wins over DOCKER_HOST: %+v %v", d, err)
	}
	for _, h := range []string{"tcp://10.0.0.1:2375", "ssh://vps", "unix://relative.sock", "/var/run/docker.sock"} {
		if _, err := NewDocker(h); err == nil || !strings.Contains(err.Error(), "only over its unix socket") {
			t.Errorf("NewDocker(%q) = %v, want a refusal that says unix sockets only", h, err)
		}
	}
}

// TestDialErrors: a missing socket and a socket nobody listens on (a
// crashed daemon) are told apart; permission denied cannot be provoked as
// root, so its message is checked on the mapped error.
func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	d := &Docker{Host: "unix://" + dir + "/absent.sock", Socket: dir + "/absent.sock"}
	err := d.Ping(context.Background(), time.Second)
	if err == nil || !strings.Contains(err.Error(), "docker socket "+d.Socket+" does not exist") {
		t.Errorf("missing socket: %v", err)
	}
	dead := filepath.Join(dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	d = &Docker{Host: "unix://" + dead, Socket: dead}
	if err := d.Ping(context.Background(), time.Second); err == nil || !strings.Contains(err.Error(), "nothing listens on docker socket "+dead) {
		t.Errorf("dead socket: %v", err)
	}
	perm := d.dialError(&os.PathError{Op: "connect", Path: dead, Err: syscall.EACCES})
	if !strings.Contains(perm.Error(), "permission denied on docker socket") || !strings.Contains(perm.Error(), "docker") || !errors.Is(perm, syscall.EACCES) {
		t.Errorf("permission denied: %v", perm)
	}
}

// fakeEngine serves the Engine API paths a test needs with Go's own HTTP
// server, which frames unsized answers with chunked encoding: the client
// must read both framings.
func fakeEngine(t *testing.T, h http.Handler) *Docker {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return &Docker{Host: "unix://" + sock, Socket: sock}
}

func TestDockerAgainstGoHTTPServer(t *testing.T) {
	var calls []string
	d := fakeEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, r.Method+" "+r.URL.RequestURI())
		switch {
		case r.URL.Path == "/containers/web/json":
			w.Write([]byte(`{"Id":"abc","Name":"/web","State":{"Running":true},`))
			w.(http.Flusher).Flush() // forces chunked encoding
			w.Write([]byte(`"Config":{"Healthcheck":{"Test":["CMD","/app","health"]}}}`))
		case r.URL.Path == "/containers/gone/json":
			w.WriteHeader(404)
			w.Write([]byte(`{"message":"No such container: gone"}`))
		case r.URL.Path == "/containers/web/unpause":
			w.WriteHeader(409)
			w.Write([]byte(`{"message":"Container abc is not paused"}`))
		case r.URL.Path == "/containers/web/stop":
			w.WriteHeader(304)
		default:
			w.WriteHeader(500)
			w.Write([]byte(`{"message":"unexpected"}`))
		}
	}))
	ctx := context.Background()
	c, err := d.Inspect(ctx, "web", time.Second)
	if err != nil || c.ID != "abc" || c.name() != "web" || !c.State.Running || !c.hasHealthcheck() {
		t.Fatalf("inspect: %+v %v", c, err)
	}
	if _, err := d.Inspect(ctx, "gone", time.Second); !errors.Is(err, ErrContainerNotFound) || !strings.Contains(err.Error(), "No such container: gone") {
		t.Errorf("inspect of a missing container: %v", err)
	}
	if err := d.Unpause(ctx, "web", time.Second); !errors.Is(err, ErrNotPaused) {
		t.Errorf("unpause of a running container: %v, want ErrNotPaused", err)
	}
	if err := d.Stop(ctx, "web", 3*time.Second); err != nil {
		t.Errorf("stop of a stopped container (304): %v", err)
	}
	if want := "POST /containers/web/stop?t=3"; calls[len(calls)-1] != want {
		t.Errorf("last call %q, want %q", calls[len(calls)-1], want)
	}
	if err := d.Pause(ctx, "web", time.Second); err == nil || !strings.Contains(err.Error(), "pause container web: docker daemon answered 500: unexpected") {
		t.Errorf("pause error: %v", err)
	}
}

// TestDockerTimeout: a daemon that never answers costs at most the
// per-call timeout, and the error says so.
func TestDockerTimeout(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	d := fakeEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	start := time.Now()
	err := d.Start(context.Background(), "web", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no answer from the docker daemon") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %v", took)
	}
}

func TestComposeOrder(t *testing.T) {
	mk := func(name, service, deps, created string) *Container {
		c := &Container{ID: name, Name: "/" + name, Created: created}
		c.Config.Labels = map[string]string{"com.docker.compose.service": service, "com.docker.compose.depends_on": deps}
		return c
	}
	// Created out of order (a recreate), with Pangolin's dependencies:
	// gerbil needs a healthy pangolin, traefik shares gerbil's network.
	cs := []*Container{
		mk("traefik", "traefik", "gerbil:service_started:false,pangolin:service_healthy:false", "2024-01-01T00:00:01Z"),
		mk("gerbil", "gerbil", "pangolin:service_healthy:false", "2024-01-01T00:00:03Z"),
		mk("pangolin", "pangolin", "", "2024-01-01T00:00:02Z"),
		mk("other", "other", "", "2024-01-01T00:00:00Z"),
	}
	var got []string
	for _, c := range composeOrder(cs) {
		got = append(got, c.name())
	}
	if want := "other pangolin gerbil traefik"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

func TestNewValidates(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{Mode: "freeze", Containers: []string{"a"}}, "want none, pause or stop"},
		{Options{Mode: "pause", Units: []string{"a.service"}}, "cannot pause systemd units"},
		{Options{Mode: "stop"}, "no containers, compose_project or units"},
		{Options{Mode: "stop", Containers: []string{"-rf"}}, "not a Docker container name"},
		{Options{Mode: "stop", Units: []string{"--now"}}, "not a systemd unit name"},
		{Options{Mode: "stop", ComposeProject: "Bad Name"}, "not a Compose project name"},
		{Options{Mode: "stop", Containers: []string{"a"}, DockerHost: "tcp://x:1"}, "only over its unix socket"},
	} {
		if _, err := New(c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want %q", c.opts, err, c.want)
		}
	}
	if q, err := New(Options{Mode: "none"}); err != nil || q.Describe() != "none" {
		t.Errorf("none: %v %v", q, err)
	}
}

// standIn writes a stand-in systemctl (no systemd runs here) that records
// its calls and keeps unit states in files; a unit named *stuck* does not
// stop.
func standIn(t *testing.T, units map[string]string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	script := `#!/bin/bash
dir="$(dirname "$0")"
echo "$*" >> "$dir/calls.log"
unit="${!#}"
state="$dir/$unit"
case "$1" in
show) if [[ -f "$state" ]]; then echo LoadState=loaded; echo "ActiveState=$(cat "$state")"; else echo LoadState=not-found; echo ActiveState=inactive; fi ;;
stop) [[ "$unit" == *stuck* ]] && exit 0; echo inactive > "$state" ;;
start) echo active > "$state" ;;
esac
`
	path = filepath.Join(dir, "systemctl")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for u, s := range units {
		if err := os.WriteFile(filepath.Join(dir, u), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return path, dir
}

func calls(t *testing.T, dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "calls.log"))
	return strings.TrimSpace(string(b))
}

func TestUnitsPlanQuiesceResume(t *testing.T) {
	sc, dir := standIn(t, map[string]string{"a.service": "active", "b.service": "inactive", "c.service": "activating"})
	q, err := New(Options{Mode: "stop", Units: []string{"a.service", "b.service", "c.service"}, Systemctl: sc})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	plan, err := q.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(plan)
	if want := `[{"kind":"unit","name":"a.service","action":"stop"},{"kind":"unit","name":"c.service","action":"stop"}]`; string(b) != want {
		t.Fatalf("plan %s, want %s", b, want)
	}
	if err := q.Quiesce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Resume(ctx); err != nil { // twice is harmless and does nothing
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"show --property=LoadState,ActiveState -- a.service",
		"show --property=LoadState,ActiveState -- b.service",
		"show --property=LoadState,ActiveState -- c.service",
		"stop -- c.service", "show --property=LoadState,ActiveState -- c.service",
		"stop -- a.service", "show --property=LoadState,ActiveState -- a.service",
		"start -- a.service", "start -- c.service",
	}, "\n")
	if got := calls(t, dir); got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
	if steps := q.(Stepper).Steps(); len(steps) != 4 || steps[0].Name != "stop c.service" || steps[3].Name != "start c.service" {
		t.Errorf("steps %+v", steps)
	}
}

func TestUnitErrors(t *testing.T) {
	sc, _ := standIn(t, map[string]string{"stuck.service": "active"})
	ctx := context.Background()
	q, _ := New(Options{Mode: "stop", Units: []string{"missing.service"}, Systemctl: sc})
	if _, err := q.Plan(ctx); err == nil || !strings.Contains(err.Error(), "unit missing.service not found") {
		t.Errorf("missing unit: %v", err)
	}
	q, _ = New(Options{Mode: "stop", Units: []string{"stuck.service"}, Systemctl: sc})
	if err := q.Quiesce(ctx); err == nil || !strings.Contains(err.Error(), "unit stuck.service will not stop") {
		t.Errorf("stuck unit: %v", err)
	}
	q, _ = New(Options{Mode: "stop", Units: []string{"a.service"}, Systemctl: filepath.Join(t.TempDir(), "nope")})
	if _, err := q.Plan(ctx); err == nil || !strings.Contains(err.Error(), "unit a.service") {
		t.Errorf("missing systemctl: %v", err)
	}
}

func TestResumeTargetsTriesEveryTarget(t *testing.T) {
	sc, dir := standIn(t, map[string]string{"a.service": "inactive", "b.service": "inactive"})
	t.Setenv("PATH", filepath.Dir(sc)+":"+os.Getenv("PATH"))
	dead := filepath.Join(t.TempDir(), "absent.sock")
	err := ResumeTargets(context.Background(), Options{Mode: "stop", DockerHost: "unix://" + dead, Timeout: time.Second}, []Target{
		{Kind: KindUnit, Name: "a.service", Action: "stop"},
		{Kind: KindContainer, Name: "web", Action: "stop"},
		{Kind: KindUnit, Name: "b.service", Action: "stop"},
	})
	if err == nil || !strings.Contains(err.Error(), "start container web") {
		t.Errorf("err = %v, want the container's failure", err)
	}
	if got := calls(t, dir); got != "start -- a.service\nstart -- b.service" {
		t.Errorf("calls %q: both units must be started despite the container's failure", got)
	}
}

// TestResumeSkipsRemovedContainer: a container removed during the freeze
// (compose down; NixOS removes the stack's containers at shutdown) is
// skipped, not an error that would keep the guard failing forever.
func TestResumeSkipsRemovedContainer(t *testing.T) {
	d := fakeEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		w.Write([]byte(`{"message":"No such container: web"}`))
	}))
	s := &Set{opts: Options{Mode: "stop"}, docker: d, planned: []Target{{Kind: KindContainer, Name: "web", Action: "stop"}}, planDone: true, touched: map[int]bool{0: true}}
	if err := s.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Steps(); len(st) != 1 || !strings.Contains(st[0].Name, "container gone") {
		t.Errorf("steps %+v", st)
	}
}

// TestPauseModeAllAtOnce: pause mode pauses and unpauses every container
// at once; one found not paused on the way back (the daemon restarted) is
// started instead.
func TestPauseModeAllAtOnce(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	inFlight, maxInFlight := 0, 0
	d := fakeEngine(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		inFlight++
		if inFlight > maxInFlight {
			maxInFlight = inFlight
		}
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		if r.URL.Path == "/containers/b/unpause" {
			w.WriteHeader(409)
			w.Write([]byte(`{"message":"Container b is not paused"}`))
			return
		}
		w.WriteHeader(204)
	}))
	targets := []Target{{Kind: KindContainer, Name: "a", Action: "pause"}, {Kind: KindContainer, Name: "b", Action: "pause"}, {Kind: KindContainer, Name: "c", Action: "pause"}}
	s := &Set{opts: Options{Mode: "pause"}, docker: d, planned: targets, planDone: true, touched: map[int]bool{}}
	ctx := context.Background()
	if err := s.Quiesce(ctx); err != nil {
		t.Fatal(err)
	}
	if maxInFlight != 3 {
		t.Errorf("%d pauses in flight at most, want 3 at once", maxInFlight)
	}
	calls = nil
	if err := s.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	slices.Sort(calls)
	if got := strings.Join(calls, ","); got != "POST /containers/a/unpause,POST /containers/b/start,POST /containers/b/unpause,POST /containers/c/unpause" {
		t.Errorf("resume calls %s", got)
	}
	var names []string
	for _, st := range s.Steps() {
		names = append(names, st.Name)
	}
	if got := strings.Join(names, ","); got != "pause c,pause b,pause a,unpause a,unpause c,start b" {
		t.Errorf("steps %s", got)
	}
}
