// Package quiesce pauses or stops the services that write the agent's data
// paths for the moment the mirror is synced, and brings them back.
package quiesce

import (
	"context"
	"fmt"
	"time"
)

// Options configures a Quiescer; it mirrors the agent config's quiesce
// section.
type Options struct {
	Mode           string // none, pause, stop
	Containers     []string
	ComposeProject string
	Units          []string
	DockerHost     string
	Timeout        time.Duration // per target and call
}

// Quiescer quiesces a set of targets and resumes exactly the ones it
// quiesced. Resume must be safe to call after a failed or partial Quiesce,
// and more than once.
type Quiescer interface {
	// Quiesce stops or pauses the targets, in reverse start order.
	Quiesce(ctx context.Context) error
	// Resume starts or unpauses what Quiesce changed, in start order.
	Resume(ctx context.Context) error
	// Describe names the mode and targets for logs.
	Describe() string
}

// Builder makes a Quiescer for a mode other than "none". The Docker and
// systemd implementations register themselves here.
var builders = map[string]func(Options) (Quiescer, error){}

// Register makes a quiescer kind available to New.
func Register(kind string, b func(Options) (Quiescer, error)) { builders[kind] = b }

// New returns the Quiescer for opts.
func New(opts Options) (Quiescer, error) {
	if opts.Mode == "" || opts.Mode == "none" {
		return None{}, nil
	}
	b, ok := builders["default"]
	if !ok {
		return nil, fmt.Errorf("quiesce mode %q is not available in this build", opts.Mode)
	}
	return b(opts)
}

// None quiesces nothing: the mirror is synced while services run. The
// snapshot is then only crash-consistent per file.
type None struct{}

func (None) Quiesce(context.Context) error { return nil }
func (None) Resume(context.Context) error  { return nil }
func (None) Describe() string              { return "none" }
