// Package rebuild recreates a lost or compromised VPS from code and puts
// its data back: preflight against the Hetzner Cloud API, a last backup,
// `tofu apply` replacing the server (the tofu configuration runs
// nixos-anywhere), waiting for SSH with the pinned host key, restore,
// start, and a health check. Each phase is timed, and a state file lets a
// rerun after a failure continue where the failed run stopped.
package rebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/transport"
)

// The phases, in order.
const (
	PhasePreflight   = "preflight"
	PhaseFinalBackup = "final-backup"
	PhaseTofu        = "tofu-apply"
	PhaseWaitSSH     = "wait-ssh"
	PhaseRestore     = "restore"
	PhaseStart       = "start"
	PhaseHealth      = "health"
)

// Phases lists the phases in the order they run.
var Phases = []string{PhasePreflight, PhaseFinalBackup, PhaseTofu, PhaseWaitSSH, PhaseRestore, PhaseStart, PhaseHealth}

// Options configures a rebuild of one host.
type Options struct {
	Config *config.Config
	Host   *config.Host // with Host.Rebuild set
	// Token is the Hetzner Cloud API token. It goes to hcloud-go and, as
	// TF_VAR_hcloud_token, to tofu; never to a log or a command line.
	Token string

	// Probe opens a session with the backup key (least privilege): its
	// hello says whether the host answers and whether it is ready.
	Probe transport.Connecter
	// OpenRepo opens the repository.
	OpenRepo func(ctx context.Context) (*repo.Repo, error)
	// FinalBackup pulls a snapshot of the old server.
	FinalBackup func(ctx context.Context) (*SnapshotInfo, error)
	// Restore puts snapshot sn onto the host with the restore key, under
	// the repository lock.
	Restore func(ctx context.Context, r *repo.Repo, sn *repo.Snapshot) (*restore.AgentResult, error)
	// Confirm is asked once per run, after preflight and before the first
	// phase that changes anything; an error stops the run there.
	Confirm func(r *Result) error

	DryRun          bool // preflight and the plan only
	SkipFinalBackup bool
	// Snapshot restores this snapshot (ID or prefix) instead of the newest
	// one, and takes no final backup: after a compromise, the data from
	// before it.
	Snapshot           string
	AllowMissingServer bool
	// Restart forgets an unfinished earlier rebuild and starts afresh.
	Restart bool

	// HaulBin is this haul executable, for tofu's extra-files script.
	HaulBin string
	// Out receives tofu's output as it comes.
	Out io.Writer
	// Logf receives progress lines.
	Logf func(format string, args ...any)
}

// PhaseError is a failed phase. A rerun continues with it.
type PhaseError struct {
	Phase string
	Err   error
}

func (e *PhaseError) Error() string {
	if e.Phase == PhasePreflight {
		return e.Err.Error()
	}
	return fmt.Sprintf("phase %s failed: %v", e.Phase, e.Err)
}

func (e *PhaseError) Unwrap() error { return e.Err }

type rebuilder struct {
	opts      Options
	settings  *config.Rebuild
	res       *Result
	statePath string
	logf      func(string, ...any)
	now       func() time.Time
}

// Run rebuilds opts.Host. With DryRun it runs preflight and returns the
// plan. An error is a *PhaseError (the returned Result says what is done)
// or a problem before any phase ran.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Host == nil || opts.Host.Rebuild == nil {
		return nil, fmt.Errorf("host has no [hosts.rebuild] settings")
	}
	rb := &rebuilder{
		opts:      opts,
		settings:  opts.Host.Rebuild,
		statePath: StatePath(opts.Config.CacheDir, opts.Host.Name),
		logf:      opts.Logf,
		now:       time.Now,
	}
	if rb.logf == nil {
		rb.logf = func(string, ...any) {}
	}
	if rb.opts.Out == nil {
		rb.opts.Out = io.Discard
	}
	if opts.DryRun {
		return rb.dryRun(ctx)
	}

	unlock, err := lockState(rb.statePath)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if opts.Restart {
		if err := os.Remove(rb.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	res, err := loadState(rb.statePath)
	if err != nil {
		return nil, err
	}
	if res != nil && opts.Snapshot != "" && (res.Snapshot == nil || !strings.HasPrefix(res.Snapshot.ID, opts.Snapshot)) {
		return nil, fmt.Errorf("the unfinished rebuild of %s (state in %s) restores snapshot %s, not %s: rerun without --snapshot to continue it, or with --restart to begin afresh with another snapshot",
			opts.Host.Name, rb.statePath, snapID(res.Snapshot), opts.Snapshot)
	}
	if res != nil {
		var done []string
		for _, p := range res.Phases {
			if p.Status == StatusDone || p.Status == StatusSkipped {
				done = append(done, p.Name)
			}
		}
		rb.logf("%s: resuming the rebuild begun %s (run %d; state in %s); done: %v. Use --restart to begin afresh",
			opts.Host.Name, res.Started.Format(time.RFC3339), res.Runs+1, rb.statePath, done)
	} else {
		res = newResult(opts.Host.Name, rb.settings.Server, rb.now())
	}
	rb.res = res
	res.Runs++
	res.Error = ""

	confirmed := false
	for _, name := range Phases {
		p := res.Phase(name)
		if p.Status == StatusDone || p.Status == StatusSkipped {
			continue
		}
		if name != PhasePreflight && !confirmed {
			res.Plan = rb.plan()
			if opts.Confirm != nil {
				if err := opts.Confirm(res); err != nil {
					return res, err
				}
			}
			confirmed = true
		}
		if err := rb.runPhase(ctx, p); err != nil {
			res.Error = err.Error()
			// A failed preflight changed nothing: there is nothing to resume.
			if name != PhasePreflight {
				if serr := saveState(rb.statePath, res); serr != nil {
					rb.logf("warning: %v", serr)
				}
				rb.logf("%s: the rebuild stopped in phase %s; fix the cause, then rerun `haul rebuild --host %s`: it continues there", opts.Host.Name, name, opts.Host.Name)
			}
			return res, &PhaseError{Phase: name, Err: err}
		}
		if name != PhasePreflight {
			if err := saveState(rb.statePath, res); err != nil {
				return res, err
			}
		}
	}
	res.OK = true
	res.Finished = rb.now()
	res.RecoveryMS = ms(res.Finished.Sub(res.Started))
	res.Plan = nil
	if err := os.Remove(rb.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		rb.logf("warning: remove the finished rebuild's state: %v", err)
	}
	return res, nil
}

func (rb *rebuilder) dryRun(ctx context.Context) (*Result, error) {
	res := newResult(rb.opts.Host.Name, rb.settings.Server, rb.now())
	res.DryRun = true
	rb.res = res
	if old, err := loadState(rb.statePath); err == nil && old != nil {
		for _, p := range old.Phases {
			if p.Status == StatusFailed {
				rb.logf("%s: an earlier rebuild stopped in phase %s (%s); a run without --dry-run continues there (or --restart begins afresh)", rb.opts.Host.Name, p.Name, rb.statePath)
			}
		}
	}
	err := rb.runPhase(ctx, res.Phase(PhasePreflight))
	if err != nil {
		res.Error = err.Error()
		return res, &PhaseError{Phase: PhasePreflight, Err: err}
	}
	res.Plan = rb.plan()
	return res, nil
}

// runPhase runs one phase and records its outcome and time.
func (rb *rebuilder) runPhase(ctx context.Context, p *PhaseResult) error {
	start := rb.now()
	p.Started, p.Run, p.Error, p.Detail = start, rb.res.Runs, "", ""
	rb.logf("%s: phase %s", rb.opts.Host.Name, p.Name)
	var detail string
	var skipped bool
	var err error
	switch p.Name {
	case PhasePreflight:
		detail, err = rb.phasePreflight(ctx)
	case PhaseFinalBackup:
		detail, skipped, err = rb.phaseFinalBackup(ctx)
	case PhaseTofu:
		detail, err = rb.phaseTofu(ctx)
	case PhaseWaitSSH:
		detail, err = rb.phaseWaitSSH(ctx)
	case PhaseRestore:
		detail, err = rb.phaseRestore(ctx)
	case PhaseStart:
		detail, err = rb.phaseStart(ctx)
	case PhaseHealth:
		detail, err = rb.phaseHealth(ctx)
	default:
		err = fmt.Errorf("unknown phase %q", p.Name)
	}
	p.MS = ms(rb.now().Sub(start))
	p.Detail = detail
	switch {
	case err != nil:
		p.Status, p.Error = StatusFailed, err.Error()
	case skipped:
		p.Status = StatusSkipped
	default:
		p.Status = StatusDone
	}
	var total float64
	for _, q := range rb.res.Phases {
		total += q.MS
	}
	rb.res.PhasesMS = total
	if err == nil {
		rb.logf("%s: %s %s in %.2fs: %s", rb.opts.Host.Name, p.Name, p.Status, p.MS/1000, detail)
	}
	return err
}

func (rb *rebuilder) phasePreflight(ctx context.Context) (string, error) {
	pf, sn, err := rb.preflight(ctx)
	rb.res.Preflight = pf
	if err != nil {
		return "", err
	}
	rb.res.Snapshot = sn
	detail := fmt.Sprintf("%d checks passed; snapshot %s", len(pf.Checks), sn.ID[:8])
	if pf.Server != nil {
		detail = fmt.Sprintf("server %d %s; %s", pf.Server.ID, pf.Server.Status, detail)
	}
	return detail, nil
}

func (rb *rebuilder) phaseRestore(ctx context.Context) (string, error) {
	r, err := rb.opts.OpenRepo(ctx)
	if err != nil {
		return "", err
	}
	defer r.Close()
	sn, err := r.Find(ctx, rb.opts.Host.Name, rb.res.Snapshot.ID)
	if err != nil {
		return "", fmt.Errorf("%w (the snapshot chosen when the rebuild began; was it forgotten since? --restart chooses again)", err)
	}
	out, err := rb.opts.Restore(ctx, r, sn)
	if err != nil {
		return "", fmt.Errorf("%w. The new server is up and its stack waits for the data; fix the cause, then rerun to restore again", err)
	}
	o := out.Outcome
	return fmt.Sprintf("snapshot %s: %d files, %d bytes, %d chunks sent; ready marker %s", sn.ID.Str(), o.Files, o.Bytes, out.ChunksSent, orNone(o.Marker)), nil
}

func snapID(s *SnapshotInfo) string {
	if s == nil {
		return "(none)"
	}
	return s.ID[:8]
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// plan describes what the phases still to run will do.
func (rb *rebuilder) plan() []string {
	s := rb.settings
	h := rb.opts.Host
	res := rb.res
	var out []string
	add := func(phase, format string, args ...any) {
		if p := res.Phase(phase); p != nil && (p.Status == StatusDone || p.Status == StatusSkipped) {
			return
		}
		out = append(out, fmt.Sprintf("%-12s "+format, append([]any{phase}, args...)...))
	}
	var srv *ServerInfo
	if res.Preflight != nil {
		srv = res.Preflight.Server
	}
	switch {
	case rb.opts.Snapshot != "":
		add(PhaseFinalBackup, "skipped (--snapshot chooses the data)")
	case rb.opts.SkipFinalBackup:
		add(PhaseFinalBackup, "skipped (--skip-final-backup)")
	case srv == nil:
		add(PhaseFinalBackup, "skipped: there is no old server")
	default:
		add(PhaseFinalBackup, "pull a last snapshot of %s if the old server answers", h.Name)
	}
	if srv != nil {
		add(PhaseTofu, "in %s: %s, which DESTROYS server %s (id %d) once its plan shows Hetzner can create the new server, and installs that one with the kept host key", s.TofuDir, tofuCommandLine(rb.tofuArgs()), s.Server, srv.ID)
	} else {
		add(PhaseTofu, "in %s: %s, which creates server %s and installs it with the kept host key", s.TofuDir, tofuCommandLine(rb.tofuArgs()), s.Server)
	}
	add(PhaseWaitSSH, "wait up to %s for the new server's SSH at %s, accepting only the pinned host key", s.SSHTimeout.Or(config.DefaultSSHTimeout), h.Address)
	snap := "the final backup's snapshot"
	if res.Snapshot != nil && (res.Snapshot.Source != "preflight" || srv == nil || rb.opts.SkipFinalBackup) {
		snap = "snapshot " + res.Snapshot.ID[:8] + " of " + res.Snapshot.Time.Format(time.RFC3339)
	} else if res.Snapshot != nil {
		snap += " (else snapshot " + res.Snapshot.ID[:8] + ")"
	}
	add(PhaseRestore, "restore %s onto the new server with the restore key", snap)
	add(PhaseStart, "wait up to %s for %s to report ready (the restore writes the ready marker; the stack starts on it)", s.ReadyTimeout.Or(config.DefaultReadyTimeout), h.Name)
	add(PhaseHealth, "wait up to %s for https://%s%s at %s to answer", s.HealthTimeout.Or(config.DefaultHealthTimeout), s.Dashboard, s.HealthPath, rb.healthAddress())
	return out
}
