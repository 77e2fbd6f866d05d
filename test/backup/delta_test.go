package backup_test

import (
	"encoding/json"
	"github.com/haulproject/haul/proto"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/internal/workload"
)

// TestDeltaSnapshotsReadByRestic: SQLite page churn travels as deltas
// over the real sshd, and the restic CLI checks every snapshot with
// --read-data and restores each one equal to the data it was taken from.
func TestDeltaSnapshotsReadByRestic(t *testing.T) {
	e := newEnv(t)
	_, err := workload.Generate(e.data, workload.Options{TargetSize: 12 << 20, Seed: 3})
	must(t, err)
	e.backup()

	type step struct {
		name   string
		change func() (string, error)
	}
	steps := []step{
		{"rows", func() (string, error) { return workload.ChangeRows(e.data, 300, 4) }},
		{"acme", func() (string, error) { return workload.RenewACME(e.data, 5) }},
		{"pages", func() (string, error) { return workload.RewriteFraction(e.data, 0.05, 6) }},
	}
	deltas := 0
	for _, s := range steps {
		desc, err := s.change()
		must(t, err)
		// Keep a copy of the tree as this snapshot should hold it.
		want := filepath.Join(t.TempDir(), "want")
		must(t, copyTree(e.data, want))
		var r struct {
			Hosts []struct {
				SnapshotID string `json:"snapshot_id"`
				Deltas     int    `json:"deltas"`
				Fallbacks  int    `json:"delta_fallbacks"`
				Version    int    `json:"protocol_version"`
				Wire       struct {
					BytesIn int64 `json:"bytes_in"`
				} `json:"wire"`
				ChunkBytes int64 `json:"chunk_bytes"`
			} `json:"hosts"`
		}
		must(t, json.Unmarshal([]byte(e.haul("backup", "--json")), &r))
		h := r.Hosts[0]
		t.Logf("%s (%s): %d deltas, %d fallbacks, %d bytes in for %d chunk bytes", s.name, desc, h.Deltas, h.Fallbacks, h.Wire.BytesIn, h.ChunkBytes)
		if h.Version < proto.DeltaVersion || h.Fallbacks != 0 {
			t.Fatalf("%s: protocol %d, %d fallbacks", s.name, h.Version, h.Fallbacks)
		}
		deltas += h.Deltas
		target := t.TempDir()
		e.restic("restore", h.SnapshotID, "--target", target)
		diffs, err := treecmp.Compare(want, filepath.Join(target, e.data), treecmp.Options{})
		must(t, err)
		if len(diffs) > 0 {
			t.Fatalf("%s: restic's restore differs:\n%s", s.name, strings.Join(diffs, "\n"))
		}
	}
	if deltas == 0 {
		t.Fatal("no chunk travelled as a delta")
	}
	e.restic("check", "--read-data")
}
