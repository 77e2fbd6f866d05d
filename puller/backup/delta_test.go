package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/internal/repotest"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/klauspost/compress/zstd"
)

// agentVersion serves with the real agent code, capped at a protocol
// version (0: newest).
func agentVersion(cfg *agent.Config, max int) peer {
	return func(ctx context.Context, in io.Reader, out io.Writer) error {
		s := &agent.Server{Config: cfg, In: in, Out: out, MaxVersion: max}
		return s.Serve(ctx, agent.VerbBackup)
	}
}

// pageChurn rewrites n scattered 4 KiB pages of a file in place, as SQLite
// does, and appends one page.
func pageChurn(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	fi, err := f.Stat()
	must(t, err)
	pages := fi.Size() / 4096
	page := make([]byte, 4096)
	for i := 0; i < n; i++ {
		_, _ = rand.Read(page)
		_, err := f.WriteAt(page, (int64(i)*7919%pages)*4096)
		must(t, err)
	}
	_, err = f.WriteAt(page, pages*4096)
	must(t, err)
}

func deltaFixture(t *testing.T) (data string, cfg *agent.Config, dir string) {
	t.Helper()
	data = filepath.Join(t.TempDir(), "data")
	must(t, os.MkdirAll(filepath.Join(data, "db"), 0o755))
	db := make([]byte, 6<<20)
	for i := range db { // compressible but not trivially: like database pages
		db[i] = byte(i/4096) ^ byte(i%251)
	}
	must(t, os.WriteFile(filepath.Join(data, "db", "db.sqlite"), db, 0o644))
	must(t, os.WriteFile(filepath.Join(data, "access.log"), bytes.Repeat([]byte("GET /api/v1/ 200\n"), 20000), 0o644))
	cfg, err := agent.ParseConfig([]byte(`{"host":"vps","data_paths":["`+data+`"],"state_dir":"`+filepath.Join(t.TempDir(), "state")+`"}`), "test")
	must(t, err)
	return data, cfg, newRepo(t)
}

func verifyRestore(t *testing.T, dir, data string) {
	t.Helper()
	r := openRepo(t, dir)
	sn, err := r.Find(context.Background(), "vps", "latest")
	must(t, err)
	target := t.TempDir()
	_, err = restore.Local(context.Background(), r, sn, target, restore.LocalOptions{})
	must(t, err)
	diffs, err := treecmp.Compare(data, filepath.Join(target, data), treecmp.Options{})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("restore differs: %v", diffs)
	}
}

// TestDeltasRebuildChunks: page churn travels as deltas, the rebuilt
// chunks are the real ones (the restore is byte-identical), and far fewer
// bytes move than the chunks' size.
func TestDeltasRebuildChunks(t *testing.T) {
	data, cfg, dir := deltaFixture(t)
	opts := backup.Options{Host: "vps", CacheDir: t.TempDir()}
	_, err := backup.Run(context.Background(), openRepo(t, dir), agentVersion(cfg, 0), opts)
	must(t, err)
	pageChurn(t, filepath.Join(data, "db", "db.sqlite"), 40)
	lf, err := os.OpenFile(filepath.Join(data, "access.log"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, _ = lf.WriteString(strings.Repeat("POST /api/v1/login 401\n", 300))
	must(t, lf.Close())

	res, err := backup.Run(context.Background(), openRepo(t, dir), agentVersion(cfg, 0), opts)
	must(t, err)
	t.Logf("deltas %d, fallbacks %d, chunk bytes %d, wire frames %d", res.Deltas, res.DeltaRetries, res.ChunkBytes, res.Wire.BytesIn)
	if res.Version != proto.Version || res.Deltas == 0 || res.DeltaRetries != 0 {
		t.Fatalf("want deltas without fallbacks at version %d, got version %d, %d deltas, %d fallbacks", proto.Version, res.Version, res.Deltas, res.DeltaRetries)
	}
	verifyRestore(t, dir, data)
}

// TestOldPeersStillWork: a version-1 puller with a new agent, and a new
// puller with a version-1 agent, back up without deltas.
func TestOldPeersStillWork(t *testing.T) {
	for _, tc := range []struct {
		name         string
		puller, agnt int
	}{{"old puller", 1, 0}, {"old agent", 0, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			data, cfg, dir := deltaFixture(t)
			opts := backup.Options{Host: "vps", CacheDir: t.TempDir(), MaxVersion: tc.puller}
			_, err := backup.Run(context.Background(), openRepo(t, dir), agentVersion(cfg, tc.agnt), opts)
			must(t, err)
			pageChurn(t, filepath.Join(data, "db", "db.sqlite"), 10)
			res, err := backup.Run(context.Background(), openRepo(t, dir), agentVersion(cfg, tc.agnt), opts)
			must(t, err)
			if res.Version != 1 || res.Deltas != 0 || res.ChunksWanted == 0 {
				t.Fatalf("version %d, %d deltas, %d chunks wanted", res.Version, res.Deltas, res.ChunksWanted)
			}
			verifyRestore(t, dir, data)
		})
	}
}

// TestDeltaBaseMissingFallsBack: the agent's bases point at chunks this
// repository does not hold (a new repository with the same chunker
// parameters): every delta is refused, the chunks come whole, no error.
func TestDeltaBaseMissingFallsBack(t *testing.T) {
	data, cfg, dir := deltaFixture(t)
	opts := backup.Options{Host: "vps", CacheDir: t.TempDir()}
	_, err := backup.Run(context.Background(), openRepo(t, dir), agentVersion(cfg, 0), opts)
	must(t, err)
	pol := openRepo(t, dir).Config().ChunkerPolynomial
	dir2 := filepath.Join(t.TempDir(), "repo2")
	repotest.LowCostKDF(t)
	r2, err := repo.Init(context.Background(), dir2, password, &pol)
	must(t, err)
	r2.Close()
	pageChurn(t, filepath.Join(data, "db", "db.sqlite"), 10)
	res, err := backup.Run(context.Background(), openRepo(t, dir2), agentVersion(cfg, 0), backup.Options{Host: "vps", CacheDir: t.TempDir()})
	must(t, err)
	if res.DeltaRetries == 0 || res.Deltas != 0 {
		t.Fatalf("want every delta to fall back: %d deltas, %d fallbacks", res.Deltas, res.DeltaRetries)
	}
	verifyRestore(t, dir2, data)
}

// hostileDelta backs up one file normally (version 2, whole chunks), then
// in a second session answers the want for the changed chunk with the
// delta bad(base) builds, and the want-full with the true bytes when
// honest is set.
func hostileDelta(t *testing.T, bad func(base proto.ID) []proto.DeltaOp, honest bool) (*backup.Result, error, string, proto.ID) {
	t.Helper()
	dir := newRepo(t)
	cache := t.TempDir()
	v1 := bytes.Repeat([]byte("page-one"), 512)
	v2 := append(bytes.Repeat([]byte("page-two"), 512), v1[4096:]...)
	session := func(content []byte, onWant func(w *proto.Writer, t proto.Type, ids []proto.ID)) (*backup.Result, error) {
		id := proto.Hash(content)
		nodes := []proto.Node{{Name: []byte("db.sqlite"), Type: proto.NodeFile, Mode: 0o644, Size: uint64(len(content)), Chunks: []proto.ChunkRef{{ID: id, Length: uint32(len(content))}}}}
		return backup.Run(context.Background(), openRepo(t, dir), hostileAgent(2, nodes, onWant), backup.Options{Host: "vps", CacheDir: cache})
	}
	_, err := session(v1, func(w *proto.Writer, _ proto.Type, ids []proto.ID) {
		_ = w.Write(proto.TChunk, proto.ChunkHeader(ids[0], proto.EncRaw, len(v1)), v1)
	})
	must(t, err)
	base := proto.Hash(v1)
	res, err := session(v2, func(w *proto.Writer, typ proto.Type, ids []proto.ID) {
		if typ == proto.TWant {
			raw := proto.AppendDeltaOps(nil, bad(base))
			_ = w.Write(proto.TDelta, proto.DeltaHeader(ids[0], len(v2), len(raw)), zstdAll(raw))
			return
		}
		if honest {
			_ = w.Write(proto.TChunk, proto.ChunkHeader(ids[0], proto.EncRaw, len(v2)), v2)
		} else {
			_ = w.Write(proto.TChunk, proto.ChunkHeader(ids[0], proto.EncRaw, len(v1)), v1)
		}
	})
	return res, err, dir, proto.Hash(v2)
}

func TestHostileDeltas(t *testing.T) {
	other := proto.Hash([]byte("another host's chunk"))
	cases := map[string]func(base proto.ID) []proto.DeltaOp{
		"copy beyond the base": func(base proto.ID) []proto.DeltaOp {
			return []proto.DeltaOp{{Length: 4096, Data: bytes.Repeat([]byte("page-two"), 512)}, {Base: base, Offset: 4000, Length: 4096}}
		},
		"wrong bytes": func(base proto.ID) []proto.DeltaOp {
			return []proto.DeltaOp{{Base: base, Offset: 0, Length: 4096}, {Base: base, Offset: 0, Length: 4096}}
		},
		"base of another host": func(base proto.ID) []proto.DeltaOp {
			return []proto.DeltaOp{{Length: 4096, Data: bytes.Repeat([]byte("page-two"), 512)}, {Base: other, Offset: 0, Length: 4096}}
		},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			res, err, dir, want := hostileDelta(t, bad, true)
			must(t, err)
			if res.DeltaRetries != 1 || res.Deltas != 0 {
				t.Fatalf("want one fallback: %d deltas, %d fallbacks", res.Deltas, res.DeltaRetries)
			}
			r := openRepo(t, dir)
			buf, err := r.LoadBlob(context.Background(), restic.DataBlob, restic.ID(want), nil)
			must(t, err)
			if proto.Hash(buf) != want {
				t.Fatal("stored blob does not match its ID")
			}
		})
		t.Run(name+", then a lying whole chunk", func(t *testing.T) {
			_, err, dir, want := hostileDelta(t, bad, false)
			if err == nil || !strings.Contains(err.Error(), "does not match its ID") {
				t.Fatalf("want a mismatch error, got %v", err)
			}
			r := openRepo(t, dir)
			if _, ok := r.LookupBlobSize(restic.DataBlob, restic.ID(want)); ok {
				t.Fatal("something was stored under the announced ID")
			}
			sns, _ := r.Snapshots(context.Background(), "")
			if len(sns) != 1 {
				t.Fatalf("want only the first snapshot, have %d", len(sns))
			}
		})
	}
}

func zstdAll(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}
