package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
)

// freezeFrames runs a backup session's freeze on h with a puller whose
// hello lists features, and returns the progress frames before frozen.
func freezeFrames(t *testing.T, h *restoreHost, srv Server, features []string) []proto.Progress {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	srv.Config, srv.In, srv.Out, srv.Log, srv.Quiescer = h.cfg, inR, outW, io.Discard, &fakeQuiescer{}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ctx, VerbBackup)
		outW.CloseWithError(io.EOF)
		inR.Close()
		done <- err
	}()
	defer func() {
		cancel()
		inW.Close()
		outR.Close()
		<-done
	}()
	c := proto.NewConn(outR, inW)
	var reply proto.HelloReply
	if err := c.Send(proto.THello, &proto.Hello{Versions: []int{proto.Version}, Client: "test", ChunkerPolynomial: strconv.FormatUint(testPol, 16), Features: features}); err != nil {
		t.Fatal(err)
	}
	if err := c.Expect(proto.THelloReply, &reply); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(proto.TFreeze, &proto.Freeze{}); err != nil {
		t.Fatal(err)
	}
	var got []proto.Progress
	for {
		typ, p, err := c.R.Read()
		if err != nil {
			t.Fatal(err)
		}
		if typ != proto.TProgress {
			if err := proto.DecodeAs(typ, p, proto.TFrozen, nil); err != nil {
				t.Fatal(err)
			}
			return got
		}
		var m proto.Progress
		if err := proto.Decode(typ, p, &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
}

// TestPreSyncSendsCounts: with both hellos listing progress-counts, the
// agent reports the pre-sync's files and bytes while it runs (the
// interval made short so a tree of 3000 files spans many), ending each
// phase with its final counts; the puller's checks accept every frame.
// The second backup knows the totals from the first.
func TestPreSyncSendsCounts(t *testing.T) {
	h := newRestoreHost(t, "")
	const files, size = 3000, 1000
	for i := range files {
		dir := filepath.Join(h.data, fmt.Sprintf("d%02d", i%30))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := Server{ProgressInterval: time.Millisecond}
	both := []string{proto.FeatureProgress, proto.FeatureProgressCounts}
	for run, wantTotal := range []bool{false, true} {
		frames := freezeFrames(t, h, srv, both)
		// The interval is far shorter than an agent's own: the rate
		// bound is lifted (a session begun an hour ago), the rest checked.
		tr := proto.ProgressTracker{Enabled: true, Counts: true, Start: time.Now().Add(-time.Hour)}
		counts := map[string][]proto.Progress{}
		for _, m := range frames {
			b, _ := proto.Encode(&m)
			if _, err := tr.Frame(b, proto.BackupPhases); err != nil {
				t.Fatalf("run %d: the puller refuses the agent's frame %s: %v", run, b, err)
			}
			if m.HasCounts() {
				counts[m.Phase] = append(counts[m.Phase], m)
			}
		}
		pre := counts[proto.PhasePreSync]
		if len(pre) < 2 {
			t.Fatalf("run %d: %d pre-sync counts frames, want several: %+v", run, len(pre), frames)
		}
		if f := *pre[0].Files; f <= 0 || f >= files {
			t.Errorf("run %d: first pre-sync count %d files, want some of %d", run, f, files)
		}
		last := pre[len(pre)-1]
		if *last.Files != files || *last.Bytes != files*size {
			t.Errorf("run %d: last pre-sync count %d files %d bytes, want %d and %d", run, *last.Files, *last.Bytes, files, files*size)
		}
		if got := last.FilesTotal != nil; got != wantTotal {
			t.Errorf("run %d: totals sent %v, want %v", run, got, wantTotal)
		} else if wantTotal && (*last.FilesTotal != files || *last.BytesTotal != files*size) {
			t.Errorf("run %d: totals %d files %d bytes, want %d and %d", run, *last.FilesTotal, *last.BytesTotal, files, files*size)
		}
		fr := counts[proto.PhaseFreeze]
		if len(fr) == 0 || *fr[len(fr)-1].Files != files || fr[len(fr)-1].FilesTotal == nil || *fr[len(fr)-1].FilesTotal != files {
			t.Errorf("run %d: freeze counts %+v, want them to end at %d of %d files", run, fr, files, files)
		}
	}
}

// TestNoCountsForOlderPullers: a puller that lists progress but not
// progress-counts takes at most proto.MaxProgress frames a session, so it
// gets the phase names only; one without progress gets nothing; an agent
// acting as one from before counts sends names only.
func TestNoCountsForOlderPullers(t *testing.T) {
	h := newRestoreHost(t, "")
	if err := os.MkdirAll(h.data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := os.WriteFile(filepath.Join(h.data, fmt.Sprintf("f%d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		srv      Server
		features []string
		want     int
	}{
		{"puller without counts", Server{ProgressInterval: time.Microsecond}, []string{proto.FeatureProgress}, 2},
		{"puller without progress", Server{ProgressInterval: time.Microsecond}, nil, 0},
		{"agent without counts", Server{ProgressInterval: time.Microsecond, NoProgressCounts: true}, []string{proto.FeatureProgress, proto.FeatureProgressCounts}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames := freezeFrames(t, h, tc.srv, tc.features)
			if len(frames) != tc.want {
				t.Fatalf("%d progress frames, want %d: %+v", len(frames), tc.want, frames)
			}
			for _, m := range frames {
				if m.HasCounts() {
					t.Errorf("counts sent: %+v", m)
				}
			}
		})
	}
}
