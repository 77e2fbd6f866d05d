// Package quiesce pauses or stops the services that write the agent's data
// paths for the moment the mirror is synced, and brings back exactly the
// ones it changed: Docker containers through the Engine API on its unix
// socket, and systemd units through systemctl.
package quiesce

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Modes.
const (
	ModeNone  = "none"
	ModePause = "pause"
	ModeStop  = "stop"
)

// Target kinds.
const (
	KindContainer = "container"
	KindUnit      = "unit"
)

// Options configures a Quiescer; it mirrors the agent config's quiesce
// section.
type Options struct {
	Mode           string // none, pause, stop
	Containers     []string
	ComposeProject string
	Units          []string
	DockerHost     string        // unix:///path; empty: $DOCKER_HOST, then the standard socket
	Timeout        time.Duration // per target and call; default 30s
	// Systemctl is the systemctl executable; empty: looked up on PATH and in
	// the usual places.
	Systemctl string
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 30 * time.Second
	}
	return o.Timeout
}

// Target is one service the freeze changed or will change. Freeze persists
// the planned targets in its marker, so that a guard can bring them back if
// the agent dies.
type Target struct {
	Kind   string `json:"kind"` // container or unit
	Name   string `json:"name"` // container name (without "/") or unit name
	ID     string `json:"id,omitempty"`
	Action string `json:"action"` // stop or pause
	// Healthcheck is set for containers with a healthcheck: after starting
	// one, the next target waits until it reports healthy.
	Healthcheck bool `json:"healthcheck,omitempty"`
}

func (t Target) String() string { return t.Kind + " " + t.Name }

// Step is one timed call of a quiesce or resume.
type Step struct {
	Name string // "stop traefik", "start unit docker-pangolin.service"
	Took time.Duration
}

// Quiescer quiesces a set of targets and resumes exactly the ones it
// quiesced. Resume must be safe to call after a failed or partial Quiesce,
// and more than once.
type Quiescer interface {
	// Plan resolves the configured targets and returns, in start order,
	// those that are running now: the ones Quiesce will stop or pause.
	// Nothing changes. A target that is not running is left alone (and
	// stays stopped); a target that does not exist is an error.
	Plan(ctx context.Context) ([]Target, error)
	// Quiesce stops or pauses the planned targets (planning first if Plan
	// was not called), in reverse start order. It stops at the first
	// failure; Resume then brings back what was touched.
	Quiesce(ctx context.Context) error
	// Resume starts or unpauses what Quiesce touched, in start order,
	// waiting for a container's healthcheck before starting the next. It
	// tries every target even when one fails.
	Resume(ctx context.Context) error
	// Describe names the mode and targets for logs.
	Describe() string
}

// Stepper is implemented by quiescers that time each call; Freeze reports
// the steps in its phase breakdown.
type Stepper interface {
	Steps() []Step
}

// New returns the Quiescer for opts. It validates names and the Docker host
// but does not contact anything.
func New(opts Options) (Quiescer, error) {
	if opts.Mode == "" || opts.Mode == ModeNone {
		return None{}, nil
	}
	if opts.Mode != ModeStop && opts.Mode != ModePause {
		return nil, fmt.Errorf("quiesce mode %q: want none, pause or stop", opts.Mode)
	}
	if opts.Mode == ModePause && len(opts.Units) > 0 {
		return nil, fmt.Errorf("quiesce mode \"pause\" cannot pause systemd units; use \"stop\" or list Docker containers")
	}
	if len(opts.Containers) == 0 && opts.ComposeProject == "" && len(opts.Units) == 0 {
		return nil, fmt.Errorf("quiesce mode %q but no containers, compose_project or units are listed", opts.Mode)
	}
	s := &Set{opts: opts}
	for _, c := range opts.Containers {
		if !containerName.MatchString(c) {
			return nil, fmt.Errorf("quiesce.containers: %q is not a Docker container name (letters, digits, '_', '.', '-')", c)
		}
	}
	for _, u := range opts.Units {
		if !unitName.MatchString(u) {
			return nil, fmt.Errorf("quiesce.units: %q is not a systemd unit name (for example docker-pangolin.service)", u)
		}
	}
	if opts.ComposeProject != "" && !composeProject.MatchString(opts.ComposeProject) {
		return nil, fmt.Errorf("quiesce.compose_project: %q is not a Compose project name (lowercase letters, digits, '_', '-')", opts.ComposeProject)
	}
	if len(opts.Containers) > 0 || opts.ComposeProject != "" {
		d, err := NewDocker(opts.DockerHost)
		if err != nil {
			return nil, err
		}
		s.docker = d
	}
	if len(opts.Units) > 0 {
		s.systemd = &Systemctl{Path: opts.Systemctl}
	}
	return s, nil
}

var (
	containerName  = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	unitName       = regexp.MustCompile(`^[a-zA-Z0-9:_.@\\-]+\.(service|socket|target|scope|slice|mount|timer|path)$`)
	composeProject = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
)

// ResumeTargets brings back targets recorded by an earlier freeze (the
// guard and `haul-agent recover` use it): containers are unpaused or
// started, units started, in the order given. Every target is tried.
func ResumeTargets(ctx context.Context, opts Options, targets []Target) error {
	s := &Set{opts: opts, planned: targets, planDone: true, touched: map[int]bool{}}
	for i, t := range targets {
		s.touched[i] = true
		switch t.Kind {
		case KindContainer:
			if s.docker == nil {
				d, err := NewDocker(opts.DockerHost)
				if err != nil {
					return err
				}
				s.docker = d
			}
		case KindUnit:
			if s.systemd == nil {
				s.systemd = &Systemctl{Path: opts.Systemctl}
			}
		default:
			return fmt.Errorf("target %d has unknown kind %q", i, t.Kind)
		}
	}
	return s.Resume(ctx)
}

// None quiesces nothing: the mirror is synced while services run. The
// snapshot is then only crash-consistent per file.
type None struct{}

func (None) Plan(context.Context) ([]Target, error) { return nil, nil }
func (None) Quiesce(context.Context) error          { return nil }
func (None) Resume(context.Context) error           { return nil }
func (None) Describe() string                       { return "none" }

// Set is the built-in Quiescer: systemd units first, then the listed
// containers, then the Compose project's containers, in that start order.
type Set struct {
	opts    Options
	docker  *Docker
	systemd *Systemctl

	planDone bool
	planned  []Target
	touched  map[int]bool // index into planned: a call was made (maybe failed)
	steps    []Step
}

// Describe names the mode and the configured targets.
func (s *Set) Describe() string {
	var parts []string
	for _, u := range s.opts.Units {
		parts = append(parts, "unit "+u)
	}
	if len(s.opts.Containers) > 0 {
		parts = append(parts, "containers "+strings.Join(s.opts.Containers, ","))
	}
	if s.opts.ComposeProject != "" {
		parts = append(parts, "compose project "+s.opts.ComposeProject)
	}
	if len(parts) == 0 { // built by ResumeTargets
		for _, t := range s.planned {
			parts = append(parts, t.String())
		}
	}
	return s.opts.Mode + " " + strings.Join(parts, "; ")
}

// Steps returns the timed calls of the last Quiesce and Resume.
func (s *Set) Steps() []Step { return append([]Step(nil), s.steps...) }

// Plan resolves every configured target and keeps the running ones.
func (s *Set) Plan(ctx context.Context) ([]Target, error) {
	if s.planDone {
		return append([]Target(nil), s.planned...), nil
	}
	var out []Target
	for _, u := range s.opts.Units {
		active, err := s.systemd.IsActive(ctx, u, s.opts.timeout())
		if err != nil {
			return nil, err
		}
		if active {
			out = append(out, Target{Kind: KindUnit, Name: u, Action: ModeStop})
		}
	}
	if s.docker != nil {
		cs, err := s.containers(ctx)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			// A paused container is left alone in both modes: it writes
			// nothing, and whoever paused it expects it to stay paused.
			if !c.State.Running || c.State.Paused {
				continue
			}
			out = append(out, Target{Kind: KindContainer, Name: c.name(), ID: c.ID, Action: s.opts.Mode, Healthcheck: c.hasHealthcheck()})
		}
	}
	s.planned, s.planDone, s.touched = out, true, map[int]bool{}
	return append([]Target(nil), out...), nil
}

// containers inspects the listed containers and the Compose project's, in
// start order, each once.
func (s *Set) containers(ctx context.Context) ([]*Container, error) {
	var out []*Container
	seen := map[string]bool{}
	for _, name := range s.opts.Containers {
		c, err := s.docker.Inspect(ctx, name, s.opts.timeout())
		if err != nil {
			return nil, err
		}
		if !seen[c.ID] {
			seen[c.ID] = true
			out = append(out, c)
		}
	}
	if s.opts.ComposeProject != "" {
		cs, err := s.docker.ComposeProject(ctx, s.opts.ComposeProject, s.opts.timeout())
		if err != nil {
			return nil, err
		}
		if len(cs) == 0 {
			return nil, fmt.Errorf("no container carries the label com.docker.compose.project=%s on %s: check quiesce.compose_project (`docker compose ls -a` lists projects)", s.opts.ComposeProject, s.docker.Host)
		}
		for _, c := range cs {
			if !seen[c.ID] {
				seen[c.ID] = true
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// Quiesce stops or pauses the planned targets in reverse start order.
func (s *Set) Quiesce(ctx context.Context) error {
	if _, err := s.Plan(ctx); err != nil {
		return err
	}
	s.steps = nil
	if s.opts.Mode == ModePause {
		return s.pauseAll(ctx)
	}
	for i := len(s.planned) - 1; i >= 0; i-- {
		// A cancelled session stops further targets, but a call in flight
		// is never abandoned: a stop the daemon keeps doing after we gave
		// up on it would undo the start that Resume sends.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("quiesce interrupted before %s: %w", s.planned[i], err)
		}
		t := s.planned[i]
		s.touched[i] = true
		start := time.Now()
		err := s.quiesceOne(context.WithoutCancel(ctx), t)
		s.steps = append(s.steps, Step{Name: t.Action + " " + t.Name, Took: time.Since(start)})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Set) quiesceOne(ctx context.Context, t Target) error {
	switch {
	case t.Kind == KindUnit:
		return s.systemd.Stop(ctx, t.Name, s.opts.timeout())
	case t.Action == ModePause:
		return s.docker.Pause(ctx, t.Name, s.opts.timeout())
	default:
		return s.docker.Stop(ctx, t.Name, s.opts.timeout())
	}
}

// pauseAll pauses every planned container at once. Order matters when
// stopping (a service shuts down cleanly while what it depends on still
// runs) but not for the cgroup freezer: nothing observes a frozen process,
// and every target is frozen before the sync begins. At once, the window
// pays for one pause instead of one per container.
func (s *Set) pauseAll(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("quiesce interrupted: %w", err)
	}
	errs := make([]error, len(s.planned))
	steps := make([]Step, len(s.planned))
	var wg sync.WaitGroup
	for i, t := range s.planned {
		s.touched[i] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[i] = s.quiesceOne(context.WithoutCancel(ctx), t)
			steps[i] = Step{Name: t.Action + " " + t.Name, Took: time.Since(start)}
		}()
	}
	wg.Wait()
	for i := len(steps) - 1; i >= 0; i-- {
		s.steps = append(s.steps, steps[i])
	}
	return errors.Join(errs...)
}

// unpauseAll unpauses every touched container at once (see pauseAll).
// Containers that turn out not to be paused (the daemon restarted
// meanwhile) are left for the ordered start that follows.
func (s *Set) unpauseAll(ctx context.Context) (errs []error, failed map[int]bool) {
	failed = map[int]bool{}
	type result struct {
		err  error
		step Step
	}
	results := make([]result, len(s.planned))
	var wg sync.WaitGroup
	for i, t := range s.planned {
		if !s.touched[i] || t.Kind != KindContainer || t.Action != ModePause {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := s.docker.Unpause(ctx, t.Name, s.opts.timeout())
			results[i] = result{err: err, step: Step{Name: "unpause " + t.Name, Took: time.Since(start)}}
		}()
	}
	wg.Wait()
	for i, t := range s.planned {
		if !s.touched[i] || t.Kind != KindContainer || t.Action != ModePause {
			continue
		}
		r := results[i]
		switch {
		case r.err == nil:
			s.steps = append(s.steps, r.step)
			delete(s.touched, i)
		case errors.Is(r.err, ErrNotPaused):
			// resumeOne starts it, in order
		case errors.Is(r.err, ErrContainerNotFound):
			r.step.Name += " (container gone, skipped)"
			s.steps = append(s.steps, r.step)
			delete(s.touched, i)
		default:
			s.steps = append(s.steps, r.step)
			errs = append(errs, r.err)
			failed[i] = true // reported; touched still, for the next Resume
		}
	}
	return errs, failed
}

// Resume brings back every touched target in start order.
func (s *Set) Resume(ctx context.Context) error {
	var errs []error
	var failed map[int]bool
	if s.opts.Mode == ModePause {
		errs, failed = s.unpauseAll(ctx)
	}
	var last int = -1
	for i := range s.planned {
		if s.touched[i] && !failed[i] {
			last = i
		}
	}
	for i, t := range s.planned {
		if !s.touched[i] || failed[i] {
			continue
		}
		start := time.Now()
		err := s.resumeOne(ctx, t, i < last)
		name := "start " + t.Name
		if errors.Is(err, ErrContainerNotFound) {
			// Removed during the freeze (a compose down, or at shutdown on
			// NixOS, where the stack's unit recreates its containers at
			// boot): there is nothing left to bring back.
			name += " (container gone, skipped)"
			err = nil
		}
		s.steps = append(s.steps, Step{Name: name, Took: time.Since(start)})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.touched, i)
	}
	return errors.Join(errs...)
}

// resumeOne brings one target back. waitHealthy is set when more targets
// follow: they may depend on this one (Pangolin's gerbil needs a healthy
// pangolin), so a container with a healthcheck must report healthy first.
func (s *Set) resumeOne(ctx context.Context, t Target, waitHealthy bool) error {
	if t.Kind == KindUnit {
		return s.systemd.Start(ctx, t.Name, s.opts.timeout())
	}
	name := t.Name
	if t.Action == ModePause && s.opts.Mode != ModePause {
		// (In pause mode unpauseAll has tried already.)
		err := s.docker.Unpause(ctx, name, s.opts.timeout())
		if err == nil || !errors.Is(err, ErrNotPaused) {
			return err
		}
	}
	// Stopped, or a paused one that is not paused any more: the daemon
	// restarted meanwhile, or someone else unpaused it. Make sure it runs.
	if err := s.docker.Start(ctx, name, s.opts.timeout()); err != nil {
		return err
	}
	if t.Healthcheck && waitHealthy {
		return s.docker.WaitHealthy(ctx, name, s.opts.timeout())
	}
	return nil
}
