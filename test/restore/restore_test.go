package restore_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/haulproject/haul/agent"
)

// TestRestoreOntoFreshVPS is the rebuild's restore: a second sshd + agent
// with an empty data dir stands for the new VPS. The restored tree equals
// the original (content, mode, owner, mtime, link targets, hard links), the
// ready marker is written, and from then on the host refuses another
// restore unless its config allows in-place restores.
func TestRestoreOntoFreshVPS(t *testing.T) {
	t.Parallel()
	old := newVPS(t, "old", vpsOptions{})
	fresh := newVPS(t, "new", vpsOptions{sameDataPathAs: old})
	makeData(t, old.dir, 2<<20)
	must(t, os.MkdirAll(fresh.dir, 0o755)) // empty, as the NixOS module leaves it
	n := newNAS(t, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey))
	n.haul("backup", "--host", "old")

	// A dry run stages and verifies, then leaves the host as it was.
	out := n.haul("restore", "--host", "old", "--to", "new", "--dry-run")
	if !strings.Contains(out, "dry run") || !strings.Contains(out, "nothing swapped") {
		t.Errorf("dry run output: %s", out)
	}
	if s := siblings(t, fresh.dir); !slices.Equal(s, []string{"pangolin"}) {
		t.Errorf("after a dry run, beside the data path: %v", s)
	}
	if ents, _ := os.ReadDir(fresh.dir); len(ents) != 0 {
		t.Errorf("a dry run wrote into the data dir: %v", ents)
	}
	if _, err := os.Stat(fresh.marker()); err == nil {
		t.Error("a dry run wrote the ready marker")
	}

	res := n.restore("--host", "old", "--to", "new")
	sameTree(t, old.dir, fresh.dir)
	// The repository compresses: those chunks go out as stored.
	if res.AsStored == 0 || res.AsStored > res.ChunksSent {
		t.Errorf("%d of %d chunks sent as stored", res.AsStored, res.ChunksSent)
	}
	if res.Target != "new" || res.Outcome.Marker != fresh.marker() || len(res.Outcome.Kept) != 1 {
		t.Errorf("result: target %q, marker %q, kept %v", res.Target, res.Outcome.Marker, res.Outcome.Kept)
	}
	var m agent.ReadyMarker
	b, err := os.ReadFile(fresh.marker())
	must(t, err)
	must(t, json.Unmarshal(b, &m))
	if m.By != "restore" || m.Snapshot != res.Snapshot || m.SnapshotHost != "old" {
		t.Errorf("ready marker: %s", b)
	}
	if s := siblings(t, fresh.dir); len(s) != 2 || !strings.HasPrefix(s[1], "pangolin.prev-") {
		t.Errorf("beside the data path: %v, want the data and its empty predecessor", s)
	}

	// Now the host is ready: a restore key alone cannot overwrite it.
	before := copyTree(t, fresh.dir)
	out, errOut, code := n.haulCode("restore", "--host", "old", "--to", "new")
	if code != 1 || !strings.Contains(errOut, "allow_inplace_restore") || !strings.Contains(errOut, "Nothing was changed") {
		t.Fatalf("restore onto a ready host: exit %d\n%s%s", code, out, errOut)
	}
	sameTree(t, before, fresh.dir)
	if s := siblings(t, fresh.dir); len(s) != 2 {
		t.Errorf("a refused restore left %v", s)
	}
}

// TestRestoreBackupKeyRefused: the backup key's forced command lacks
// --allow-restore, so a restore through it is refused before any data
// moves.
func TestRestoreBackupKeyRefused(t *testing.T) {
	t.Parallel()
	v := newVPS(t, "vps", vpsOptions{})
	makeData(t, v.dir, 256<<10)
	n := newNAS(t, v.hostEntry(v.backupKey))
	n.haul("backup")
	must(t, os.WriteFile(filepath.Join(v.dir, "changed"), []byte("after the backup"), 0o644))
	before := copyTree(t, v.dir)

	out, errOut, code := n.haulCode("restore", "--host", "vps")
	if code != 1 || !strings.Contains(errOut, "does not allow restore") {
		t.Fatalf("restore through the backup key: exit %d\n%s%s", code, out, errOut)
	}
	sameTree(t, before, v.dir)
	if s := siblings(t, v.dir); !slices.Equal(s, []string{"pangolin"}) {
		t.Errorf("beside the data path: %v", s)
	}
}

// TestRestoreDiskFull: the new host's disk (a 4 MiB tmpfs) cannot hold
// the snapshot beside its live data. The restore fails with a message
// naming the path and the space needed; the live data is untouched and no
// staging copy is left.
func TestRestoreDiskFull(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	old := newVPS(t, "old", vpsOptions{})
	makeData(t, old.dir, 3<<20)
	disk := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", disk).Run() })
	small := newVPS(t, "small", vpsOptions{sameDataPathAs: old, storage: disk})
	must(t, os.MkdirAll(small.dir, 0o755))
	live := make([]byte, 1536<<10)
	for i := range live {
		live[i] = byte(i)
	}
	must(t, os.WriteFile(filepath.Join(small.dir, "live.db"), live, 0o600))
	before := copyTree(t, small.dir)

	n := newNAS(t, old.hostEntry(old.restoreKey), small.hostEntry(small.restoreKey))
	n.haul("backup", "--host", "old")
	// small has live data and no marker: the restore must say it replaces it.
	out, errOut, code := n.haulCode("restore", "--host", "old", "--to", "small", "--replace-live-data")
	if code != 1 || !strings.Contains(errOut, "disk full on "+small.data) || !strings.Contains(errOut, "needs") || !strings.Contains(errOut, "live data is untouched") {
		t.Fatalf("restore onto a full disk: exit %d\n%s%s", code, out, errOut)
	}
	sameTree(t, before, small.dir)
	if s := siblings(t, small.dir); !slices.Equal(s, []string{"pangolin"}) {
		t.Errorf("beside the data path: %v, want no staging copy", s)
	}
	if _, err := os.Stat(small.marker()); err == nil {
		t.Error("a failed restore wrote the ready marker")
	}
}

// TestMigrate is the cut-over from the hand-built VPS: one command backs
// up OLD, restores onto NEW, verifies with a backup of NEW compared node by
// node, and only then marks NEW ready.
func TestMigrate(t *testing.T) {
	t.Parallel()
	old := newVPS(t, "handbuilt", vpsOptions{})
	fresh := newVPS(t, "nixos", vpsOptions{sameDataPathAs: old})
	makeData(t, old.dir, 1<<20)
	n := newNAS(t, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey))

	out := n.haul("migrate", "--from", "handbuilt", "--to", "nixos")
	if !strings.Contains(out, "verified") || !strings.Contains(out, "nixos marked ready") {
		t.Errorf("migrate output:\n%s", out)
	}
	sameTree(t, old.dir, fresh.dir)
	var m agent.ReadyMarker
	b, err := os.ReadFile(fresh.marker())
	must(t, err)
	must(t, json.Unmarshal(b, &m))
	if m.By != "mark" || m.SnapshotHost != "handbuilt" || m.Snapshot == "" {
		t.Errorf("ready marker: %s", b)
	}
	// Two snapshots: OLD's, and NEW's verification backup.
	var sns []struct {
		Hostname string   `json:"hostname"`
		Tags     []string `json:"tags"`
	}
	must(t, json.Unmarshal([]byte(n.haul("snapshots", "--json")), &sns))
	if len(sns) != 2 || sns[0].Hostname != "handbuilt" || sns[1].Hostname != "nixos" {
		t.Errorf("snapshots after migrate: %+v", sns)
	}
}
