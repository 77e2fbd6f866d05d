package runlog

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/ptytest"
)

// TestProgressOnARealTerminal drives a host through a backup's phases with
// the progress line on a real pseudo-terminal, and checks the screen: the
// phase and elapsed time before totals are known, then done/total bytes,
// percent, files, a moving-window rate and an ETA. The same run on a plain
// file shows none of it. The captured screen is in docs/operations.md.
func TestProgressOnARealTerminal(t *testing.T) {
	pty := ptytest.Open(t)
	if !IsTerminal(pty.Slave) {
		t.Fatal("IsTerminal(pty slave) = false")
	}
	plain, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	if IsTerminal(plain) {
		t.Fatal("IsTerminal(regular file) = true")
	}
	for _, out := range []*os.File{pty.Slave, plain} {
		opts := Options{Events: out}
		if IsTerminal(out) {
			opts.Progress = out
		}
		l := New(opts)
		h := l.Host("vps")
		h.Phase("pre-sync+freeze")
		time.Sleep(600 * time.Millisecond)
		h.Phase("transfer")
		const total = 100 << 20
		for i := int64(1); i <= 12; i++ { // 4 MiB every 250 ms: 16 MiB/s
			h.Counts(i*4<<20, total, 40, 100)
			time.Sleep(250 * time.Millisecond)
		}
		h.Logf("vps: snapshot 1234abcd saved")
		h.Done()
		l.Close()
	}
	pty.CloseSlave()
	screen := pty.Output()
	for _, re := range []string{
		`vps: pre-sync\+freeze 0:0\d`,
		`vps: transfer 0:0\d \d+\.\d MiB/100\.0 MiB \d+% 40/100 files \d+\.\d MiB/s ETA 0:0\d`,
		`vps: transfer 0:0\d 48\.0 MiB/100\.0 MiB 48% 40/100 files`,
	} {
		if !regexp.MustCompile(re).MatchString(screen) {
			t.Errorf("terminal screen lacks %s:\n%q", re, screen)
		}
	}
	// The rate is the recent one: 16 MiB/s, give or take the sleeps.
	m := regexp.MustCompile(`(\d+\.\d) MiB/s ETA`).FindAllStringSubmatch(screen, -1)
	if len(m) == 0 || !strings.HasPrefix(m[len(m)-1][1], "1") {
		t.Errorf("rate %v, want about 16 MiB/s", m)
	}
	b, _ := os.ReadFile(plain.Name())
	if bytes.Contains(b, []byte("\r")) || bytes.Contains(b, []byte("ETA")) || bytes.Contains(b, []byte("%")) {
		t.Errorf("non-terminal output has progress:\n%q", b)
	}
	if !bytes.Contains(b, []byte("snapshot 1234abcd saved")) {
		t.Errorf("non-terminal output lacks the event line:\n%q", b)
	}
	if os.Getenv("HAUL_PRINT_SCREEN") != "" {
		t.Logf("screen:\n%s", screen)
	}
}

func TestRateWindowIsNotCumulative(t *testing.T) {
	var w rateWindow
	t0 := time.Unix(1000, 0)
	// 60 s at 1 MiB/s, then 10 s stalled: the average since the start
	// would still say ~0.86 MiB/s; the window says 0.
	for i := 0; i <= 60; i++ {
		w.add(t0.Add(time.Duration(i)*time.Second), int64(i)<<20)
	}
	for i := 61; i <= 71; i++ {
		w.add(t0.Add(time.Duration(i)*time.Second), 60<<20)
	}
	if r := w.perSecond(); r != 0 {
		t.Errorf("rate after a 10 s stall = %.0f B/s, want 0", r)
	}
	if got := Clock(3723 * time.Second); got != "1:02:03" {
		t.Errorf("Clock = %s", got)
	}
}
