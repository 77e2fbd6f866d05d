package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
)

// fakeQuiescer records the calls Freeze makes and the context each got.
type fakeQuiescer struct {
	mu         sync.Mutex
	targets    []quiesce.Target
	calls      []string
	quiesceErr error
	resumeErr  error
	resumeCtx  error // ctx.Err() seen by Resume
}

func (q *fakeQuiescer) note(s string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.calls = append(q.calls, s)
}

func (q *fakeQuiescer) Plan(context.Context) ([]quiesce.Target, error) {
	q.note("plan")
	return q.targets, nil
}
func (q *fakeQuiescer) Quiesce(context.Context) error { q.note("quiesce"); return q.quiesceErr }
func (q *fakeQuiescer) Resume(ctx context.Context) error {
	q.note("resume")
	q.resumeCtx = ctx.Err()
	return q.resumeErr
}
func (q *fakeQuiescer) Describe() string { return "fake" }

func (q *fakeQuiescer) got() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.calls, " ")
}

func freezeConfig(t *testing.T) *Config {
	t.Helper()
	dir := t.TempDir()
	cfg, err := ParseConfig([]byte(`{"data_paths":["`+filepath.Join(dir, "data")+`"],"state_dir":"`+filepath.Join(dir, "state")+`",
		"quiesce":{"mode":"stop","containers":["web"],"guard_timeout":"30s"}}`), "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return cfg
}

var web = []quiesce.Target{{Kind: quiesce.KindContainer, Name: "web", Action: "stop"}}

func markersLeft(cfg *Config) []string {
	var left []string
	for _, p := range []string{cfg.FrozenMarkerPath(), cfg.ThawingMarkerPath()} {
		if _, err := os.Stat(p); err == nil {
			left = append(left, filepath.Base(p))
		}
	}
	return left
}

// TestFreezeRecordsTargetsWhileFrozen: during the sync the marker names the
// planned targets and this process; afterwards it is gone.
func TestFreezeRecordsTargetsWhileFrozen(t *testing.T) {
	cfg := freezeConfig(t)
	q := &fakeQuiescer{targets: web}
	var seen *FrozenMarker
	_, phases, window, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) {
		m, err := readMarker(cfg.FrozenMarkerPath())
		if err != nil {
			t.Errorf("no marker during the sync: %v", err)
		}
		seen = m
		return mirror.Stats{Copied: 1}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.PID != os.Getpid() || seen.PIDStart == 0 || len(seen.Targets) != 1 || seen.Targets[0].Name != "web" ||
		seen.Deadline.Sub(seen.Started) != 30*time.Second || seen.DockerHost == "" {
		t.Errorf("marker during the freeze: %+v", seen)
	}
	if got := q.got(); got != "plan quiesce resume" {
		t.Errorf("calls %q", got)
	}
	if left := markersLeft(cfg); len(left) != 0 {
		t.Errorf("markers left after a clean freeze: %v", left)
	}
	if window <= 0 {
		t.Errorf("window %v", window)
	}
	var names []string
	for _, p := range phases {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "plan,quiesce,sync,resume" {
		t.Errorf("phases %v", names)
	}
}

// TestFreezeAlwaysResumes: a failing sync, a failing quiesce and a
// cancelled session (the puller went away, a signal) all end in Resume,
// with a context that is not cancelled.
func TestFreezeAlwaysResumes(t *testing.T) {
	for _, c := range []struct {
		name       string
		quiesceErr error
		sync       func(ctx context.Context) (mirror.Stats, error)
		cancel     bool
		want       string
	}{
		{name: "sync fails", sync: func(context.Context) (mirror.Stats, error) { return mirror.Stats{}, errors.New("disk on fire") }, want: "disk on fire"},
		{name: "quiesce fails", quiesceErr: errors.New("unit x will not stop"), want: "unit x will not stop"},
		{name: "session cancelled", cancel: true, sync: func(ctx context.Context) (mirror.Stats, error) {
			<-ctx.Done()
			return mirror.Stats{}, ctx.Err()
		}, want: "freeze interrupted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := freezeConfig(t)
			q := &fakeQuiescer{targets: web, quiesceErr: c.quiesceErr}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sync := c.sync
			if sync == nil {
				sync = func(context.Context) (mirror.Stats, error) { return mirror.Stats{}, nil }
			}
			if c.cancel {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			_, _, _, err := Freeze(ctx, q, cfg, sync)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if !strings.HasSuffix(q.got(), "resume") || q.resumeCtx != nil {
				t.Errorf("calls %q, resume ctx err %v: want a resume with a live context", q.got(), q.resumeCtx)
			}
			if left := markersLeft(cfg); len(left) != 0 {
				t.Errorf("markers left: %v", left)
			}
		})
	}
}

// TestFreezeResumeFailureKeepsMarker: when resuming fails the marker stays
// (as thawing.json) for the guard to retry, and the error says so.
func TestFreezeResumeFailureKeepsMarker(t *testing.T) {
	cfg := freezeConfig(t)
	q := &fakeQuiescer{targets: web, resumeErr: errors.New("docker is gone")}
	_, _, _, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) { return mirror.Stats{}, nil })
	if err == nil || !strings.Contains(err.Error(), "docker is gone") || !strings.Contains(err.Error(), "haul-agent recover") {
		t.Fatalf("err = %v", err)
	}
	if left := markersLeft(cfg); len(left) != 1 || left[0] != "thawing.json" {
		t.Errorf("markers left %v, want thawing.json", left)
	}
}

// TestFreezeTakenOverByGuard: when the guard claimed the marker (the
// freeze outlasted guard_timeout), the backup is discarded.
func TestFreezeTakenOverByGuard(t *testing.T) {
	cfg := freezeConfig(t)
	q := &fakeQuiescer{targets: web}
	stats, _, _, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) {
		// What the guard does first when it gives up waiting.
		if err := os.Rename(cfg.FrozenMarkerPath(), cfg.ThawingMarkerPath()); err != nil {
			t.Fatal(err)
		}
		return mirror.Stats{Copied: 3}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "outlasted quiesce.guard_timeout") || stats.Copied != 0 {
		t.Fatalf("err = %v, stats %+v: want the backup discarded", err, stats)
	}
	if !strings.HasSuffix(q.got(), "resume") {
		t.Errorf("calls %q: the agent must resume too", q.got())
	}
}

// TestFreezeNothingRunning: with no running target there is nothing to
// guard: no marker, no watchdog.
func TestFreezeNothingRunning(t *testing.T) {
	cfg := freezeConfig(t)
	Watchdog = WatchdogSpec{Exe: "/nonexistent/haul-agent"} // would fail if started
	defer func() { Watchdog = WatchdogSpec{} }()
	q := &fakeQuiescer{}
	_, _, _, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) {
		if left := markersLeft(cfg); len(left) != 0 {
			t.Errorf("marker written for an empty plan: %v", left)
		}
		return mirror.Stats{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFreezeRefusedWithoutWatchdog: a watchdog that cannot start stops the
// freeze before anything is touched.
func TestFreezeRefusedWithoutWatchdog(t *testing.T) {
	cfg := freezeConfig(t)
	Watchdog = WatchdogSpec{Exe: "/nonexistent/haul-agent", ConfigPath: "/x.json"}
	defer func() { Watchdog = WatchdogSpec{} }()
	q := &fakeQuiescer{targets: web}
	_, _, _, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) { return mirror.Stats{}, nil })
	if err == nil || !strings.Contains(err.Error(), "watchdog") || !strings.Contains(err.Error(), "nothing was stopped") {
		t.Fatalf("err = %v", err)
	}
	if got := q.got(); got != "plan" {
		t.Errorf("calls %q: nothing may be quiesced", got)
	}
	if left := markersLeft(cfg); len(left) != 0 {
		t.Errorf("markers left: %v", left)
	}
}

// TestFreezeHoldHook: the test-only hold keeps the targets quiesced after
// the sync, and a bad value is refused before anything is stopped.
func TestFreezeHoldHook(t *testing.T) {
	cfg := freezeConfig(t)
	t.Setenv(TestFreezeHoldEnv, "150ms")
	q := &fakeQuiescer{targets: web}
	start := time.Now()
	_, phases, _, err := Freeze(context.Background(), q, cfg, func(context.Context) (mirror.Stats, error) { return mirror.Stats{}, nil })
	if err != nil || time.Since(start) < 150*time.Millisecond || phases[len(phases)-2].Name != "test-hold" {
		t.Fatalf("err %v, phases %+v", err, phases)
	}
	t.Setenv(TestFreezeHoldEnv, "forever")
	q = &fakeQuiescer{targets: web}
	if _, _, _, err := Freeze(context.Background(), q, cfg, nil); err == nil || !strings.Contains(err.Error(), TestFreezeHoldEnv) || q.got() != "plan" {
		t.Fatalf("err %v, calls %q", err, q.got())
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}
