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
	closed bool // no more progress lines: Close was called

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

// Close stops the progress line and clears it; events logged after it
// are still printed. It may be called again.
func (l *Log) Close() {
	if l.bar == nil {
		return
	}
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
		l.mu.Lock()
		defer l.mu.Unlock()
		// The last counts of a host still running, drawn once as Phase
		// does, so a phase that ends between two ticks shows how far it
		// got; then the line is cleared for what follows.
		l.drawBar()
		l.clearBar()
		l.closed = true
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
	bytes  atomic.Int64 // wire bytes received
	phase  atomic.Value // string
	finish atomic.Bool

	// What the phase moves, when known: done of total bytes and files.
	// total < 0: not known yet (the manifest is still streaming).
	doneBytes, totalBytes atomic.Int64
	doneFiles, totalFiles atomic.Int64
	unit                  atomic.Value // string: what the second count counts ("files")
	phaseStart            atomic.Int64 // unix ns

	rate     rateWindow // bytes; guarded by log.mu
	itemRate rateWindow // files (or the phase's unit) when no bytes are counted
}

// rateWindow is a moving-window rate: the bytes done over the last
// window, not the average since the start (which hides a stall and
// understates a transfer that started after a long pre-sync).
type rateWindow struct {
	samples []sample
}

type sample struct {
	at   time.Time
	done int64
}

// rateWindowLen is how far back the rate looks.
const rateWindowLen = 10 * time.Second

func (w *rateWindow) add(at time.Time, done int64) {
	w.samples = append(w.samples, sample{at, done})
	for len(w.samples) > 2 && at.Sub(w.samples[0].at) > rateWindowLen {
		w.samples = w.samples[1:]
	}
}

// perSecond is the rate over the window, 0 until it spans 1 s.
func (w *rateWindow) perSecond() float64 {
	if len(w.samples) < 2 {
		return 0
	}
	a, b := w.samples[0], w.samples[len(w.samples)-1]
	dt := b.at.Sub(a.at).Seconds()
	if dt < 1 {
		return 0
	}
	return float64(b.done-a.done) / dt
}

// Host starts tracking a host.
func (l *Log) Host(name string) *Host {
	h := &Host{log: l, Name: name, tail: NewTail(100, 8<<10), start: time.Now()}
	h.phase.Store("waiting")
	h.unit.Store("files")
	h.phaseStart.Store(h.start.UnixNano())
	h.totalBytes.Store(-1)
	h.totalFiles.Store(-1)
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

// Phase sets what the progress line shows for the host and draws it; the
// counts of the previous phase are dropped. A phase that counted something
// is drawn once more as it ended first, so one that finishes between two
// ticks (a small restore) still shows how far it got.
func (h *Host) Phase(p string) {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if _, ok := h.phase.Load().(string); ok && (h.doneBytes.Load() > 0 || h.doneFiles.Load() > 0) {
		h.log.drawBar()
	}
	h.phase.Store(p)
	h.phaseStart.Store(time.Now().UnixNano())
	h.doneBytes.Store(0)
	h.doneFiles.Store(0)
	h.totalBytes.Store(-1)
	h.totalFiles.Store(-1)
	h.unit.Store("files")
	h.rate = rateWindow{}
	h.itemRate = rateWindow{}
	h.log.drawBar() // the new phase shows at once, however short it is
}

// Unit names what the phase's second count counts: "files" unless said
// otherwise (a check reads "packs", a restore's transfer sends "chunks").
// Phase resets it.
func (h *Host) Unit(name string) { h.unit.Store(name) }

// Counts reports the phase's progress: bytes and files done, and their
// totals (negative: not known yet).
func (h *Host) Counts(doneBytes, totalBytes, doneFiles, totalFiles int64) {
	h.doneBytes.Store(doneBytes)
	h.totalBytes.Store(totalBytes)
	h.doneFiles.Store(doneFiles)
	h.totalFiles.Store(totalFiles)
}

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
	if l.bar == nil || l.closed {
		return
	}
	var parts []string
	active := 0
	for _, h := range l.hosts {
		if h.finish.Load() {
			continue
		}
		active++
		parts = append(parts, h.line(time.Now()))
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

// line is the host's part of the progress line; log.mu is held.
func (h *Host) line(now time.Time) string {
	phase := h.phase.Load().(string)
	elapsed := now.Sub(time.Unix(0, h.phaseStart.Load()))
	done, total := h.doneBytes.Load(), h.totalBytes.Load()
	files, totalFiles := h.doneFiles.Load(), h.totalFiles.Load()
	unit := h.unit.Load().(string)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s %s", h.Name, phase, Clock(elapsed))
	if done == 0 && total < 0 && files == 0 && totalFiles < 0 {
		// Nothing counted yet: phase and elapsed, and the bytes the
		// connection has carried, which says it is alive.
		if w := h.bytes.Load(); w > 0 {
			fmt.Fprintf(&b, " wire %s", HumanBytes(w))
		}
		return b.String()
	}
	if done == 0 && total < 0 {
		// Only items are counted (a check's trees): their share, and an
		// ETA from their own moving rate.
		h.itemRate.add(now, files)
		if totalFiles >= 0 {
			pct := 100.0
			if totalFiles > 0 {
				pct = 100 * float64(files) / float64(totalFiles)
			}
			fmt.Fprintf(&b, " %d/%d %s %.0f%%", files, totalFiles, unit, pct)
		} else {
			fmt.Fprintf(&b, " %d %s", files, unit)
		}
		if r := h.itemRate.perSecond(); totalFiles >= 0 && r > 0 && files < totalFiles {
			fmt.Fprintf(&b, " ETA %s", Clock(time.Duration(float64(totalFiles-files)/r*float64(time.Second))))
		}
		return b.String()
	}
	h.rate.add(now, done)
	if total >= 0 {
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(&b, " %s/%s %.0f%%", HumanBytes(done), HumanBytes(total), pct)
	} else {
		fmt.Fprintf(&b, " %s", HumanBytes(done))
	}
	if totalFiles >= 0 {
		fmt.Fprintf(&b, " %d/%d %s", files, totalFiles, unit)
	} else if files > 0 {
		fmt.Fprintf(&b, " %d %s", files, unit)
	}
	rate := h.rate.perSecond()
	if rate > 0 {
		fmt.Fprintf(&b, " %s/s", HumanBytes(int64(rate)))
	}
	if total >= 0 && rate > 0 && done < total {
		fmt.Fprintf(&b, " ETA %s", Clock(time.Duration(float64(total-done)/rate*float64(time.Second))))
	}
	return b.String()
}

// Clock formats d as m:ss or h:mm:ss.
func Clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s < 0 {
		s = 0
	}
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
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
