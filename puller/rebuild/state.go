package rebuild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haulproject/haul/internal/atomicfile"
	"github.com/haulproject/haul/internal/flock"
)

// Phase statuses.
const (
	StatusPending = "pending"
	StatusDone    = "done"
	StatusSkipped = "skipped"
	StatusFailed  = "failed"
)

// PhaseResult is one phase's outcome.
type PhaseResult struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	// Run is the run (1, 2, …) that finished the phase, or last tried it.
	Run     int       `json:"run,omitempty"`
	Started time.Time `json:"started,omitzero"`
	MS      float64   `json:"ms"`
	Detail  string    `json:"detail,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// Result is a rebuild's record. While a rebuild is unfinished it is also
// its state file, so a rerun knows what is done and what was decided (the
// snapshot, the old server).
type Result struct {
	Host   string `json:"host"`
	Server string `json:"server"`
	DryRun bool   `json:"dry_run,omitempty"`
	// Started is when the first run began; Runs counts the runs so far.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Runs     int       `json:"runs"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	// Snapshot is what the restore puts back: the final backup's
	// snapshot, else the one preflight found.
	Snapshot  *SnapshotInfo  `json:"snapshot,omitempty"`
	Preflight *Preflight     `json:"preflight,omitempty"`
	Phases    []*PhaseResult `json:"phases"`
	// NewServerID is the server tofu made.
	NewServerID int64 `json:"new_server_id,omitempty"`
	// PhasesMS adds up the phases' times; RecoveryMS is the wall-clock
	// time from the first run's start to the healthy end, pauses between
	// runs included.
	PhasesMS   float64 `json:"phases_ms"`
	RecoveryMS float64 `json:"recovery_ms,omitempty"`
	// Plan says what the phases still to run will do.
	Plan []string `json:"plan,omitempty"`
}

// Phase returns the named phase's record.
func (r *Result) Phase(name string) *PhaseResult {
	for _, p := range r.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func newResult(host, server string, now time.Time) *Result {
	r := &Result{Host: host, Server: server, Started: now}
	for _, name := range Phases {
		r.Phases = append(r.Phases, &PhaseResult{Name: name, Status: StatusPending})
	}
	return r
}

// StatePath is where an unfinished rebuild of host is recorded.
func StatePath(cacheDir, host string) string {
	return filepath.Join(cacheDir, "rebuild", host+".json")
}

func loadState(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rebuild state: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("rebuild state %s is corrupt (%v): check what the last run did, then start over with --restart", path, err)
	}
	if len(r.Phases) != len(Phases) {
		return nil, fmt.Errorf("rebuild state %s was written by another haul version: finish by hand or start over with --restart", path)
	}
	for i, p := range r.Phases {
		if p.Name != Phases[i] {
			return nil, fmt.Errorf("rebuild state %s was written by another haul version: finish by hand or start over with --restart", path)
		}
	}
	return &r, nil
}

func saveState(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save rebuild state: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save rebuild state: %w", err)
	}
	return nil
}

// lockState makes sure only one rebuild of a host runs at a time.
func lockState(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	l, err := flock.Acquire(context.Background(), path+".lock", flock.Options{})
	if errors.Is(err, flock.ErrHeld) {
		return nil, fmt.Errorf("another `haul rebuild` of this host is running (it holds %s.lock); let it finish", path)
	}
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}
