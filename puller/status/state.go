package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haulproject/haul/internal/atomicfile"
)

// Run is one host's pull as haul backup records it.
type Run struct {
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	OK         bool      `json:"ok"`
	Error      string    `json:"error,omitempty"`
	SnapshotID string    `json:"snapshot_id,omitempty"`
	DurationMS float64   `json:"duration_ms"`
	Files      int64     `json:"files"`
	Bytes      int64     `json:"bytes"`
	// WireBytes is what crossed the transport, both ways.
	WireBytes int64 `json:"wire_bytes"`
	// BytesAdded is what the repository grew by (packed).
	BytesAdded int64   `json:"bytes_added"`
	FreezeMS   float64 `json:"freeze_ms"`
}

// HostState is what haul remembers about a host between runs, in the
// cache dir: <cache_dir>/<repository id>/hosts/<host>.json.
type HostState struct {
	Host        string `json:"host"`
	LastRun     *Run   `json:"last_run"`
	LastSuccess *Run   `json:"last_success"`
	// LastDrill is the last `haul drill` of the host; LastGoodDrill the
	// last one that found nothing wrong.
	LastDrill     *Drill `json:"last_drill,omitempty"`
	LastGoodDrill *Drill `json:"last_good_drill,omitempty"`
}

// Drill is one restore drill as `haul drill` records it.
type Drill struct {
	Finished   time.Time `json:"finished"`
	OK         bool      `json:"ok"`
	SnapshotID string    `json:"snapshot_id,omitempty"`
	Files      int64     `json:"files"`
	Bytes      int64     `json:"bytes"`
	// Problems lists what the drill found wrong (empty when OK).
	Problems   []string `json:"problems,omitempty"`
	DurationMS float64  `json:"duration_ms"`
}

// StatePath is where a host's state lives.
func StatePath(cacheDir, repoID, host string) string {
	return filepath.Join(cacheDir, repoID, "hosts", host+".json")
}

// LoadState reads a host's state; a host never run has an empty one.
func LoadState(cacheDir, repoID, host string) (*HostState, error) {
	st := &HostState{Host: host}
	b, err := os.ReadFile(StatePath(cacheDir, repoID, host))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of host %s: %w", host, err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state of host %s (%s) is corrupt: %w; delete the file to start afresh", host, StatePath(cacheDir, repoID, host), err)
	}
	st.Host = host
	return st, nil
}

// RecordRun stores a run as the host's last run (and last success when it
// succeeded) and returns the new state. The file is replaced atomically.
func RecordRun(cacheDir, repoID, host string, run Run) (*HostState, error) {
	st, err := LoadState(cacheDir, repoID, host)
	if err != nil {
		// A corrupt state file must not stop backups: start afresh.
		st = &HostState{Host: host}
	}
	st.LastRun = &run
	if run.OK {
		st.LastSuccess = &run
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return st, err
	}
	path := StatePath(cacheDir, repoID, host)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return st, err
	}
	return st, atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// RecordDrill stores a drill as the host's last drill (and last good one
// when it found nothing wrong).
func RecordDrill(cacheDir, repoID, host string, d Drill) (*HostState, error) {
	st, err := LoadState(cacheDir, repoID, host)
	if err != nil {
		st = &HostState{Host: host}
	}
	st.LastDrill = &d
	if d.OK {
		st.LastGoodDrill = &d
	}
	return st, saveState(cacheDir, repoID, st)
}

func saveState(cacheDir, repoID string, st *HostState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := StatePath(cacheDir, repoID, st.Host)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}
