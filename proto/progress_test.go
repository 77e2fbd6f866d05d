package proto

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProgressCountsChecked: a puller takes counts frames of the phase in
// progress that only go forward and never pass their totals; anything
// else, and more than the rate bound, is a protocol error that quotes
// nothing raw.
func TestProgressCountsChecked(t *testing.T) {
	begin := `{"phase":"pre-sync"}`
	for _, tc := range []struct {
		name   string
		counts bool
		frames []string
		want   string // "" : all accepted
	}{
		{"counts without totals", true, []string{begin, `{"phase":"pre-sync","files":1,"bytes":10}`, `{"phase":"pre-sync","files":5,"bytes":10}`}, ""},
		{"counts with totals", true, []string{begin, `{"phase":"pre-sync","files":1,"bytes":10,"files_total":9,"bytes_total":90}`, `{"phase":"pre-sync","files":9,"bytes":90,"files_total":9,"bytes_total":90}`}, ""},
		{"next phase starts again", true, []string{begin, `{"phase":"pre-sync","files":9,"bytes":90}`, `{"phase":"freeze"}`, `{"phase":"freeze","files":1,"bytes":1}`}, ""},
		{"not agreed", false, []string{begin, `{"phase":"pre-sync","files":1,"bytes":10}`}, `did not both list "progress-counts"`},
		{"negative", true, []string{begin, `{"phase":"pre-sync","files":-1,"bytes":10}`}, "negative files"},
		{"negative total", true, []string{begin, `{"phase":"pre-sync","files":1,"bytes":1,"files_total":2,"bytes_total":-5}`}, "negative bytes"},
		{"done over total", true, []string{begin, `{"phase":"pre-sync","files":3,"bytes":10,"files_total":2,"bytes_total":90}`}, "3 files done of a total of 2"},
		{"going back", true, []string{begin, `{"phase":"pre-sync","files":3,"bytes":10}`, `{"phase":"pre-sync","files":3,"bytes":9}`}, "bytes done went back from 10 to 9"},
		{"total going back", true, []string{begin, `{"phase":"pre-sync","files":1,"bytes":1,"files_total":5,"bytes_total":5}`, `{"phase":"pre-sync","files":1,"bytes":1,"files_total":4,"bytes_total":5}`}, "total of files went back"},
		{"total dropped", true, []string{begin, `{"phase":"pre-sync","files":1,"bytes":1,"files_total":5,"bytes_total":5}`, `{"phase":"pre-sync","files":1,"bytes":1}`}, "total of files went back"},
		{"half a count", true, []string{begin, `{"phase":"pre-sync","files":1}`}, "without bytes done"},
		{"counts before the phase", true, []string{`{"phase":"pre-sync","files":1,"bytes":1}`}, `phase "pre-sync", but the phase in progress is ""`},
		{"counts of another phase", true, []string{begin, `{"phase":"freeze","files":1,"bytes":1}`}, `of phase "freeze"`},
		{"hostile phase", true, []string{begin, `{"phase":"\u001b[2J","files":1,"bytes":1}`}, `"\x1b[2J"`},
		{"oversized", true, []string{begin, `{"phase":"pre-sync","files":1,"bytes":1,"x":"` + strings.Repeat("a", MaxProgressFrame) + `"}`}, "at most 512"},
		{"not a number", true, []string{begin, `{"phase":"pre-sync","files":"1e99","bytes":1}`}, "progress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ProgressTracker{Enabled: true, Counts: tc.counts}
			var err error
			for _, f := range tc.frames {
				if _, err = p.Frame([]byte(f), BackupPhases); err != nil {
					break
				}
			}
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a protocol error with %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\x1b") {
				t.Errorf("error carries a raw escape: %q", err)
			}
		})
	}
}

// TestProgressCountsRateBound: counts frames delayed and delivered at once
// pass while within CountsBurst plus MaxCountsPerSecond a second since the
// session began; a flood past that fails.
func TestProgressCountsRateBound(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	p := ProgressTracker{Enabled: true, Counts: true, Start: start, now: func() time.Time { return now }}
	frame := func(files int) error {
		_, err := p.Frame([]byte(`{"phase":"pre-sync","files":`+strconv.Itoa(files)+`,"bytes":0}`), BackupPhases)
		return err
	}
	if _, err := p.Frame([]byte(`{"phase":"pre-sync"}`), BackupPhases); err != nil {
		t.Fatal(err)
	}
	n := 0
	for range CountsBurst {
		n++
		if err := frame(n); err != nil {
			t.Fatalf("frame %d of the burst: %v", n, err)
		}
	}
	n++
	if err := frame(n); err == nil || !strings.Contains(err.Error(), "more than 8 a second") {
		t.Fatalf("frame past the burst at once: err = %v", err)
	}

	// An honest agent (one frame per MinCountsInterval) over a minute,
	// all of it delivered late, at once: accepted.
	now = start
	p = ProgressTracker{Enabled: true, Counts: true, Start: start, now: func() time.Time { return now }}
	if _, err := p.Frame([]byte(`{"phase":"pre-sync"}`), BackupPhases); err != nil {
		t.Fatal(err)
	}
	now = start.Add(time.Minute)
	for i := range int(time.Minute / MinCountsInterval) {
		if err := frame(i); err != nil {
			t.Fatalf("frame %d of an honest minute: %v", i, err)
		}
	}
}
