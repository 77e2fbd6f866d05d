package restore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
)

// CompareMapped is migrate's verification: OLD's snapshot at From against
// NEW's at To. Equal trees at different paths compare equal; a changed,
// missing or extra file below the mapped directory is a difference named
// at OLD's path, and a To the second snapshot lacks is one too.
func TestCompareMapped(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mt := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	file := func(name string, content byte) *data.Node {
		return &data.Node{Name: name, Type: data.NodeTypeFile, Mode: 0o600, ModTime: mt, Size: 3,
			Content: restic.IDs{restic.Hash([]byte{content, content, content})}}
	}
	snap := func(dataPath string, children func(w *treeWriter) []*data.Node) *repo.Snapshot {
		t.Helper()
		w := &treeWriter{t: t, ctx: ctx, r: r, mt: mt}
		var id restic.ID
		must(t, r.WithBlobUploader(ctx, func(ctx context.Context, up restic.BlobSaverWithAsync) error {
			w.up = up
			root := w.rootFor(dataPath, children(w), nil)
			sn, err := data.NewSnapshot([]string{dataPath}, nil, "h", mt)
			must(t, err)
			sn.Tree = &root
			id, err = r.SaveSnapshot(ctx, sn, nil)
			return err
		}))
		sn, err := r.Find(ctx, "h", id.String())
		must(t, err)
		return sn
	}
	config := func(db byte, extra ...*data.Node) func(w *treeWriter) []*data.Node {
		return func(w *treeWriter) []*data.Node {
			files := []*data.Node{file("db.sqlite", db), file("key", 'k')}
			return []*data.Node{w.dir("config", append(files, extra...)...)}
		}
	}
	old := snap("/opt/pangolin", config('a'))
	m := &restore.Mapping{Maps: []restore.PathMap{{From: "/opt/pangolin/config", To: "/var/lib/pangolin/config"}}}

	for _, tc := range []struct {
		name  string
		new   *repo.Snapshot
		maps  *restore.Mapping
		diffs []string
	}{
		{"equal through the mapping", snap("/var/lib/pangolin", config('a')), m, nil},
		{"changed database", snap("/var/lib/pangolin", config('b')), m, []string{"/opt/pangolin/config/db.sqlite: content differs"}},
		{"extra file", snap("/var/lib/pangolin", config('a', file("stray", 's'))), m, []string{"/opt/pangolin/config/stray: only in the second snapshot"}},
		{"missing file", snap("/var/lib/pangolin", func(w *treeWriter) []*data.Node {
			return []*data.Node{w.dir("config", file("db.sqlite", 'a'))}
		}), m, []string{"/opt/pangolin/config/key: only in the first snapshot"}},
		{"To not in the second snapshot", snap("/var/lib/pangolin", config('a')),
			&restore.Mapping{Maps: []restore.PathMap{{From: "/opt/pangolin/config", To: "/var/lib/pangolin/conf"}}},
			[]string{"/var/lib/pangolin/conf: snapshot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := restore.CompareMapped(ctx, r, old, tc.new, tc.maps)
			must(t, err)
			if c.DiffCount != len(tc.diffs) {
				t.Fatalf("%d differences %v, want %v", c.DiffCount, c.Diffs, tc.diffs)
			}
			for i, want := range tc.diffs {
				if !strings.HasPrefix(c.Diffs[i], want) {
					t.Errorf("difference %q, want it to start with %q", c.Diffs[i], want)
				}
			}
			if tc.diffs == nil && c.Nodes != 3 {
				t.Errorf("compared %d nodes, want 3 (config/, db.sqlite, key)", c.Nodes)
			}
		})
	}
}
