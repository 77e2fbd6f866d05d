package backup_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
)

// phaseLog records the phases a backup reports.
type phaseLog struct {
	mu     sync.Mutex
	phases []string
}

func (p *phaseLog) Phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.phases) == 0 || p.phases[len(p.phases)-1] != name {
		p.phases = append(p.phases, name)
	}
}
func (p *phaseLog) Counts(int64, int64, int64, int64) {}

// TestAgentReportsPreSyncAndFreeze backs up through the real agent code:
// with both sides new, the agent's progress frames split the freeze
// request into pre-sync and freeze; with an agent or a puller from before
// progress frames the backup works as before and shows the one phase.
func TestAgentReportsPreSyncAndFreeze(t *testing.T) {
	for _, tc := range []struct {
		name      string
		oldAgent  bool
		oldPuller bool
		want      string
		absent    []string
	}{
		{"new agent, new puller", false, false, "pre-sync freeze manifest transfer snapshot", []string{"pre-sync+freeze"}},
		{"agent without progress", true, false, "pre-sync+freeze manifest transfer snapshot", []string{"pre-sync", "freeze"}},
		{"puller without progress", false, true, "pre-sync+freeze manifest transfer snapshot", []string{"pre-sync", "freeze"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cfg, dir := deltaFixture(t)
			ag := peer(func(ctx context.Context, in io.Reader, out io.Writer) error {
				s := &agent.Server{Config: cfg, In: in, Out: out, NoProgress: tc.oldAgent}
				return s.Serve(ctx, agent.VerbBackup)
			})
			var log phaseLog
			opts := backup.Options{Host: "vps", CacheDir: t.TempDir(), Progress: &log, NoProgressFrames: tc.oldPuller}
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
		})
	}
}

// TestHostileProgressFrames: progress frames the puller did not agree to,
// a phase it does not know (with control characters), and a flood end the
// session with a protocol error that quotes what the agent said.
func TestHostileProgressFrames(t *testing.T) {
	flood := make([]string, proto.MaxProgress+1)
	for i := range flood {
		flood[i] = proto.PhasePreSync
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
