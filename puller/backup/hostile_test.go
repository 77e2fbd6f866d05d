package backup_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/transport"
)

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "hostile-agent" {
		os.Exit(runEvilAgent(os.Args[2]))
	}
	if len(os.Args) == 3 && os.Args[1] == "rss-case" {
		os.Exit(runRSSCase(os.Args[2]))
	}
	os.Exit(m.Run())
}

// evilTransports connects to a scenario in-process, over the exec
// transport (the test binary as the agent process) and through a real
// sshd whose authorized_keys runs it as the forced command. With -short
// (make test-short) only in-process: the limits are the puller's, the
// same over every transport, and make test runs all three.
func evilTransports(t *testing.T, names ...string) map[string]func(name string) transport.Connecter {
	t.Helper()
	if testing.Short() {
		return map[string]func(string) transport.Connecter{
			"pipe": func(n string) transport.Connecter { return evils[n].inProcess() },
		}
	}
	self, err := os.Executable()
	must(t, err)
	keys := t.TempDir()
	kps := map[string]testenv.KeyPair{}
	var ak []testenv.AuthorizedKey
	for _, n := range names {
		kp := testenv.NewKeyPair(t, keys, n)
		kps[n] = kp
		ak = append(ak, testenv.AuthorizedKey{Key: kp, Options: fmt.Sprintf(`command="%s hostile-agent %s",restrict`, self, n)})
	}
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Keys: ak})
	return map[string]func(string) transport.Connecter{
		"pipe": func(n string) transport.Connecter { return evils[n].inProcess() },
		"exec": func(n string) transport.Connecter {
			return &transport.Exec{Argv: []string{self, "hostile-agent", n}}
		},
		"sshd": func(n string) transport.Connecter {
			return &transport.SSH{Host: "evil", Address: sshd.Addr, User: sshd.User, IdentityFile: kps[n].PrivatePath,
				KnownHosts: sshd.KnownHosts, Timeout: 10 * time.Second}
		},
	}
}

// small are limits a test can exceed in a moment; the defaults are far
// larger (see DefaultLimits and the memory benchmark).
var small = backup.Limits{
	MaxEntries: 1000, MaxDirEntries: 1000, MaxDepth: 50, MaxChunkRefs: 1000,
	MaxTreeBytes: 256 << 10, MaxBytesAdded: 512 << 10,
	IdleTimeout: 5 * time.Second, Deadline: time.Minute, // an agent under -race on a loaded machine starts slowly
}

// TestHostileAgentLimits: each bound of the puller against a compromised
// VPS, over every transport. A run over a limit fails with an error that
// names the limit and its config key, writes no snapshot, and leaves the
// repository usable.
func TestHostileAgentLimits(t *testing.T) {
	cases := []struct {
		scenario string
		key      string // the limit the error must name
		limits   func(l *backup.Limits)
	}{
		{"empty-files", "max_dir_entries", func(l *backup.Limits) { l.MaxEntries = 10_000 }},
		{"deep", "max_depth", nil},
		{"entries", "max_entries", nil},
		{"chunk-refs", "max_chunk_refs", nil},
		{"long-names", "max_tree_bytes", nil},
		{"quota", "max_bytes_added", nil},
		{"stall", "idle_timeout", nil},
		{"trickle", "deadline", func(l *backup.Limits) { l.Deadline = 2 * time.Second }},
	}
	var names []string
	for _, c := range cases {
		names = append(names, c.scenario)
	}
	for tname, connect := range evilTransports(t, names...) {
		t.Run(tname, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.scenario, func(t *testing.T) {
					dir := newRepo(t)
					lim := small
					if tc.limits != nil {
						tc.limits(&lim)
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()
					start := time.Now()
					_, err := backup.Run(ctx, openRepo(t, dir), connect(tc.scenario), backup.Options{Host: "evil", CacheDir: t.TempDir(), Limits: lim})
					if err == nil {
						t.Fatal("a hostile manifest was accepted")
					}
					t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
					var le *backup.LimitError
					var te *backup.TimeoutError
					switch {
					case errors.As(err, &le):
						if le.Key != tc.key {
							t.Fatalf("limit %s reached, want %s", le.Key, tc.key)
						}
					case errors.As(err, &te):
						if te.Key != tc.key {
							t.Fatalf("timeout %s, want %s", te.Key, tc.key)
						}
					default:
						t.Fatalf("want an error naming %s, got %v", tc.key, err)
					}
					if !strings.Contains(err.Error(), tc.key+" = ") || !strings.Contains(err.Error(), "[hosts.limits]") {
						t.Errorf("the error does not say which key to raise: %v", err)
					}
					if d := time.Since(start); d > 30*time.Second {
						t.Errorf("the puller took %v to give up", d)
					}
					r := openRepo(t, dir)
					sns, err := r.Snapshots(context.Background(), "")
					must(t, err)
					if len(sns) != 0 {
						t.Fatal("a snapshot was written")
					}
				})
			}
		})
	}
}

// TestHostileAgentLies: what the agent claims never becomes a number in
// the snapshot; what it says never reaches a terminal raw; padded zstd
// frames are not stored as sent; deltas cannot make the puller work out
// of proportion to the chunk.
func TestHostileAgentLies(t *testing.T) {
	scenarios := []string{"lying-counts", "terminal-injection", "terminal-injection-stderr", "padded-zstd", "delta-bases", "delta-one-byte-copies", "delta-huge-bases"}
	for tname, connect := range evilTransports(t, scenarios...) {
		t.Run(tname, func(t *testing.T) {
			run := func(t *testing.T, dir, cache, scenario string) (*backup.Result, error) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				return backup.Run(ctx, openRepo(t, dir), connect(scenario), backup.Options{Host: "evil", CacheDir: cache})
			}
			t.Run("counts", func(t *testing.T) {
				dir := newRepo(t)
				res, err := run(t, dir, t.TempDir(), "lying-counts")
				must(t, err)
				if res.Files != 0 || res.Bytes != 0 || res.Dirs != 1 {
					t.Fatalf("the agent's counts were taken: %d files, %d dirs, %d bytes", res.Files, res.Dirs, res.Bytes)
				}
				sn, err := openRepo(t, dir).Find(context.Background(), "evil", "latest")
				must(t, err)
				if s := sn.Summary; s.TotalFilesProcessed != 0 || s.TotalBytesProcessed != 0 {
					t.Fatalf("snapshot summary holds the agent's numbers: %+v", s)
				}
			})
			t.Run("terminal injection", func(t *testing.T) {
				_, err := run(t, newRepo(t), t.TempDir(), "terminal-injection")
				if err == nil {
					t.Fatal("an error frame was not an error")
				}
				msg := err.Error()
				t.Logf("%s", msg)
				if strings.ContainsAny(msg, "\x1b\a\r") {
					t.Fatalf("the agent's control characters reached the error: %q", msg)
				}
				if !strings.Contains(msg, `\x1b]52;`) || !strings.Contains(msg, "disk on fire") {
					t.Fatalf("the agent's message is not shown escaped: %q", msg)
				}
				if tname == "pipe" {
					return // no stderr
				}
				_, err = run(t, newRepo(t), t.TempDir(), "terminal-injection-stderr")
				if err == nil {
					t.Fatal("an agent that hung up was not an error")
				}
				msg = err.Error()
				t.Logf("%s", msg)
				if strings.ContainsAny(msg, "\x1b\r") || !strings.Contains(msg, `\x1b[31mred`) {
					t.Fatalf("the agent's stderr is not shown escaped: %q", msg)
				}
			})
			t.Run("padded zstd", func(t *testing.T) {
				res, err := run(t, newRepo(t), t.TempDir(), "padded-zstd")
				must(t, err)
				if res.Recompressed != 1 || res.BytesAdded > 16<<10 {
					t.Fatalf("a padded frame was stored: %d recompressed, %d bytes added for a %d-byte chunk", res.Recompressed, res.BytesAdded, len(compressible()))
				}
			})
			for _, sc := range []string{"delta-one-byte-copies", "delta-huge-bases"} {
				t.Run(sc, func(t *testing.T) {
					dir, cache := newRepo(t), t.TempDir()
					_, err := run(t, dir, cache, "delta-bases")
					must(t, err)
					res, err := run(t, dir, cache, sc)
					must(t, err)
					t.Logf("%d deltas, %d fallbacks, %d base bytes loaded", res.Deltas, res.DeltaRetries, res.BaseBytesLoaded)
					if res.Deltas != 0 || res.DeltaRetries != 1 {
						t.Fatalf("want the delta refused and the chunk asked for whole: %d deltas, %d fallbacks", res.Deltas, res.DeltaRetries)
					}
					if limit := int64(64<<10 + 2*proto.MaxChunk); res.BaseBytesLoaded > limit {
						t.Fatalf("loaded %d base bytes for one small delta, more than %d", res.BaseBytesLoaded, limit)
					}
				})
			}
		})
	}
}

// TestPoisonedEarlierSnapshot: a host's earlier snapshot holds a tree over
// max_tree_bytes (written with a higher limit, or before there were
// limits). The next backup does not read it, says so, and succeeds. The
// second run has a cache_dir of its own: with the first run's host record
// it would not walk the snapshot at all, so the record is rebuilt from the
// snapshots, which is where the bound applies.
func TestPoisonedEarlierSnapshot(t *testing.T) {
	dir, cache := newRepo(t), t.TempDir()
	ctx := context.Background()
	big := backup.Limits{MaxTreeBytes: 64 << 20}
	if _, err := backup.Run(ctx, openRepo(t, dir), evils["long-names"].inProcess(), backup.Options{Host: "evil", CacheDir: cache, Limits: big}); err != nil {
		t.Fatal(err)
	}
	var logs []string
	res, err := backup.Run(ctx, openRepo(t, dir), evils["lying-counts"].inProcess(), backup.Options{Host: "evil", CacheDir: t.TempDir(),
		Limits: backup.Limits{MaxTreeBytes: 256 << 10}, Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }})
	must(t, err)
	if !strings.Contains(strings.Join(logs, "\n"), "1 trees of earlier snapshots are over max_tree_bytes") {
		t.Fatalf("the skipped tree is not reported; log:\n%s", strings.Join(logs, "\n"))
	}
	if res.SnapshotID == "" {
		t.Fatal("no snapshot")
	}
}
