package proto

import (
	"fmt"
	"slices"
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

// Progress is a progress frame's body.
type Progress struct {
	Phase string `json:"phase"`
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

// MaxProgress bounds the progress frames a puller takes in one session:
// each phase is reported once, so more means a broken or hostile agent.
const MaxProgress = 16

// ProgressTracker checks an agent's progress frames for the puller: only
// when FeatureProgress was negotiated, only phases of the step in
// progress, at most MaxProgress in a session.
type ProgressTracker struct {
	Enabled bool // both hellos list FeatureProgress
	n       int
}

// Phase decodes a progress frame and returns its phase, one of allowed.
func (p *ProgressTracker) Phase(payload []byte, allowed []string) (string, error) {
	if !p.Enabled {
		return "", fmt.Errorf("%w: progress frame, but the hellos did not both list %q", ErrFrame, FeatureProgress)
	}
	p.n++
	if p.n > MaxProgress {
		return "", fmt.Errorf("%w: more than %d progress frames", ErrFrame, MaxProgress)
	}
	var m Progress
	if err := Decode(TProgress, payload, &m); err != nil {
		return "", err
	}
	i := slices.Index(allowed, m.Phase)
	if i < 0 {
		return "", fmt.Errorf("%w: progress phase %q here, want one of %v", ErrFrame, truncate(m.Phase), allowed)
	}
	return m.Phase, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
