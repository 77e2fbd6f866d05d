package backup

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
)

// BenchmarkKnown measures a backup's "known" phase — what the puller does to
// learn which chunks a host already sent — after 5 and after 500 snapshots
// of that host (each a 1000-chunk file of which one chunk changed since the
// previous snapshot): with the host record ("record", what a backup does)
// and by walking every snapshot's trees (the way before the record).
//
//	go test -run '^$' -bench Known -benchtime 20x ./puller/backup/
func BenchmarkKnown(b *testing.B) {
	for _, n := range []int{5, 500} {
		r, cache := knownFixture(b, n)
		b.Run(fmt.Sprintf("snapshots=%d/record", n), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				rec, _, err := loadHostRecord(ctx, r, cache, "vps", 0)
				if err != nil {
					b.Fatal(err)
				}
				if len(rec.ids) < 1000 {
					b.Fatalf("record knows %d chunks", len(rec.ids))
				}
			}
		})
		b.Run(fmt.Sprintf("snapshots=%d/walk-all", n), func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				if _, err := r.HostBlobs(ctx, "vps"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// knownFixture makes a repository holding n snapshots of host "vps" and
// the host record a backup leaves after them.
func knownFixture(b *testing.B, n int) (*repo.Repo, string) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	r, err := repo.Init(ctx, filepath.Join(dir, "repo"), "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	const chunks = 1000
	content := make(restic.IDs, chunks)
	var trees restic.IDs
	err = r.WithBlobUploader(ctx, func(ctx context.Context, up restic.BlobSaverWithAsync) error {
		blob := func(seed int) (restic.ID, error) {
			buf := make([]byte, 512)
			s := sha256.Sum256([]byte(fmt.Sprint(seed)))
			copy(buf, s[:])
			id, _, _, err := up.SaveBlob(ctx, restic.DataBlob, buf, restic.ID{}, false)
			return id, err
		}
		for i := range content {
			if content[i], err = blob(i); err != nil {
				return err
			}
		}
		for s := range n {
			if content[s%chunks], err = blob(chunks + s); err != nil {
				return err
			}
			tb := data.NewTreeJSONBuilder()
			if err := tb.AddNode(&data.Node{Name: "db.sqlite", Type: data.NodeTypeFile, Size: uint64(chunks * 512), Content: append(restic.IDs(nil), content...)}); err != nil {
				return err
			}
			buf, err := tb.Finalize()
			if err != nil {
				return err
			}
			id, _, _, err := up.SaveBlob(ctx, restic.TreeBlob, buf, restic.ID{}, false)
			if err != nil {
				return err
			}
			trees = append(trees, id)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Unix(1700000000, 0)
	for i, tree := range trees {
		sn, err := data.NewSnapshot([]string{"/srv"}, nil, "vps", t0.Add(time.Duration(i)*time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		sn.Tree = &tree
		if _, err := r.SaveSnapshot(ctx, sn, nil); err != nil {
			b.Fatal(err)
		}
	}
	cache := filepath.Join(dir, "cache")
	rec, _, err := loadHostRecord(ctx, r, cache, "vps", 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := rec.save(func(id proto.ID) bool {
		_, ok := r.LookupBlobSize(restic.DataBlob, restic.ID(id))
		return ok
	}); err != nil {
		b.Fatal(err)
	}
	return r, cache
}
