package backup_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/internal/pipetest"
	"github.com/haulproject/haul/puller/internal/repotest"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/transport"
)

const password = "test-password"

func newRepo(t *testing.T) string {
	t.Helper()
	repotest.LowCostKDF(t)
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := repo.Init(context.Background(), dir, password, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return dir
}

func openRepo(t *testing.T, dir string) *repo.Repo {
	t.Helper()
	r, err := repo.Open(context.Background(), dir, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// peer runs fn as the agent side of a session.
type peer func(ctx context.Context, in io.Reader, out io.Writer) error

func (fn peer) Connect(ctx context.Context, verb string) (transport.Wire, error) {
	return pipetest.Peer(func(ctx context.Context, _ string, in io.Reader, out io.Writer) error { return fn(ctx, in, out) }).Connect(ctx, verb)
}

// inProcessAgent serves with the real agent code.
func inProcessAgent(cfg *agent.Config) peer {
	return func(ctx context.Context, in io.Reader, out io.Writer) error {
		s := &agent.Server{Config: cfg, In: in, Out: out}
		return s.Serve(ctx, agent.VerbBackup)
	}
}

func TestBackupInProcessAndRestore(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	must(t, os.MkdirAll(filepath.Join(data, "db"), 0o755))
	must(t, os.WriteFile(filepath.Join(data, "db", "db.sqlite"), make([]byte, 3<<20), 0o644))
	must(t, os.WriteFile(filepath.Join(data, "acme.json"), []byte(`{"letsencrypt":{}}`), 0o600))
	must(t, os.Symlink("db/db.sqlite", filepath.Join(data, "link")))
	cfg, err := agent.ParseConfig([]byte(`{"host":"vps","data_paths":["`+data+`"],"state_dir":"`+filepath.Join(t.TempDir(), "state")+`"}`), "test")
	must(t, err)
	dir := newRepo(t)

	res, err := backup.Run(context.Background(), openRepo(t, dir), inProcessAgent(cfg), backup.Options{Host: "vps", CacheDir: t.TempDir()})
	must(t, err)
	if res.ChunksWanted == 0 || res.Files != 2 {
		t.Fatalf("first backup: %+v", res)
	}
	res2, err := backup.Run(context.Background(), openRepo(t, dir), inProcessAgent(cfg), backup.Options{Host: "vps", CacheDir: t.TempDir()})
	must(t, err)
	if res2.ChunksWanted != 0 || res2.Manifest.FilesRead != 0 {
		t.Fatalf("unchanged backup asked for %d chunks and re-read %d files", res2.ChunksWanted, res2.Manifest.FilesRead)
	}

	r := openRepo(t, dir)
	sn, err := r.Find(context.Background(), "vps", "latest")
	must(t, err)
	if sn.Haul == nil || sn.Paths[0] != data {
		t.Fatalf("snapshot lacks haul record or paths: %+v", sn)
	}
	target := t.TempDir()
	_, err = restore.Local(context.Background(), r, sn, target, restore.LocalOptions{})
	must(t, err)
	diffs, err := treecmp.Compare(data, filepath.Join(target, data), treecmp.Options{})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("restored tree differs:\n%s", strings.Join(diffs, "\n"))
	}
}

// hostile is an agent that follows the protocol up to the manifest, then
// answers wants as told.
func hostile(nodes []proto.Node, onWant func(w *proto.Writer, ids []proto.ID)) peer {
	return hostileAgent(1, nodes, func(w *proto.Writer, _ proto.Type, ids []proto.ID) { onWant(w, ids) })
}

// hostileAgent speaks protocol version, streams nodes (closing each dir
// at once), hands every want and want-full to onWant, and says bye.
func hostileAgent(version int, nodes []proto.Node, onWant func(w *proto.Writer, t proto.Type, ids []proto.ID)) peer {
	return func(ctx context.Context, in io.Reader, out io.Writer) error {
		c := proto.NewConn(in, out)
		var h proto.Hello
		if err := c.Expect(proto.THello, &h); err != nil {
			return err
		}
		_ = c.Send(proto.THelloReply, &proto.HelloReply{Version: version, Verb: "backup", DataPaths: []string{"/data"}})
		if err := c.Expect(proto.TFreeze, nil); err != nil {
			return err
		}
		_ = c.Send(proto.TFrozen, &proto.Frozen{Mode: "none"})
		if err := c.Expect(proto.TWalk, nil); err != nil {
			return err
		}
		for i := range nodes {
			b, _ := proto.Encode(&nodes[i])
			_ = c.W.Write(proto.TNode, b)
			if nodes[i].Type == proto.NodeDir {
				_ = c.W.Write(proto.TDirEnd)
			}
		}
		_ = c.Send(proto.TManifestEnd, &proto.ManifestEnd{Files: int64(len(nodes))})
		for {
			t, p, err := c.R.Read()
			if err != nil {
				return nil
			}
			switch t {
			case proto.TWant, proto.TWantFull:
				ids, _ := proto.DecodeWant(p)
				onWant(c.W, t, ids)
				_ = c.W.Flush()
			case proto.TDone:
				_ = c.Send(proto.TBye, &proto.Bye{})
				return nil
			}
		}
	}
}

func TestChunkNotMatchingItsIDIsRejected(t *testing.T) {
	good := []byte("the real acme.json")
	id := proto.Hash(good)
	nodes := []proto.Node{{Name: []byte("acme.json"), Type: proto.NodeFile, Mode: 0o600, Size: uint64(len(good)), Chunks: []proto.ChunkRef{{ID: id, Length: uint32(len(good))}}}}
	evil := []byte("attacker's bytes!!")
	dir := newRepo(t)
	_, err := backup.Run(context.Background(), openRepo(t, dir), hostile(nodes, func(w *proto.Writer, ids []proto.ID) {
		for _, id := range ids {
			_ = w.Write(proto.TChunk, proto.ChunkHeader(id, proto.EncRaw, len(evil)), evil)
		}
	}), backup.Options{Host: "evil", CacheDir: t.TempDir()})
	if err == nil || !errors.Is(err, proto.ErrChunkMismatch) {
		t.Fatalf("want a chunk mismatch error, got %v", err)
	}
	if !strings.Contains(err.Error(), "does not match its ID") {
		t.Fatalf("error does not say what happened: %v", err)
	}
	r := openRepo(t, dir)
	if _, ok := r.LookupBlobSize(restic.DataBlob, restic.ID(id)); ok {
		t.Fatal("a blob was stored under the announced ID")
	}
	if _, ok := r.LookupBlobSize(restic.DataBlob, restic.ID(proto.Hash(evil))); ok {
		t.Fatal("the attacker's bytes were stored")
	}
	sns, err := r.Snapshots(context.Background(), "")
	must(t, err)
	if len(sns) != 0 {
		t.Fatalf("a snapshot was written after a failed backup: %d", len(sns))
	}
}

func TestHostileManifests(t *testing.T) {
	id := proto.Hash([]byte("x"))
	file := func(name string) proto.Node {
		return proto.Node{Name: []byte(name), Type: proto.NodeFile, Size: 1, Chunks: []proto.ChunkRef{{ID: id, Length: 1}}}
	}
	cases := map[string]struct {
		nodes  []proto.Node
		onWant func(w *proto.Writer, ids []proto.ID)
		want   string
	}{
		"dot-dot name":    {nodes: []proto.Node{file("..")}, want: "not allowed"},
		"slash in name":   {nodes: []proto.Node{file("a/b")}, want: "contains '/'"},
		"unsorted names":  {nodes: []proto.Node{file("b"), file("a")}, want: "out of order"},
		"duplicate names": {nodes: []proto.Node{file("a"), file("a")}, want: "out of order"},
		"size mismatch":   {nodes: []proto.Node{{Name: []byte("f"), Type: proto.NodeFile, Size: 5, Chunks: []proto.ChunkRef{{ID: id, Length: 1}}}}, want: "add up"},
		"unsolicited chunk": {nodes: []proto.Node{file("a")}, onWant: func(w *proto.Writer, ids []proto.ID) {
			other := []byte("y")
			_ = w.Write(proto.TChunk, proto.ChunkHeader(proto.Hash(other), proto.EncRaw, 1), other)
		}, want: "not asked for"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			onWant := tc.onWant
			if onWant == nil {
				onWant = func(w *proto.Writer, ids []proto.ID) {
					for _, id := range ids {
						_ = w.Write(proto.TChunk, proto.ChunkHeader(id, proto.EncRaw, 1), []byte("x"))
					}
				}
			}
			dir := newRepo(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := backup.Run(ctx, openRepo(t, dir), hostile(tc.nodes, onWant), backup.Options{Host: "evil", CacheDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
			sns, _ := openRepo(t, dir).Snapshots(context.Background(), "")
			if len(sns) != 0 {
				t.Fatal("snapshot written")
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
