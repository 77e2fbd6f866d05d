package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/internal/pipetest"
	"github.com/haulproject/haul/puller/internal/repotest"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/transport"
)

// inProcess serves every verb with the real agent code, its protocol
// capped at maxVersion, over pipes.
type inProcess struct {
	cfg        *agent.Config
	maxVersion int
}

func (a inProcess) Connect(ctx context.Context, verb string) (transport.Wire, error) {
	return pipetest.Peer(func(ctx context.Context, verb string, in io.Reader, out io.Writer) error {
		s := &agent.Server{Config: a.cfg, AllowRestore: true, In: in, Out: out, MaxVersion: a.maxVersion}
		return s.Serve(ctx, verb)
	}).Connect(ctx, verb)
}

func agentConfig(t *testing.T, data string) *agent.Config {
	t.Helper()
	cfg, err := agent.ParseConfig([]byte(fmt.Sprintf(`{"host":"vps","data_paths":[%q],"state_dir":%q}`, data, filepath.Join(t.TempDir(), "state"))), "test")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Every verb the puller speaks (backup, restore, mark-ready, and the bare
// hello rebuild waits with) against agents of each protocol version, from
// pullers of each version: the session runs at the older side's version,
// and the restore reads the second backup's snapshot (at version 3 its
// file was sent as unchanged, its chunks taken from the first).
func TestEveryVerbAgainstEachProtocolVersion(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "srv", "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "db"), make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "repo")
	repotest.LowCostKDF(t)
	r, err := repo.Init(ctx, dir, "pw", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	for agentV := proto.MinVersion; agentV <= proto.Version; agentV++ {
		for pullerV := proto.MinVersion; pullerV <= proto.Version; pullerV++ {
			want := min(agentV, pullerV)
			t.Run(fmt.Sprintf("agent v%d puller v%d", agentV, pullerV), func(t *testing.T) {
				src := inProcess{cfg: agentConfig(t, data), maxVersion: agentV}
				bopts := backup.Options{Host: "vps", CacheDir: t.TempDir(), MaxVersion: pullerV}
				if _, err := backup.Run(ctx, r, src, bopts); err != nil {
					t.Fatalf("backup: %v", err)
				}
				if err := r.LoadIndex(ctx, nil); err != nil { // the packs the first wrote
					t.Fatal(err)
				}
				// The second backup of the unchanged tree: from version
				// 3 on the file comes without its chunk list.
				res, err := backup.Run(ctx, r, src, bopts)
				if err != nil {
					t.Fatalf("second backup: %v", err)
				}
				if res.Version != want {
					t.Errorf("backup ran at version %d, want %d", res.Version, want)
				}
				if wantSame := want >= proto.SameVersion; (res.Manifest.Same == 1) != wantSame || res.Manifest.Same > 1 {
					t.Errorf("second backup at version %d sent %d files as unchanged", want, res.Manifest.Same)
				}
				if res.Files != 1 || res.Bytes != 3<<20 || res.ChunksWanted != 0 {
					t.Errorf("second backup: %d files, %d bytes, %d chunks asked for; want 1, %d, 0", res.Files, res.Bytes, res.ChunksWanted, 3<<20)
				}
				if err := r.LoadIndex(ctx, nil); err != nil {
					t.Fatal(err)
				}
				sn, err := r.Find(ctx, "vps", res.SnapshotID)
				if err != nil {
					t.Fatal(err)
				}

				// rebuild's wait: a hello without a polynomial
				s, err := transport.Dial(ctx, src, "backup", transport.Hello{MaxVersion: pullerV})
				if err != nil {
					t.Fatalf("hello: %v", err)
				}
				if s.Reply.Version != want {
					t.Errorf("hello chose version %d, want %d", s.Reply.Version, want)
				}
				_ = s.Wire.CloseWrite()
				_ = s.Wire.Close()

				// A fresh host takes the restore: its one data path
				// receives the snapshot's one path.
				fresh := filepath.Join(t.TempDir(), "srv", "data")
				onto := inProcess{cfg: agentConfig(t, fresh), maxVersion: agentV}
				rr, err := restore.Agent(ctx, r, sn, onto, restore.AgentOptions{})
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				if rr.Outcome.Marker == "" {
					t.Errorf("restore wrote no ready marker")
				}
				if fi, err := os.Stat(filepath.Join(fresh, "db")); err != nil || fi.Size() != 3<<20 {
					t.Errorf("restored db: %v, %v", fi, err)
				}

				unmarked := inProcess{cfg: agentConfig(t, data), maxVersion: agentV}
				mr, err := restore.MarkReady(ctx, unmarked, sn.ID.String(), "vps")
				if err != nil {
					t.Fatalf("mark ready: %v", err)
				}
				if _, err := os.Stat(mr.Marker); err != nil {
					t.Errorf("mark ready: %v", err)
				}
			})
		}
	}
}

// An agent that shares no version with the puller refuses with the
// `version` error PROTOCOL.md defines, naming both ranges.
func TestNoCommonVersion(t *testing.T) {
	cfg := agentConfig(t, t.TempDir())
	w, err := inProcess{cfg: cfg}.Connect(context.Background(), "restore")
	if err != nil {
		t.Fatal(err)
	}
	c := proto.NewConn(w, w)
	if err := c.Send(proto.THello, &proto.Hello{Versions: []int{proto.Version + 1}, Client: "haul from the future"}); err != nil {
		t.Fatal(err)
	}
	err = c.Expect(proto.THelloReply, &proto.HelloReply{})
	var pe *proto.Error
	if !errors.As(err, &pe) || pe.Code != proto.CodeVersion || !strings.Contains(pe.Message, "no common protocol version") || !strings.Contains(pe.Message, "upgrade the older side") {
		t.Fatalf("hello with only version %d: %v, want a version error", proto.Version+1, err)
	}
	_ = w.Close()
}
