package runlog

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the renderer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPlainLogIsOneLinePerEvent(t *testing.T) {
	var events bytes.Buffer
	l := New(Options{Events: &events})
	h := l.Host("vps1")
	h.Logf("vps1: pulling")
	h.AddBytes(1 << 20)
	h.Errorf("vps1: FAILED: agent said:\nline two")
	l.Logf("run done")
	l.Close()

	line := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d) \S.*$`)
	lines := strings.Split(strings.TrimSuffix(events.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 lines (a two-line message becomes two events), got %q", lines)
	}
	for _, s := range lines {
		if !line.MatchString(s) || strings.ContainsAny(s, "\r\033") {
			t.Errorf("not a plain timestamped line: %q", s)
		}
	}
	if tail := h.Tail(); !strings.Contains(tail, "pulling") || strings.Contains(tail, "run done") {
		t.Errorf("host tail = %q", tail)
	}
	if !strings.Contains(l.Tail(), "run done") || !strings.Contains(l.Tail(), "line two") {
		t.Errorf("run tail = %q", l.Tail())
	}
}

func TestQuietPrintsOnlyFailuresButKeepsTheTail(t *testing.T) {
	var events bytes.Buffer
	l := New(Options{Events: &events, Quiet: true})
	h := l.Host("vps1")
	h.Logf("vps1: pulling")
	h.Errorf("vps1: FAILED: boom")
	l.Close()
	if out := events.String(); strings.Contains(out, "pulling") || !strings.Contains(out, "boom") {
		t.Fatalf("quiet output: %q", out)
	}
	if !strings.Contains(h.Tail(), "pulling") {
		t.Fatalf("quiet must still keep the tail for pings: %q", h.Tail())
	}
}

func TestProgressLineOnlyWhenAsked(t *testing.T) {
	var events, bar syncBuffer
	l := New(Options{Events: &events, Progress: &bar})
	h := l.Host("vps1")
	h.Phase("pulling")
	h.AddBytes(3 << 20)
	time.Sleep(600 * time.Millisecond)
	h.Logf("vps1: snapshot saved")
	h.Done()
	l.Close()
	l.Close() // callers close explicitly and in a defer
	out := bar.String()
	if !strings.Contains(out, "\r\033[K") || !regexp.MustCompile(`vps1: pulling 0:0\d wire 3\.0 MiB`).MatchString(out) || !strings.Contains(out, "[0/1 done]") {
		t.Fatalf("progress output: %q", out)
	}
	if !strings.HasSuffix(out, "\r\033[K") {
		t.Fatalf("progress line not cleared at the end: %q", out)
	}
	if strings.ContainsAny(events.String(), "\r\033") {
		t.Fatalf("event lines carry terminal control codes: %q", events.String())
	}
	if IsTerminal(&bytes.Buffer{}) {
		t.Fatal("a buffer is not a terminal")
	}
}

func TestTailIsBounded(t *testing.T) {
	tl := NewTail(3, 1000)
	for i := range 5 {
		tl.Add(strings.Repeat("x", i+1))
	}
	if got := tl.String(); got != "(2 earlier lines omitted)\nxxx\nxxxx\nxxxxx" {
		t.Fatalf("tail = %q", got)
	}
	tl = NewTail(100, 10)
	tl.Add("0123456789")
	tl.Add("abc")
	if got := tl.String(); got != "(1 earlier lines omitted)\nabc" {
		t.Fatalf("byte-bounded tail = %q", got)
	}
}
