package backup_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
)

// TestUnchangedFilesWithoutChunkLists: from the second run on, a file
// whose chunks did not change travels without its chunk list (protocol
// version 3), the snapshot still holds every chunk (the restore is
// byte-identical), a changed file still lists its chunks, and older peers
// on either side still get and send full lists.
func TestUnchangedFilesWithoutChunkLists(t *testing.T) {
	data, cfg, dir := deltaFixture(t)
	// An empty file: its content must stay an empty list, never null.
	must(t, os.WriteFile(filepath.Join(data, "empty"), nil, 0o644))
	cache := t.TempDir()
	run := func(p peer, maxVersion int) *backup.Result {
		t.Helper()
		res, err := backup.Run(context.Background(), openRepo(t, dir), p, backup.Options{Host: "vps", CacheDir: cache, MaxVersion: maxVersion})
		must(t, err)
		return res
	}
	first := run(agentVersion(cfg, 0), 0)
	if first.Manifest.Same != 0 || first.Manifest.Walk == "" {
		t.Fatalf("first run: %d files marked same, walk %q", first.Manifest.Same, first.Manifest.Walk)
	}
	second := run(agentVersion(cfg, 0), 0)
	if second.Manifest.Same != 3 || second.ChunksWanted != 0 {
		t.Fatalf("no-change run: %d of 3 files marked same, %d chunks wanted", second.Manifest.Same, second.ChunksWanted)
	}
	verifyRestore(t, dir, data)
	// The stock restic CLI accepts the trees made from same nodes.
	pw := filepath.Join(t.TempDir(), "password")
	must(t, os.WriteFile(pw, []byte(password), 0o600))
	testenv.Restic(t, dir, pw, "check", "--read-data")

	// One file changes: it lists its chunks, the other does not.
	lf, err := os.OpenFile(filepath.Join(data, "access.log"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, _ = lf.WriteString(strings.Repeat("POST /api/v1/login 401\n", 3000))
	must(t, lf.Close())
	third := run(agentVersion(cfg, 0), 0)
	if third.Manifest.Same != 2 || third.ChunksWanted == 0 {
		t.Fatalf("one file changed: %d files marked same, %d chunks wanted", third.Manifest.Same, third.ChunksWanted)
	}
	verifyRestore(t, dir, data)

	// Older peers: no Same either way, and nothing breaks.
	for _, tc := range []struct{ puller, agent int }{{2, 0}, {0, 2}, {1, 0}, {0, 1}} {
		res := run(agentVersion(cfg, tc.agent), tc.puller)
		if res.Manifest.Same != 0 || res.ChunksWanted != 0 || res.Version > 2 {
			t.Fatalf("puller ≤%d, agent ≤%d: version %d, %d files same, %d chunks wanted", tc.puller, tc.agent, res.Version, res.Manifest.Same, res.ChunksWanted)
		}
	}
	// Back at version 3, the base walk is the one an older session left.
	if res := run(agentVersion(cfg, 0), 0); res.Manifest.Same != 3 {
		t.Fatalf("after older sessions: %d files same", res.Manifest.Same)
	}
	verifyRestore(t, dir, data)
}

// TestHostileSameNodes: an agent that marks a file unchanged without a base
// walk, or with a size the base snapshot's file does not have, fails the
// backup; it cannot point a file at anything but this host's own snapshot.
func TestHostileSameNodes(t *testing.T) {
	dir := newRepo(t)
	dirNode := proto.Node{Name: []byte("data"), Type: proto.NodeDir, Mode: uint32(os.ModeDir | 0o755)}
	same := proto.Node{Name: []byte("db.sqlite"), Type: proto.NodeFile, Mode: 0o644, Size: 4096, Same: true}
	_, err := backup.Run(context.Background(), openRepo(t, dir), hostileAgent(3, []proto.Node{dirNode, same}, nil), backup.Options{Host: "evil", CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no base walk was offered") {
		t.Fatalf("same without a base: %v", err)
	}
	withChunks := same
	withChunks.Chunks = []proto.ChunkRef{{ID: proto.Hash(make([]byte, 4096)), Length: 4096}}
	_, err = backup.Run(context.Background(), openRepo(t, dir), hostileAgent(3, []proto.Node{withChunks}, nil), backup.Options{Host: "evil", CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "marked same") {
		t.Fatalf("same with chunks: %v", err)
	}
}
