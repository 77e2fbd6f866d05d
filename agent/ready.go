package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haulproject/haul/internal/atomicfile"
	"github.com/haulproject/haul/internal/version"
	"github.com/haulproject/haul/proto"
)

// ReadyMarker is the content of the ready marker. The file's existence is
// what counts: the stack's units require it (ConditionPathExists or a path
// unit), so a fresh machine does not start Pangolin on empty data, and the
// agent refuses a restore onto a ready host unless allow_inplace_restore is
// set. The content says how the host became ready.
type ReadyMarker struct {
	// By is "restore" (a restore swapped data in), "mark" (the puller
	// marked the host over the restore key) or "mark-ready" (the
	// `haul-agent mark-ready` command on the host).
	By           string    `json:"by"`
	Host         string    `json:"host"`
	Time         time.Time `json:"time"`
	Agent        string    `json:"agent"`
	Snapshot     string    `json:"snapshot,omitempty"`
	SnapshotHost string    `json:"snapshot_host,omitempty"`
	SnapshotTime time.Time `json:"snapshot_time,omitzero"`
}

// Ready reports whether the host's ready marker exists.
func (c *Config) Ready() bool {
	_, err := os.Stat(c.ReadyMarker)
	return err == nil
}

// WriteReadyMarker writes the ready marker atomically and returns its path.
// Its directory is created if missing (the state dir, by default, 0700).
func WriteReadyMarker(cfg *Config, m ReadyMarker) (string, error) {
	m.Host = cfg.Host
	m.Agent = "haul-agent " + version.Version
	if m.Time.IsZero() {
		m.Time = time.Now().UTC()
	}
	dir := filepath.Dir(cfg.ReadyMarker)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		mode := os.FileMode(0o755)
		if dir == cfg.StateDir {
			mode = 0o700
		}
		if err := os.MkdirAll(dir, mode); err != nil {
			return "", proto.Errorf(proto.CodeIO, "create the ready marker's directory: %v", err)
		}
	}
	if err := atomicfile.WriteJSON(cfg.ReadyMarker, &m, 0o644); err != nil {
		return "", proto.Errorf(proto.CodeIO, "write ready marker %s: %v", cfg.ReadyMarker, err)
	}
	return cfg.ReadyMarker, nil
}

// MarkReady is `haul-agent mark-ready`: it marks a fresh install as
// initialised without a restore. It reports whether the marker was written
// (false: the host was already ready, and the marker is left as it is).
func MarkReady(cfg *Config) (bool, error) {
	if cfg.Ready() {
		return false, nil
	}
	if _, err := WriteReadyMarker(cfg, ReadyMarker{By: "mark-ready"}); err != nil {
		return false, fmt.Errorf("mark %s ready: %w", cfg.Host, err)
	}
	return true, nil
}
