package backup_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/repo"
	"github.com/restic/chunker"
)

// TestPendingRepository pulls while the repository is still being opened:
// the first open remembers the chunker polynomial, the next greets the
// agent with it before the key is derived, and a remembered polynomial
// that is wrong (the repository made anew at the same path) is caught and
// the agent greeted again with the right one.
func TestPendingRepository(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	must(t, os.MkdirAll(data, 0o755))
	must(t, os.WriteFile(filepath.Join(data, "db.sqlite"), randomBytes(3, 6<<20), 0o644))
	cfg, err := agent.ParseConfig([]byte(`{"host":"vps","data_paths":["`+data+`"],"state_dir":"`+filepath.Join(t.TempDir(), "state")+`"}`), "test")
	must(t, err)
	dir := newRepo(t)
	cache := t.TempDir()
	ctx := context.Background()
	pull := func() (*backup.Result, *repo.Opening) {
		t.Helper()
		// As haul backup opens it: the index is loaded by Lock alone, so
		// a no-change pull asking for nothing shows Lock loaded it.
		op := repo.OpenAsyncForLock(ctx, dir, password, cache)
		locked := false
		res, err := backup.RunPending(ctx, backup.Pending{Opening: op, Lock: func(ctx context.Context, r *repo.Repo) (context.Context, func(), error) {
			unlock, lctx, err := r.Lock(ctx, false, 0, nil)
			locked = err == nil
			return lctx, unlock, err
		}}, inProcessAgent(cfg), backup.Options{Host: "vps", CacheDir: cache})
		must(t, err)
		if !locked {
			t.Fatal("the pull did not lock the repository")
		}
		r, err := op.Wait(ctx)
		must(t, err)
		t.Cleanup(func() { r.Close() })
		return res, op
	}
	first, op := pull()
	if op.Polynomial != 0 || first.ChunksWanted == 0 {
		t.Fatalf("first pull: remembered polynomial %v, %d chunks wanted", op.Polynomial, first.ChunksWanted)
	}
	res, op := pull()
	r, _ := op.Wait(ctx)
	if op.Polynomial != r.Config().ChunkerPolynomial {
		t.Fatalf("second open remembered polynomial %v, the repository's is %v", op.Polynomial, r.Config().ChunkerPolynomial)
	}
	if res.ChunksWanted != 0 {
		t.Fatalf("no-change pull asked for %d chunks", res.ChunksWanted)
	}

	// A wrong memo: the agent would chunk with another polynomial, and the
	// chunk IDs would not be restic's. The pull must greet again.
	memos, err := filepath.Glob(filepath.Join(cache, "repositories", "*.json"))
	must(t, err)
	if len(memos) != 1 {
		t.Fatalf("memo files: %v", memos)
	}
	wrong, err := chunker.RandomPolynomial()
	must(t, err)
	must(t, os.WriteFile(memos[0], []byte(`{"chunker_polynomial":"`+strconv.FormatUint(uint64(wrong), 16)+`"}`), 0o600))
	res, op = pull()
	if op.Polynomial != wrong {
		t.Fatalf("the wrong memo was not used: %v", op.Polynomial)
	}
	if res.ChunksWanted != 0 {
		t.Fatalf("after a wrong memo: %d chunks wanted (the agent chunked with the wrong polynomial)", res.ChunksWanted)
	}
	if op2 := repo.OpenAsync(ctx, dir, password, cache); op2.Polynomial != r.Config().ChunkerPolynomial {
		t.Fatalf("the memo was not corrected: %v", op2.Polynomial)
	} else if r2, err := op2.Wait(ctx); err == nil {
		r2.Close()
	}
}

// TestPendingRepositoryWrongPassword: a repository that cannot be opened
// ends the session after the greeting: the agent freezes nothing.
func TestPendingRepositoryWrongPassword(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	must(t, os.MkdirAll(data, 0o755))
	cfg, err := agent.ParseConfig([]byte(`{"host":"vps","data_paths":["`+data+`"],"state_dir":"`+filepath.Join(t.TempDir(), "state")+`"}`), "test")
	must(t, err)
	dir := newRepo(t)
	cache := t.TempDir()
	ctx := context.Background()
	op := repo.OpenAsync(ctx, dir, password, cache)
	_, err = backup.RunPending(ctx, backup.Pending{Opening: op}, inProcessAgent(cfg), backup.Options{Host: "vps", CacheDir: cache})
	must(t, err)
	r, _ := op.Wait(ctx)
	r.Close()

	op = repo.OpenAsync(ctx, dir, "wrong password", cache)
	if op.Polynomial == 0 {
		t.Fatal("no polynomial remembered: the session would not overlap the key derivation")
	}
	res, err := backup.RunPending(ctx, backup.Pending{Opening: op}, inProcessAgent(cfg), backup.Options{Host: "vps", CacheDir: cache})
	if err == nil || op.Err() == nil {
		t.Fatalf("wrong password: err %v, open error %v", err, op.Err())
	}
	if _, froze := res.Phases["freeze"]; froze || res.Phases["connect"] == 0 {
		t.Fatalf("phases %v: want a connection and no freeze", res.Phases)
	}
	t.Logf("error: %v", err)
}
