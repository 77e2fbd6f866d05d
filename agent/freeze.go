package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/proto"
)

// FrozenMarker is written to the state dir before the first target is
// quiesced and removed once every target is back. If the agent dies inside
// the window, the guard (`haul-agent recover`) finds it and resumes exactly
// the targets it lists: those that were running when the freeze began.
//
// It lives under one of two names. frozen.json: the freeze is on. The agent
// renames it to thawing.json when its sync is done, before resuming; a guard
// that gives up waiting (guard_timeout) renames it first. Whoever wins the
// rename owns the thaw, so the agent learns when the guard resumed the
// services under a sync that was still running, and discards that backup.
type FrozenMarker struct {
	PID int `json:"pid"`
	// PIDStart is the agent's start time (clock ticks since boot), so a
	// reused PID is not taken for the agent.
	PIDStart uint64    `json:"pid_start,omitempty"`
	Started  time.Time `json:"started"`
	// Deadline is Started plus guard_timeout: past it the guard resumes the
	// targets even if the agent still runs.
	Deadline   time.Time        `json:"deadline"`
	Mode       string           `json:"mode"`
	DockerHost string           `json:"docker_host,omitempty"`
	Targets    []quiesce.Target `json:"targets"`
}

// TestFreezeHoldEnv is a test-only hook: a Go duration (at most 60s) that a
// freeze waits, with its targets quiesced, after its sync. Tests use it to
// kill the agent or cut the connection "mid-freeze". Never set it in
// production: it lengthens the downtime.
const TestFreezeHoldEnv = "HAUL_AGENT_TEST_FREEZE_HOLD"

// Freeze quiesces q, runs sync, and resumes q: always, whatever happens in
// between, with a context of its own so that a cancelled session (the
// puller went away, a signal) still brings the services back. Before the
// first target is touched it records the running targets in the frozen
// marker and starts the watchdog (see Watchdog), so that even a SIGKILL of
// the agent is undone. It returns the phases and the window from the first
// quiesce call to the last resume returning.
func Freeze(ctx context.Context, q quiesce.Quiescer, cfg *Config, sync func(context.Context) (mirror.Stats, error)) (stats mirror.Stats, phases []proto.Phase, window time.Duration, err error) {
	if err := recoverLeftover(ctx, cfg); err != nil {
		return stats, nil, 0, err
	}
	tp := time.Now()
	targets, err := q.Plan(ctx)
	if err != nil {
		return stats, nil, 0, proto.Errorf(proto.CodeFreeze, "quiesce %s: %v; nothing was stopped", q.Describe(), err)
	}
	phases = append(phases, proto.Phase{Name: "plan", MS: ms(time.Since(tp))})
	timeout := cfg.Quiesce.Timeout.Or(30 * time.Second)
	guarded := len(targets) > 0
	if guarded {
		now := time.Now()
		m := FrozenMarker{
			PID: os.Getpid(), PIDStart: procStartTime(os.Getpid()),
			Started: now, Deadline: now.Add(cfg.Quiesce.GuardTimeout.Or(30 * time.Second)),
			Mode: cfg.Quiesce.Mode, DockerHost: dockerHost(cfg), Targets: targets,
		}
		if err := writeMarker(cfg.FrozenMarkerPath(), &m); err != nil {
			return stats, phases, 0, proto.Errorf(proto.CodeIO, "write freeze marker: %v; nothing was stopped", err)
		}
		if err := startWatchdog(cfg); err != nil {
			_ = os.Remove(cfg.FrozenMarkerPath())
			return stats, phases, 0, proto.Errorf(proto.CodeFreeze, "%v; nothing was stopped", err)
		}
	}
	hold, holdErr := testFreezeHold()
	if holdErr != nil {
		if guarded {
			_ = os.Remove(cfg.FrozenMarkerPath())
		}
		return stats, phases, 0, proto.Errorf(proto.CodeFreeze, "%v", holdErr)
	}

	var steps func() []quiesce.Step
	if s, ok := q.(quiesce.Stepper); ok {
		steps = s.Steps
	}
	t0 := time.Now()
	resumed := false
	resume := func() error {
		if resumed {
			return nil
		}
		resumed = true
		takenOver := false
		if guarded {
			// Claim the thaw. If the guard has claimed it, it resumed the
			// targets while the sync may still have been copying.
			if rerr := os.Rename(cfg.FrozenMarkerPath(), cfg.ThawingMarkerPath()); errors.Is(rerr, os.ErrNotExist) {
				takenOver = true
			}
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout*time.Duration(len(targets)+2))
		defer cancel()
		t := time.Now()
		nsteps := 0
		if steps != nil {
			nsteps = len(steps())
		}
		rerr := q.Resume(rctx)
		phases = append(phases, proto.Phase{Name: "resume", MS: ms(time.Since(t))})
		window = time.Since(t0)
		if steps != nil {
			phases = append(phases, stepPhases(steps()[nsteps:])...)
		}
		if guarded && rerr == nil && !takenOver {
			_ = os.Remove(cfg.ThawingMarkerPath())
		}
		if takenOver {
			rerr = errors.Join(rerr, fmt.Errorf("the freeze outlasted quiesce.guard_timeout (%v) and the guard resumed the services while the mirror was still being synced, so this backup is discarded; raise guard_timeout or find what slows the sync", cfg.Quiesce.GuardTimeout.Or(30*time.Second)))
		}
		return rerr
	}
	defer func() {
		if rerr := resume(); rerr != nil {
			err = errors.Join(err, proto.Errorf(proto.CodeFreeze, "resume %s: %v (haul-agent recover retries it)", q.Describe(), rerr))
			stats = mirror.Stats{}
		}
	}()

	qerr := q.Quiesce(ctx)
	phases = append(phases, proto.Phase{Name: "quiesce", MS: ms(time.Since(t0))})
	if steps != nil {
		phases = append(phases, stepPhases(steps())...)
	}
	if qerr != nil {
		return stats, phases, 0, proto.Errorf(proto.CodeFreeze, "quiesce %s: %v", q.Describe(), qerr)
	}

	t := time.Now()
	stats, err = sync(ctx)
	phases = append(phases, proto.Phase{Name: "sync", MS: ms(time.Since(t))})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return stats, phases, 0, proto.Errorf(proto.CodeCancelled, "freeze interrupted (the puller went away or the agent got a signal): %v", err)
		}
		return stats, phases, 0, proto.Errorf(proto.CodeIO, "sync mirror while frozen: %v", err)
	}
	if hold > 0 {
		t := time.Now()
		select {
		case <-time.After(hold):
		case <-ctx.Done():
		}
		phases = append(phases, proto.Phase{Name: "test-hold", MS: ms(time.Since(t))})
		if ctx.Err() != nil {
			return stats, phases, 0, proto.Errorf(proto.CodeCancelled, "freeze interrupted (the puller went away or the agent got a signal): %v", ctx.Err())
		}
	}
	if err := resume(); err != nil {
		return mirror.Stats{}, phases, window, proto.Errorf(proto.CodeFreeze, "resume %s: %v (haul-agent recover retries it)", q.Describe(), err)
	}
	return stats, phases, window, nil
}

func stepPhases(steps []quiesce.Step) []proto.Phase {
	out := make([]proto.Phase, len(steps))
	for i, s := range steps {
		out[i] = proto.Phase{Name: s.Name, MS: ms(s.Took)}
	}
	return out
}

// dockerHost is the Docker endpoint the freeze uses, recorded in the marker
// so that a guard started without the agent's environment (at boot) talks
// to the same daemon.
func dockerHost(cfg *Config) string {
	if cfg.Quiesce.DockerHost != "" {
		return cfg.Quiesce.DockerHost
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return quiesce.DefaultDockerHost
}

func testFreezeHold() (time.Duration, error) {
	v := os.Getenv(TestFreezeHoldEnv)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > time.Minute {
		return 0, fmt.Errorf("%s=%q (a test-only hook) must be a duration up to 1m; unset it", TestFreezeHoldEnv, v)
	}
	return d, nil
}
