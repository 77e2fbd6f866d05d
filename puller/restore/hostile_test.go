package restore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/repotest"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/transport"
)

// TestHostileSnapshotRefused writes snapshots no backup would produce —
// the repository is the one thing a restore trusts, and it may have been
// tampered with — directly with restic's packages, and restores each onto
// a real haul-agent. Every one is refused, and nothing outside the data
// root changes: no file appears outside, the live data stays as it was,
// no staging copy is left.
func TestHostileSnapshotRefused(t *testing.T) {
	bins := testenv.Binaries(t)
	ctx := context.Background()
	mt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	file := func(name string) *data.Node {
		return &data.Node{Name: name, Type: data.NodeTypeFile, Mode: 0o644, ModTime: mt, Size: 0, Content: restic.IDs{}}
	}
	cases := []struct {
		name string
		// build returns the data path's children and, optionally, extra
		// nodes beside the data path in its parent.
		build func(w *treeWriter, outside string) (children, beside []*data.Node)
	}{
		{"dot-dot", func(w *treeWriter, _ string) ([]*data.Node, []*data.Node) {
			return []*data.Node{w.dir("..", file("escaped"))}, nil
		}},
		{"a/b", func(w *treeWriter, _ string) ([]*data.Node, []*data.Node) {
			return []*data.Node{file("a/b")}, nil
		}},
		{"absolute symlink, then a file beneath it", func(w *treeWriter, outside string) ([]*data.Node, []*data.Node) {
			link := &data.Node{Name: "evil", Type: data.NodeTypeSymlink, Mode: os.ModeSymlink | 0o777, ModTime: mt, LinkTarget: outside}
			return []*data.Node{link, w.dir("evil", file("pwned"))}, nil
		}},
		{"beside the data path", func(w *treeWriter, _ string) ([]*data.Node, []*data.Node) {
			return nil, []*data.Node{w.dir("zz-escaped", file("pwned"))}
		}},
	}
	r := newRepo(t) // shared: opening a repository runs its key derivation
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dataPath := filepath.Join(base, "srv", "data")
			outside := filepath.Join(base, "outside")
			must(t, os.MkdirAll(dataPath, 0o755))
			must(t, os.MkdirAll(outside, 0o755))
			must(t, os.WriteFile(filepath.Join(dataPath, "live"), []byte("live data"), 0o600))
			before := listTree(t, base)

			sn := saveSnapshot(t, ctx, r, mt, dataPath, func(w *treeWriter) ([]*data.Node, []*data.Node) { return tc.build(w, outside) })

			cfg := filepath.Join(t.TempDir(), "agent.json")
			must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`{"host":"new","data_paths":[%q],"state_dir":%q}`, dataPath, filepath.Join(t.TempDir(), "state"))), 0o600))
			conn := &transport.Exec{Argv: []string{filepath.Join(bins, "haul-agent"), "serve", "--config", cfg, "--allow-restore"}}
			_, err := restore.Agent(ctx, r, sn, conn, restore.AgentOptions{})
			var pe *proto.Error
			if !errors.As(err, &pe) || pe.Code != proto.CodeRefused {
				t.Fatalf("hostile snapshot: got %v, want the agent's refusal", err)
			}
			t.Logf("refused: %v", pe.Message)
			if after := listTree(t, base); after != before {
				t.Errorf("a refused restore changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// treeWriter saves hand-made trees; json.Marshal, unlike restic's tree
// builder, lets a test write duplicate and unsorted names.
type treeWriter struct {
	t   *testing.T
	ctx context.Context
	r   *repo.Repo
	up  restic.BlobSaverWithAsync
	mt  time.Time
}

func (w *treeWriter) save(nodes []*data.Node) restic.ID {
	w.t.Helper()
	if nodes == nil {
		nodes = []*data.Node{}
	}
	b, err := json.Marshal(struct {
		Nodes []*data.Node `json:"nodes"`
	}{nodes})
	must(w.t, err)
	id, _, _, err := w.up.SaveBlob(w.ctx, restic.TreeBlob, append(b, '\n'), restic.ID{}, false)
	must(w.t, err)
	return id
}

func (w *treeWriter) dir(name string, children ...*data.Node) *data.Node {
	id := w.save(children)
	return &data.Node{Name: name, Type: data.NodeTypeDir, Mode: os.ModeDir | 0o755, ModTime: w.mt, Subtree: &id}
}

// rootFor builds the trees from "/" down to dataPath, whose directory
// holds children; beside go next to it in its parent.
func (w *treeWriter) rootFor(dataPath string, children, beside []*data.Node) restic.ID {
	parts := strings.Split(strings.Trim(dataPath, "/"), "/")
	node := w.dir(parts[len(parts)-1], children...)
	level := append([]*data.Node{node}, beside...)
	for i := len(parts) - 2; i >= 0; i-- {
		level = []*data.Node{w.dir(parts[i], level...)}
	}
	return w.save(level)
}

// saveSnapshot saves a snapshot of dataPath, host "old", whose data path
// holds the children build returns (and beside, next to it), and finds it
// again. build runs with w's uploader set, so it may save blobs.
func saveSnapshot(t *testing.T, ctx context.Context, r *repo.Repo, mt time.Time, dataPath string, build func(w *treeWriter) (children, beside []*data.Node)) *repo.Snapshot {
	t.Helper()
	w := &treeWriter{t: t, ctx: ctx, r: r, mt: mt}
	var snID restic.ID
	must(t, r.WithBlobUploader(ctx, func(ctx context.Context, up restic.BlobSaverWithAsync) error {
		w.up = up
		children, beside := build(w)
		root := w.rootFor(dataPath, children, beside)
		sn, err := data.NewSnapshot([]string{dataPath}, nil, "old", mt)
		must(t, err)
		sn.Tree = &root
		snID, err = r.SaveSnapshot(ctx, sn, nil)
		return err
	}))
	sn, err := r.Find(ctx, "old", snID.String())
	must(t, err)
	return sn
}

func newRepo(t *testing.T) *repo.Repo {
	t.Helper()
	repotest.LowCostKDF(t)
	r, err := repo.Init(context.Background(), filepath.Join(t.TempDir(), "repo"), "hostile", nil)
	must(t, err)
	return r
}

// listTree lists every entry below dir with its mode, size and content,
// except directory mtimes (staging beside the data path touches its
// parent's).
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v %d", strings.TrimPrefix(p, dir), fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			must(t, err)
			line += fmt.Sprintf(" %d %x", fi.ModTime().UnixNano(), proto.Hash(b))
		}
		lines = append(lines, line)
		return nil
	}))
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
