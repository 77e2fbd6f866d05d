package backup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
)

// phaseLog records the phases a backup reports, and the last counts of
// each.
type phaseLog struct {
	mu     sync.Mutex
	phases []string
	counts map[string][4]int64 // bytes, total, files, total
}

func (p *phaseLog) Phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.phases) == 0 || p.phases[len(p.phases)-1] != name {
		p.phases = append(p.phases, name)
	}
}
func (p *phaseLog) Counts(b, bt, f, ft int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts == nil {
		p.counts = map[string][4]int64{}
	}
	p.counts[p.phases[len(p.phases)-1]] = [4]int64{b, bt, f, ft}
}

// TestAgentReportsPreSyncAndFreeze backs up through the real agent code:
// with both sides new, the agent's progress frames split the freeze
// request into pre-sync and freeze; with an agent or a puller from before
// progress frames the backup works as before and shows the one phase.
func TestAgentReportsPreSyncAndFreeze(t *testing.T) {
	for _, tc := range []struct {
		name      string
		oldAgent  bool
		oldPuller bool
		// an agent or puller with progress but from before its counts
		noCountsAgent, noCountsPuller bool
		want                          string
		absent                        []string
	}{
		{"new agent, new puller", false, false, false, false, "pre-sync freeze manifest transfer snapshot", []string{"pre-sync+freeze"}},
		{"agent without progress", true, false, false, false, "pre-sync+freeze manifest transfer snapshot", []string{"pre-sync", "freeze"}},
		{"puller without progress", false, true, false, false, "pre-sync+freeze manifest transfer snapshot", []string{"pre-sync", "freeze"}},
		{"agent without counts", false, false, true, false, "pre-sync freeze manifest transfer snapshot", []string{"pre-sync+freeze"}},
		{"puller without counts", false, false, false, true, "pre-sync freeze manifest transfer snapshot", []string{"pre-sync+freeze"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cfg, dir := deltaFixture(t)
			ag := peer(func(ctx context.Context, in io.Reader, out io.Writer) error {
				s := &agent.Server{Config: cfg, In: in, Out: out, NoProgress: tc.oldAgent, NoProgressCounts: tc.noCountsAgent}
				return s.Serve(ctx, agent.VerbBackup)
			})
			var log phaseLog
			opts := backup.Options{Host: "vps", CacheDir: t.TempDir(), Progress: &log, NoProgressFrames: tc.oldPuller, NoProgressCounts: tc.noCountsPuller}
			_, err := backup.Run(context.Background(), openRepo(t, dir), ag, opts)
			must(t, err)
			got := strings.Join(log.phases, " ")
			if !strings.Contains(got, tc.want) {
				t.Errorf("phases %q, want %q in order", got, tc.want)
			}
			for _, p := range tc.absent {
				if slices.Contains(log.phases, p) {
					t.Errorf("phases %q include %q", got, p)
				}
			}
			// Each sync ends with its counts (files > 0) only when both
			// sides have progress-counts.
			withCounts := !tc.oldAgent && !tc.oldPuller && !tc.noCountsAgent && !tc.noCountsPuller
			for _, p := range []string{"pre-sync", "freeze"} {
				c, ok := log.counts[p]
				if ok != withCounts || ok && c[2] <= 0 {
					t.Errorf("%s counts %v (reported %v), want them %v", p, c, ok, withCounts)
				}
			}
		})
	}
}

// TestHostileProgressFrames: progress frames the puller did not agree to,
// a phase it does not know (with control characters), a flood, and counts
// that are negative, pass their total, go back or come too fast end the
// session with a protocol error that quotes what the agent said escaped.
func TestHostileProgressFrames(t *testing.T) {
	flood := make([]string, proto.MaxProgress+1)
	for i := range flood {
		flood[i] = proto.PhasePreSync
	}
	counts := []string{proto.FeatureProgress, proto.FeatureProgressCounts}
	countsFlood := []string{proto.PhasePreSync}
	for i := range proto.CountsBurst + 1 {
		countsFlood = append(countsFlood, fmt.Sprintf(`{"phase":"pre-sync","files":%d,"bytes":0}`, i))
	}
	for _, tc := range []struct {
		name string
		e    evil
		want string
	}{
		{"unasked", evil{progress: []string{proto.PhasePreSync}}, "did not both list"},
		{"unknown phase", evil{features: []string{proto.FeatureProgress}, progress: []string{"\x1b[2Jpwned"}}, `"\x1b[2Jpwned"`},
		{"restore phase in a backup", evil{features: []string{proto.FeatureProgress}, progress: []string{proto.PhaseSwap}}, `"swap"`},
		{"flood", evil{features: []string{proto.FeatureProgress}, progress: flood}, "more than 16 progress frames"},
		{"counts unasked", evil{features: []string{proto.FeatureProgress}, progress: []string{proto.PhasePreSync, `{"phase":"pre-sync","files":1,"bytes":1}`}}, `did not both list "progress-counts"`},
		{"negative counts", evil{features: counts, progress: []string{proto.PhasePreSync, `{"phase":"pre-sync","files":-1,"bytes":1}`}}, "negative files"},
		{"done over total", evil{features: counts, progress: []string{proto.PhasePreSync, `{"phase":"pre-sync","files":1,"bytes":9,"files_total":1,"bytes_total":8}`}}, "9 bytes done of a total of 8"},
		{"counts going back", evil{features: counts, progress: []string{proto.PhasePreSync, `{"phase":"pre-sync","files":2,"bytes":1}`, `{"phase":"pre-sync","files":1,"bytes":1}`}}, "files done went back"},
		{"counts flood", evil{features: counts, progress: countsFlood}, "more than 8 a second"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := newRepo(t)
			_, err := backup.Run(context.Background(), openRepo(t, dir), tc.e.inProcess(), backup.Options{Host: "vps", CacheDir: t.TempDir()})
			if err == nil || !errors.Is(err, proto.ErrFrame) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a protocol error with %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\x1b") {
				t.Errorf("error carries a raw escape: %q", err)
			}
		})
	}
}
