package restore_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/transport"
)

// TestRestoreWantFlood: a restore agent that asks for the same chunk over
// and over (the audit's 50 want frames made the NAS send 22.6 GB) gets it
// once; the repeat is a protocol error that ends the session.
func TestRestoreWantFlood(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	content := []byte(strings.Repeat("a chunk worth asking for twice\n", 4096))
	sn := saveSnapshot(t, ctx, r, mt, "/srv/data", func(w *treeWriter) ([]*data.Node, []*data.Node) {
		id, _, _, err := w.up.SaveBlob(ctx, restic.DataBlob, content, restic.ID{}, false)
		must(t, err)
		return []*data.Node{{Name: "db.sqlite", Type: data.NodeTypeFile, Mode: 0o644, ModTime: mt, Size: uint64(len(content)), Content: restic.IDs{id}}}, nil
	})

	chunks := make(chan int, 1)
	flood := pipeAgent(func(in io.Reader, out io.Writer) {
		c := proto.NewConn(in, out)
		var h proto.Hello
		if c.Expect(proto.THello, &h) != nil {
			return
		}
		_ = c.Send(proto.THelloReply, &proto.HelloReply{Version: proto.Version, Verb: "restore", DataPaths: []string{"/srv/data"}, RestoreAllowed: true})
		var ids []proto.ID
		for {
			ft, p, err := c.R.Read()
			if err != nil {
				return
			}
			if ft == proto.TNode {
				var n proto.Node
				_ = proto.Decode(ft, p, &n)
				for _, ch := range n.Chunks {
					ids = append(ids, ch.ID)
				}
			}
			if ft == proto.TManifestEnd {
				break
			}
		}
		for i := 0; i < 50; i++ {
			_ = c.W.Write(proto.TRestoreWant, proto.EncodeWant(ids))
		}
		_ = c.W.Flush()
		n := 0
		for {
			ft, _, err := c.R.Read()
			if err != nil {
				break
			}
			if ft == proto.TChunk {
				n++
			}
		}
		chunks <- n
	})
	_, err := restore.Agent(ctx, r, sn, flood, restore.AgentOptions{})
	if err == nil || !errors.Is(err, proto.ErrFrame) || !strings.Contains(err.Error(), "second time") {
		t.Fatalf("want a protocol error for the repeated want, got %v", err)
	}
	if n := <-chunks; n > 1 {
		t.Fatalf("the puller sent the chunk %d times", n)
	}
}

// pipeAgent runs fn as the agent end of a session on pipes.
type pipeAgent func(in io.Reader, out io.Writer)

func (fn pipeAgent) Connect(ctx context.Context, _ string) (transport.Wire, error) {
	toAgent, fromPuller := io.Pipe()
	toPuller, fromAgent := io.Pipe()
	w := &wire{r: toPuller, w: fromPuller, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		fn(toAgent, fromAgent)
		fromAgent.Close()
		toAgent.Close()
	}()
	context.AfterFunc(ctx, func() { toPuller.Close(); toAgent.Close() })
	return w, nil
}

type wire struct {
	r    *io.PipeReader
	w    *io.PipeWriter
	done chan struct{}
}

func (w *wire) Read(p []byte) (int, error)  { return w.r.Read(p) }
func (w *wire) Write(p []byte) (int, error) { return w.w.Write(p) }
func (w *wire) CloseWrite() error           { return w.w.Close() }
func (w *wire) Close() error {
	w.w.Close()
	w.r.Close()
	<-w.done
	return nil
}
func (w *wire) Stats() transport.Stats { return transport.Stats{} }
func (w *wire) Stderr() string         { return "" }
