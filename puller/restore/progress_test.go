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
)

// TestRestoreProgressOnlyAfterCommit: an agent's progress frames name its
// steps after the commit; one sent while the puller is still sending (to
// pass as a phase the puller is in) is a protocol error, as is one from an
// agent that did not list the feature.
func TestRestoreProgressOnlyAfterCommit(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	sn := saveSnapshot(t, ctx, r, mt, "/srv/data", func(*treeWriter) ([]*data.Node, []*data.Node) {
		return []*data.Node{{Name: "empty", Type: data.NodeTypeFile, Mode: 0o644, ModTime: mt, Content: restic.IDs{}}}, nil
	})

	for _, tc := range []struct {
		name     string
		features []string
		want     string
	}{
		{"before the commit", []string{proto.FeatureProgress}, "before the commit"},
		{"not negotiated", nil, "did not both list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ag := pipeAgent(func(in io.Reader, out io.Writer) {
				c := proto.NewConn(in, out)
				var h proto.Hello
				if c.Expect(proto.THello, &h) != nil {
					return
				}
				_ = c.Send(proto.THelloReply, &proto.HelloReply{Version: proto.Version, Verb: "restore", DataPaths: []string{"/srv/data"}, RestoreAllowed: true, Features: tc.features})
				for {
					ft, _, err := c.R.Read()
					if err != nil || ft == proto.TManifestEnd {
						break
					}
				}
				_ = c.Send(proto.TProgress, &proto.Progress{Phase: proto.PhaseVerify})
				_ = c.W.Write(proto.TRestoreWant)
				_ = c.W.Flush()
				_, _ = io.Copy(io.Discard, in)
			})
			_, err := restore.Agent(ctx, r, sn, ag, restore.AgentOptions{})
			if err == nil || !errors.Is(err, proto.ErrFrame) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a protocol error (%s), got %v", tc.want, err)
			}
		})
	}
}
