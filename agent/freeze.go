package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/proto"
)

// FrozenMarker is written to the state dir for the duration of a freeze. If
// the agent dies inside the window, `haul-agent recover` (run by the guard)
// finds it and resumes the targets.
type FrozenMarker struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Mode    string    `json:"mode"`
}

// FrozenMarkerPath is where the marker lives.
func (c *Config) FrozenMarkerPath() string { return filepath.Join(c.StateDir, "frozen.json") }

// Freeze quiesces q, runs sync, and resumes q: always, whatever happens in
// between, with a context of its own so that a cancelled session (the
// puller went away, a signal) still brings the services back. It returns
// the phases and the window from the first quiesce call to the last resume
// returning.
func Freeze(ctx context.Context, q quiesce.Quiescer, cfg *Config, sync func(context.Context) (mirror.Stats, error)) (stats mirror.Stats, phases []proto.Phase, window time.Duration, err error) {
	marker, _ := json.Marshal(FrozenMarker{PID: os.Getpid(), Started: time.Now(), Mode: cfg.Quiesce.Mode})
	if err := os.WriteFile(cfg.FrozenMarkerPath(), marker, 0o600); err != nil {
		return stats, nil, 0, coded(proto.CodeIO, "write freeze marker: %v", err)
	}

	t0 := time.Now()
	resumed := false
	resume := func() error {
		if resumed {
			return nil
		}
		resumed = true
		rctx, cancel := context.WithTimeout(context.Background(), cfg.Quiesce.Timeout.Or(30*time.Second)*4)
		defer cancel()
		t := time.Now()
		rerr := q.Resume(rctx)
		phases = append(phases, proto.Phase{Name: "resume", MS: ms(time.Since(t))})
		window = time.Since(t0)
		if rerr == nil {
			_ = os.Remove(cfg.FrozenMarkerPath())
		}
		return rerr
	}
	defer func() {
		if rerr := resume(); rerr != nil {
			err = errors.Join(err, coded(proto.CodeFreeze, "resume %s: %v (the guard retries: haul-agent recover)", q.Describe(), rerr))
		}
	}()

	if qerr := q.Quiesce(ctx); qerr != nil {
		phases = append(phases, proto.Phase{Name: "quiesce", MS: ms(time.Since(t0))})
		return stats, phases, 0, coded(proto.CodeFreeze, "quiesce %s: %v", q.Describe(), qerr)
	}
	phases = append(phases, proto.Phase{Name: "quiesce", MS: ms(time.Since(t0))})

	t := time.Now()
	stats, err = sync(ctx)
	phases = append(phases, proto.Phase{Name: "sync", MS: ms(time.Since(t))})
	if err != nil {
		err = coded(proto.CodeIO, "sync mirror while frozen: %v", err)
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("freeze interrupted: %w", err)
		}
	}
	return stats, phases, window, err
}
