package backup_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/puller/backup"
)

// TestHostRecord checks the NAS's per-host record of what each host sent:
// a second run asks for nothing, another host is still asked for
// everything (the trust rule), and a record that is corrupt, belongs to
// another host or misses snapshots is repaired from the snapshots.
func TestHostRecord(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	must(t, os.MkdirAll(data, 0o755))
	must(t, os.WriteFile(filepath.Join(data, "db.sqlite"), randomBytes(1, 2<<20), 0o644))
	// Compressible: stored as the agent's zstd frames, not through restic's saver.
	must(t, os.WriteFile(filepath.Join(data, "acme.json"), bytes.Repeat([]byte(`{"letsencrypt":{"certificate":"MIIB"}}`), 30000), 0o600))
	agentFor := func(host string) peer {
		cfg, err := agent.ParseConfig([]byte(`{"host":"`+host+`","data_paths":["`+data+`"],"state_dir":"`+filepath.Join(t.TempDir(), "state")+`"}`), "test")
		must(t, err)
		return inProcessAgent(cfg)
	}
	vps := agentFor("vps")
	dir := newRepo(t)
	cache := t.TempDir()
	run := func(host string, a peer, cache string) *backup.Result {
		t.Helper()
		res, err := backup.Run(context.Background(), openRepo(t, dir), a, backup.Options{Host: host, CacheDir: cache})
		must(t, err)
		return res
	}

	first := run("vps", vps, cache)
	if first.ChunksWanted == 0 {
		t.Fatalf("first backup asked for nothing: %+v", first)
	}
	repoID := openRepo(t, dir).Config().ID
	record := filepath.Join(cache, repoID, "vps.sent")
	if _, err := os.Stat(record); err != nil {
		t.Fatalf("no host record after a backup: %v", err)
	}
	if res := run("vps", vps, cache); res.ChunksWanted != 0 {
		t.Fatalf("second backup with the record asked for %d chunks", res.ChunksWanted)
	}

	// Another host with the same data: the repository has every chunk,
	// but this host never sent them, so it is asked for all of them, even
	// with vps's record copied over its own.
	b, err := os.ReadFile(record)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(cache, repoID, "other.sent"), b, 0o600))
	other := agentFor("other")
	if res := run("other", other, cache); res.ChunksWanted != first.ChunksWanted {
		t.Fatalf("host other was asked for %d chunks, want all %d (it sent none before)", res.ChunksWanted, first.ChunksWanted)
	}

	// A torn record is rebuilt from the host's snapshots.
	b[len(b)/2] ^= 0xff
	must(t, os.WriteFile(record, b, 0o600))
	if res := run("vps", vps, cache); res.ChunksWanted != 0 {
		t.Fatalf("after a corrupt record: asked for %d chunks, want 0 (rebuilt from snapshots)", res.ChunksWanted)
	}

	// Snapshots the record has not seen (written from another cache, as
	// by another NAS) are walked once and added.
	must(t, os.WriteFile(filepath.Join(data, "new.log"), randomBytes(2, 1<<20), 0o644))
	if res := run("vps", vps, t.TempDir()); res.ChunksWanted == 0 {
		t.Fatalf("a new file was not asked for")
	}
	if res := run("vps", vps, cache); res.ChunksWanted != 0 {
		t.Fatalf("record missing a snapshot: asked for %d chunks, want 0", res.ChunksWanted)
	}
}
