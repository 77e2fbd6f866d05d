package restore_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/transport"
)

// TestAgentRestoresResticSnapshot restores snapshots the stock restic CLI
// wrote — into a compressed (format 2) and an uncompressed (format 1)
// repository — onto a real haul-agent over the exec transport, and checks
// the tree against the original.
func TestAgentRestoresResticSnapshot(t *testing.T) {
	bins := testenv.Binaries(t)
	for _, version := range []string{"2", "1"} {
		t.Run("repository version "+version, func(t *testing.T) {
			ctx := context.Background()
			base := t.TempDir()
			data := filepath.Join(base, "srv", "data")
			makeFiles(t, data)

			repoDir := filepath.Join(t.TempDir(), "repo")
			pwFile := filepath.Join(t.TempDir(), "pw")
			must(t, os.WriteFile(pwFile, []byte("restic wrote this\n"), 0o600))
			testenv.Restic(t, repoDir, pwFile, "init", "--repository-version", version)
			testenv.Restic(t, repoDir, pwFile, "backup", "--host", "old", data)

			// The "new host" has the same data path: move the original
			// aside to compare with.
			orig := filepath.Join(base, "orig")
			must(t, os.Rename(data, orig))

			r, err := repo.Open(ctx, repoDir, "restic wrote this")
			must(t, err)
			sn, err := r.Find(ctx, "old", "latest")
			must(t, err)
			cfg := filepath.Join(t.TempDir(), "agent.json")
			must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`{"host":"new","data_paths":[%q],"state_dir":%q}`, data, filepath.Join(t.TempDir(), "state"))), 0o600))
			conn := &transport.Exec{Argv: []string{filepath.Join(bins, "haul-agent"), "serve", "--config", cfg, "--allow-restore"}}
			res, err := restore.Agent(ctx, r, sn, conn, restore.AgentOptions{})
			must(t, err)

			diffs, err := treecmp.Compare(orig, data, treecmp.Options{Owner: os.Geteuid() == 0, DirMtime: true})
			must(t, err)
			if len(diffs) > 0 {
				t.Fatalf("restored tree differs:\n%s", strings.Join(diffs, "\n"))
			}
			if res.Outcome.Marker == "" || res.ChunksSent == 0 || res.ChunksSent != res.Outcome.ChunksGot {
				t.Errorf("result: sent %d, agent got %d, marker %q", res.ChunksSent, res.Outcome.ChunksGot, res.Outcome.Marker)
			}
			// Format 2 compresses: those blobs go out as stored. Format 1
			// does not: every chunk takes the general path.
			if (version == "2") != (res.ChunksAsStored > 0) {
				t.Errorf("repository version %s: %d of %d chunks sent as stored", version, res.ChunksAsStored, res.ChunksSent)
			}
		})
	}
}

// makeFiles writes a small tree with multi-chunk files, a symlink and set
// times.
func makeFiles(t *testing.T, dir string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "db"), 0o755))
	big := make([]byte, 3<<20)
	_, _ = rand.Read(big[:1<<20])
	must(t, os.WriteFile(filepath.Join(dir, "db", "db.sqlite"), big, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "acme.json"), []byte(`{}`), 0o600))
	must(t, os.Symlink("db/db.sqlite", filepath.Join(dir, "link")))
	mt := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{"db/db.sqlite", "acme.json", "db", "."} {
		must(t, os.Chtimes(filepath.Join(dir, p), mt, mt))
	}
}
