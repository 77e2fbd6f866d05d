package proto

import (
	"fmt"
	"slices"
	"time"
)

// TProgress (agent → puller) names the step the agent has begun, for a
// live display. It is sent only when both hellos list FeatureProgress, so
// a peer from before it never sees the frame; see "Progress" in
// PROTOCOL.md.
const TProgress Type = 16

func init() { typeNames[TProgress] = "progress" }

// FeatureProgress in the puller's Hello says it takes progress frames; in
// the agent's HelloReply, that the agent sends them to a puller that does.
const FeatureProgress = "progress"

// FeatureProgressCounts, listed in both hellos beside FeatureProgress,
// lets the agent send counts: repeated progress frames of the phase in
// progress carrying files and bytes done (and their totals when the agent
// knows them). A puller from before it takes at most MaxProgress frames a
// session, so without it the agent sends only the phase names.
const FeatureProgressCounts = "progress-counts"

// Progress is a progress frame's body. Without counts it says a phase
// begins; with them (FeatureProgressCounts) it reports how far the phase
// in progress has got. A nil total is not known.
type Progress struct {
	Phase      string `json:"phase"`
	Files      *int64 `json:"files,omitempty"`
	Bytes      *int64 `json:"bytes,omitempty"`
	FilesTotal *int64 `json:"files_total,omitempty"`
	BytesTotal *int64 `json:"bytes_total,omitempty"`
}

// HasCounts reports whether the frame carries counts.
func (m *Progress) HasCounts() bool {
	return m.Files != nil || m.Bytes != nil || m.FilesTotal != nil || m.BytesTotal != nil
}

// CountsFrame builds a counts frame: files and bytes done, and totals
// when known (negative: not known). A total below what is done (the
// estimate was short: files were added since) is raised to it, so the
// frame is always one a puller accepts.
func CountsFrame(phase string, files, bytes, filesTotal, bytesTotal int64) *Progress {
	m := &Progress{Phase: phase, Files: &files, Bytes: &bytes}
	if filesTotal >= 0 || bytesTotal >= 0 {
		ft, bt := max(filesTotal, files), max(bytesTotal, bytes)
		m.FilesTotal, m.BytesTotal = &ft, &bt
	}
	return m
}

// The phases an agent reports. A backup's freeze request has two: the
// mirror sync while the services run, then the freeze itself (quiesce,
// sync what changed, resume). A restore's commit has the rest.
const (
	PhasePreSync  = "pre-sync"
	PhaseFreeze   = "freeze"
	PhaseSync     = "sync"     // restore: syncfs of the staged copy
	PhaseVerify   = "verify"   // restore: every staged file read back and hashed
	PhaseMetadata = "metadata" // restore: owners, modes, times
	PhaseSwap     = "swap"     // restore: quiesce, swap, resume
	PhaseFinish   = "finish"   // restore: prune older copies, write the ready marker
)

// BackupPhases are the phases an agent may report between freeze and
// frozen; RestorePhases those between restore-commit and restore-result.
var (
	BackupPhases  = []string{PhasePreSync, PhaseFreeze}
	RestorePhases = []string{PhaseSync, PhaseVerify, PhaseMetadata, PhaseSwap, PhaseFinish}
)

// MaxProgress bounds the phase frames (those without counts) a puller
// takes in one session: each phase is reported once, so more means a
// broken or hostile agent.
const MaxProgress = 16

// Counts frames are bounded by rate: an agent sends at most one per
// MinCountsInterval; a puller takes CountsBurst, plus MaxCountsPerSecond
// for each second since the session began, so frames delayed in the
// network and delivered at once are never too many. MaxProgressFrame
// bounds one frame's payload.
const (
	MinCountsInterval  = 250 * time.Millisecond
	MaxCountsPerSecond = 8
	CountsBurst        = 32
	MaxProgressFrame   = 512
)

// ProgressTracker checks an agent's progress frames for the puller: only
// when FeatureProgress was negotiated, only phases of the step in
// progress, at most MaxProgress in a session.
type ProgressTracker struct {
	Enabled bool // both hellos list FeatureProgress
	// Counts: both hellos also list FeatureProgressCounts.
	Counts bool
	// Start is when the session began, for the counts' rate bound (zero:
	// the first frame's arrival).
	Start time.Time

	n, counts int
	phase     string   // the phase begun last
	last      Progress // its last counts
	now       func() time.Time
}

// Phase decodes a progress frame and returns its phase, one of allowed.
func (p *ProgressTracker) Phase(payload []byte, allowed []string) (string, error) {
	m, err := p.Frame(payload, allowed)
	return m.Phase, err
}

// Frame decodes and checks a progress frame: its phase is one of allowed,
// and counts, when it has them, were agreed, are of the phase begun last,
// are not negative, never exceed their totals and never go back. Errors
// quote nothing the agent sent unescaped.
func (p *ProgressTracker) Frame(payload []byte, allowed []string) (Progress, error) {
	if !p.Enabled {
		return Progress{}, fmt.Errorf("%w: progress frame, but the hellos did not both list %q", ErrFrame, FeatureProgress)
	}
	if len(payload) > MaxProgressFrame {
		return Progress{}, fmt.Errorf("%w: progress frame of %d bytes, at most %d", ErrFrame, len(payload), MaxProgressFrame)
	}
	var m Progress
	if err := Decode(TProgress, payload, &m); err != nil {
		return Progress{}, err
	}
	if !slices.Contains(allowed, m.Phase) {
		return Progress{}, fmt.Errorf("%w: progress phase %q here, want one of %v", ErrFrame, truncate(m.Phase), allowed)
	}
	if !m.HasCounts() {
		p.n++
		if p.n > MaxProgress {
			return Progress{}, fmt.Errorf("%w: more than %d progress frames", ErrFrame, MaxProgress)
		}
		p.phase, p.last = m.Phase, Progress{}
		return m, nil
	}
	if !p.Counts {
		return Progress{}, fmt.Errorf("%w: progress frame with counts, but the hellos did not both list %q", ErrFrame, FeatureProgressCounts)
	}
	now := time.Now
	if p.now != nil {
		now = p.now
	}
	if p.Start.IsZero() {
		p.Start = now()
	}
	p.counts++
	if limit := CountsBurst + int(now().Sub(p.Start).Seconds()*MaxCountsPerSecond); p.counts > limit {
		return Progress{}, fmt.Errorf("%w: %d progress frames with counts in %v, more than %d a second", ErrFrame, p.counts, now().Sub(p.Start).Round(time.Millisecond), MaxCountsPerSecond)
	}
	if m.Phase != p.phase {
		return Progress{}, fmt.Errorf("%w: progress counts of phase %q, but the phase in progress is %q", ErrFrame, m.Phase, p.phase)
	}
	for _, c := range []struct {
		name             string
		done, total      *int64
		lastDone, lastTo *int64
	}{
		{"files", m.Files, m.FilesTotal, p.last.Files, p.last.FilesTotal},
		{"bytes", m.Bytes, m.BytesTotal, p.last.Bytes, p.last.BytesTotal},
	} {
		if c.done == nil {
			return Progress{}, fmt.Errorf("%w: progress counts without %s done", ErrFrame, c.name)
		}
		if *c.done < 0 || (c.total != nil && *c.total < 0) {
			return Progress{}, fmt.Errorf("%w: progress counts: negative %s", ErrFrame, c.name)
		}
		if c.total != nil && *c.done > *c.total {
			return Progress{}, fmt.Errorf("%w: progress counts: %d %s done of a total of %d", ErrFrame, *c.done, c.name, *c.total)
		}
		if c.lastDone != nil && *c.done < *c.lastDone {
			return Progress{}, fmt.Errorf("%w: progress counts: %s done went back from %d to %d", ErrFrame, c.name, *c.lastDone, *c.done)
		}
		if c.lastTo != nil && (c.total == nil || *c.total < *c.lastTo) {
			return Progress{}, fmt.Errorf("%w: progress counts: the total of %s went back", ErrFrame, c.name)
		}
	}
	p.last = m
	return m, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
