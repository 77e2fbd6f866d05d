// Package runlog is the output of a haul run fit for both a terminal and
// cron: one timestamped line per event, a live progress line per host only
// when stdout is a terminal, and the tail of the log (per run and per
// host) kept for failure notifications.
package runlog

import (
	"fmt"
	"github.com/haulproject/haul/internal/units"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminal(f.Fd())
}

// Log collects a run's events.
type Log struct {
	mu     sync.Mutex
	events io.Writer // one line per event (stderr)
	bar    io.Writer // live progress (stdout when a terminal), or nil
	quiet  bool
	tail   *Tail
	hosts  []*Host
	stop   chan struct{}
	done   chan struct{}
	drawn  bool

	closeOnce sync.Once
}

// Options configures a Log.
type Options struct {
	// Events receives the event lines; nil discards them (the tails are
	// still kept).
	Events io.Writer
	// Progress, when not nil, receives a live progress line redrawn in
	// place: pass stdout only when IsTerminal(stdout).
	Progress io.Writer
	// Quiet prints only failures (for cron jobs that mail their output).
	Quiet bool
}

// New starts a Log; Close it at the end of the run.
func New(opts Options) *Log {
	l := &Log{events: opts.Events, bar: opts.Progress, quiet: opts.Quiet, tail: NewTail(200, 16<<10)}
	if l.events == nil {
		l.events = io.Discard
	}
	if l.bar != nil {
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go l.render()
	}
	return l
}

// Logf records a run-level event.
func (l *Log) Logf(format string, args ...any) { l.event(nil, false, format, args...) }

// Errorf records a failure: printed even when quiet.
func (l *Log) Errorf(format string, args ...any) { l.event(nil, true, format, args...) }

// Tail returns the last lines of the whole run.
func (l *Log) Tail() string { return l.tail.String() }

// Close stops the progress line and clears it. It may be called again.
func (l *Log) Close() {
	if l.bar == nil {
		return
	}
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		l.mu.Lock()
		defer l.mu.Unlock()
		l.clearBar()
	})
}

func (l *Log) event(h *Host, failure bool, format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	now := time.Now()
	stamp := now.Format(time.RFC3339)
	if l.bar != nil {
		stamp = now.Format("15:04:05")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(msg, "\n") {
		full := stamp + " " + line
		l.tail.Add(full)
		if h != nil {
			h.tail.Add(full)
		}
		if !l.quiet || failure {
			l.clearBar()
			fmt.Fprintln(l.events, full)
		}
	}
	l.drawBar()
}

// Host tracks one host's part of the run.
type Host struct {
	log    *Log
	Name   string
	tail   *Tail
	start  time.Time
	bytes  atomic.Int64
	phase  atomic.Value // string
	finish atomic.Bool
}

// Host starts tracking a host.
func (l *Log) Host(name string) *Host {
	h := &Host{log: l, Name: name, tail: NewTail(100, 8<<10), start: time.Now()}
	h.phase.Store("waiting")
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	return h
}

// Logf records an event of this host.
func (h *Host) Logf(format string, args ...any) { h.log.event(h, false, format, args...) }

// Errorf records a failure of this host.
func (h *Host) Errorf(format string, args ...any) { h.log.event(h, true, format, args...) }

// Tail returns the last lines logged for this host.
func (h *Host) Tail() string { return h.tail.String() }

// Phase sets what the progress line shows for the host.
func (h *Host) Phase(p string) { h.phase.Store(p) }

// AddBytes counts bytes received for the progress line.
func (h *Host) AddBytes(n int) { h.bytes.Add(int64(n)) }

// Done marks the host finished.
func (h *Host) Done() { h.finish.Store(true) }

func (l *Log) render() {
	defer close(l.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			l.drawBar()
			l.mu.Unlock()
		}
	}
}

var spinner = []string{"|", "/", "-", "\\"}

// drawBar redraws the progress line; l.mu is held.
func (l *Log) drawBar() {
	if l.bar == nil {
		return
	}
	var parts []string
	active := 0
	for _, h := range l.hosts {
		if h.finish.Load() {
			continue
		}
		active++
		el := time.Since(h.start).Seconds()
		rate := ""
		if b := h.bytes.Load(); b > 0 && el > 0 {
			rate = fmt.Sprintf(" %s %s/s", HumanBytes(b), HumanBytes(int64(float64(b)/el)))
		}
		parts = append(parts, fmt.Sprintf("%s: %s%s", h.Name, h.phase.Load(), rate))
	}
	if active == 0 {
		l.clearBar()
		return
	}
	sort.Strings(parts)
	done := len(l.hosts) - active
	spin := spinner[time.Now().UnixMilli()/250%int64(len(spinner))]
	line := fmt.Sprintf("%s [%d/%d done] %s", spin, done, len(l.hosts), strings.Join(parts, " | "))
	fmt.Fprint(l.bar, "\r\033[K"+line)
	l.drawn = true
}

func (l *Log) clearBar() {
	if l.bar != nil && l.drawn {
		fmt.Fprint(l.bar, "\r\033[K")
		l.drawn = false
	}
}

// Tail keeps the last lines written to it, bounded in count and bytes.
type Tail struct {
	mu       sync.Mutex
	lines    []string
	size     int
	maxLines int
	maxBytes int
	dropped  int
}

// NewTail keeps up to maxLines lines and maxBytes bytes.
func NewTail(maxLines, maxBytes int) *Tail { return &Tail{maxLines: maxLines, maxBytes: maxBytes} }

// Add appends a line.
func (t *Tail) Add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(line) > t.maxBytes {
		line = line[:t.maxBytes]
	}
	t.lines = append(t.lines, line)
	t.size += len(line) + 1
	for len(t.lines) > t.maxLines || t.size > t.maxBytes {
		t.size -= len(t.lines[0]) + 1
		t.lines = t.lines[1:]
		t.dropped++
	}
}

// String returns the kept lines, noting how many were dropped.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.Join(t.lines, "\n")
	if t.dropped > 0 {
		s = fmt.Sprintf("(%d earlier lines omitted)\n%s", t.dropped, s)
	}
	return s
}

// HumanBytes formats n in binary units.
func HumanBytes(n int64) string { return units.Bytes(n) }
