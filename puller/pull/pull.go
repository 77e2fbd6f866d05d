// Package pull runs haul's sessions against the configured hosts: it builds
// each host's transport, opens and locks the repository, backs up one host
// or many in parallel (recording each run and pinging the monitors), and
// restores onto a host. The haul command's backup, restore and migrate
// call it.
package pull

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/notify"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/runlog"
	"github.com/haulproject/haul/puller/status"
	"github.com/haulproject/haul/puller/transport"
)

// OpenAsync starts opening the configured repository (see
// repo.OpenAsync): the key is derived while the caller connects.
func OpenAsync(ctx context.Context, cfg *config.Config) (*repo.Opening, error) {
	pw, err := cfg.Password()
	if err != nil {
		return nil, err
	}
	// Every pull locks it before use, and Lock loads the index.
	return repo.OpenAsyncForLock(ctx, cfg.Repository, pw, cfg.CacheDir), nil
}

// OpenRepo opens the configured repository with its password.
func OpenRepo(ctx context.Context, cfg *config.Config) (*repo.Repo, error) {
	pw, err := cfg.Password()
	if err != nil {
		return nil, err
	}
	return repo.Open(ctx, cfg.Repository, pw)
}

// Connecter builds the transport for a host; restore sessions use the
// restore key or restore command.
func Connecter(h *config.Host, restore bool) transport.Connecter {
	if len(h.Command) > 0 {
		argv := h.Command
		if restore {
			argv = h.RestoreCommand
			if len(argv) == 0 {
				argv = append(append([]string(nil), h.Command...), "--allow-restore")
			}
		}
		return &transport.Exec{Argv: argv}
	}
	key := h.IdentityFile
	if restore && h.RestoreIdentityFile != "" {
		key = h.RestoreIdentityFile
	}
	return &transport.SSH{
		Host: h.Name, Address: h.Address, User: h.User, IdentityFile: key,
		KnownHosts: h.KnownHosts, Timeout: h.ConnectTimeout.Or(0),
	}
}

// HostOptions tune one host's backup.
type HostOptions struct {
	Tags []string // added to the host's configured tags
	Logf func(format string, args ...any)
	// Progress receives the phase and the bytes received (nil: none).
	Progress *runlog.Host
	// Repo is an open handle to use; nil opens one. Opening derives the
	// key (scrypt, about half a second), which callers that already hold
	// a handle should not pay again. The caller keeps ownership.
	Repo *repo.Repo
	// Opening is a handle still being opened (nil: use Repo, or open
	// one); the pull connects to the host while the key is derived. The
	// caller keeps ownership.
	Opening *repo.Opening
}

// Host backs up one host under a shared repository lock. Hosts pulled in
// parallel each use their own handle, so each has its own blob uploader;
// restic's shared lock lets them, and a concurrent restic backup, run side
// by side.
func Host(ctx context.Context, cfg *config.Config, h *config.Host, opts HostOptions) (*backup.Result, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	phase := func(string) {}
	conn := Connecter(h, false)
	var progress backup.Progress
	if opts.Progress != nil {
		progress = opts.Progress
		phase = opts.Progress.Phase
		conn = countingConnecter{conn, opts.Progress}
	}
	res := &backup.Result{Host: h.Name}
	phase("opening repository")
	op := opts.Opening
	switch {
	case op != nil:
	case opts.Repo != nil:
		op = repo.Opened(opts.Repo)
	default:
		var err error
		if op, err = OpenAsync(ctx, cfg); err != nil {
			return res, err
		}
		defer func() {
			if r, _ := op.Wait(context.WithoutCancel(ctx)); r != nil {
				r.Close()
			}
		}()
	}
	pending := backup.Pending{Opening: op, Lock: func(ctx context.Context, r *repo.Repo) (context.Context, func(), error) {
		phase("locking")
		unlock, lctx, err := r.Lock(ctx, false, cfg.RepoLockWait(), func(format string, args ...any) {
			logf("%s: %s", h.Name, fmt.Sprintf(format, args...))
		})
		return lctx, unlock, err
	}}
	phase("connecting")
	logf("%s: pulling", h.Name)
	res, err := backup.RunPending(ctx, pending, conn, backup.Options{
		Host: h.Name, Tags: append(append([]string(nil), h.Tags...), opts.Tags...), CacheDir: cfg.CacheDir, Logf: logf,
		Exclude: h.Exclude, Progress: progress,
		Limits: cfg.BackupLimits(h),
	})
	if err == nil {
		logf("%s: snapshot %s saved", h.Name, res.SnapshotID[:8])
	}
	return res, err
}

// HostResult is one host's outcome in a multi-host run (and in `haul
// backup --json`).
type HostResult struct {
	*backup.Result
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Options say what All backs up.
type Options struct {
	Hosts []*config.Host
	Tags  []string
	Log   *runlog.Log // events and progress; All closes it before the summary
	// Opening is the repository being opened (OpenAsync); the first host
	// connects while the key is derived, the others wait for it, so a
	// repository that cannot be opened fails the run (the error is the
	// open's) before any other host is contacted. All closes it.
	Opening *repo.Opening
}

// Report is a multi-host run's outcome.
type Report struct {
	Results []HostResult
	Failed  []string // hosts that failed, in config order; never nil
	Summary string   // one line per host, then the failures
}

// All backs up opts.Hosts, at most cfg.Parallel at a time; a failing host
// does not stop the others. Each host's run is recorded for `haul status`
// and pinged ([hosts.notify]); then the Prometheus textfile is rewritten
// and the run as a whole is pinged ([notify]). The error says which hosts
// failed.
func All(ctx context.Context, cfg *config.Config, opts Options) (*Report, error) {
	log := opts.Log
	first := opts.Opening
	defer func() {
		if r, _ := first.Wait(context.WithoutCancel(ctx)); r != nil {
			r.Close()
		}
	}()
	spare := make(chan *repo.Opening, 1)
	spare <- first
	openErr := func() error {
		_, err := first.Wait(ctx)
		return err
	}

	runPing := newPinger(cfg, cfg.Notify.PingURL, cfg.Notify.PingURLFile, "[notify]", log.Errorf)
	runPing.Start(ctx)

	results := make([]HostResult, len(opts.Hosts))
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i, h := range opts.Hosts {
		hl := log.Host(h.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer hl.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			hopts := HostOptions{Tags: opts.Tags, Logf: hl.Logf, Progress: hl}
			select {
			case hopts.Opening = <-spare:
			default:
				if openErr() != nil {
					return // reported by All
				}
			}
			ping := newPinger(cfg, h.Notify.PingURL, h.Notify.PingURLFile, "host "+h.Name, hl.Errorf)
			ping.Start(ctx)
			started := time.Now()
			res, err := Host(ctx, cfg, h, hopts)
			if res == nil {
				res = &backup.Result{Host: h.Name}
			}
			if openErr() != nil {
				return
			}
			r, _ := first.Wait(ctx)
			repoID := r.Config().ID
			results[i] = HostResult{Result: res, OK: err == nil}
			run := status.Run{Started: started, Finished: time.Now(), OK: err == nil}
			if err != nil {
				results[i].Error = err.Error()
				run.Error = err.Error()
				hl.Errorf("%s: FAILED: %v", h.Name, err)
			} else {
				run.SnapshotID, run.Files, run.Bytes = res.SnapshotID, res.Files, res.Bytes
				run.WireBytes, run.BytesAdded, run.FreezeMS = res.Wire.BytesIn+res.Wire.BytesOut, res.BytesAdded, res.FreezeMS
			}
			run.DurationMS = float64(run.Finished.Sub(started).Microseconds()) / 1000
			if _, serr := status.RecordRun(cfg.CacheDir, repoID, h.Name, run); serr != nil {
				hl.Errorf("%s: warning: could not record the run for `haul status`: %v", h.Name, serr)
			}
			if err != nil {
				ping.Fail(ctx, fmt.Sprintf("haul backup of %s failed: %v\n\n--- log tail ---\n%s\n", h.Name, err, hl.Tail()))
			} else {
				ping.Success(ctx, Line(results[i])+"\n")
			}
		}()
	}
	wg.Wait()
	if err := openErr(); err != nil {
		log.Close()
		return &Report{Failed: []string{}}, err
	}
	r, _ := first.Wait(ctx)
	repoID := r.Config().ID

	if path := cfg.Notify.PrometheusTextfile; path != "" {
		if err := writeTextfile(cfg, repoID, path); err != nil {
			log.Errorf("warning: %v", err)
		}
	}

	rep := &Report{Results: results, Failed: []string{}}
	for _, r := range results {
		if !r.OK {
			rep.Failed = append(rep.Failed, r.Host)
		}
	}
	log.Close()
	rep.Summary = Summary(results)
	if len(rep.Failed) > 0 {
		err := fmt.Errorf("%d of %d hosts failed: %s", len(rep.Failed), len(results), strings.Join(rep.Failed, ", "))
		runPing.Fail(ctx, fmt.Sprintf("haul backup: %v\n\n%s\n--- log tail ---\n%s\n", err, rep.Summary, log.Tail()))
		return rep, err
	}
	runPing.Success(ctx, rep.Summary)
	return rep, nil
}

// countingConnecter feeds the bytes received to the progress line.
type countingConnecter struct {
	transport.Connecter
	h *runlog.Host
}

func (c countingConnecter) Connect(ctx context.Context, verb string) (transport.Wire, error) {
	w, err := c.Connecter.Connect(ctx, verb)
	if err != nil {
		return nil, err
	}
	return &countingWire{Wire: w, h: c.h}, nil
}

type countingWire struct {
	transport.Wire
	h *runlog.Host
}

func (w *countingWire) Read(p []byte) (int, error) {
	n, err := w.Wire.Read(p)
	w.h.AddBytes(n)
	return n, err
}

// newPinger returns the pinger for a ping URL (nil when none is set).
func newPinger(cfg *config.Config, url, file, where string, warn func(string, ...any)) *notify.Pinger {
	u, err := config.ReadPingURL(url, file)
	if err != nil {
		warn("warning: %s: %v; not pinging", where, err)
		return nil
	}
	if u == "" {
		return nil
	}
	return &notify.Pinger{URL: u, Timeout: cfg.Notify.PingTimeout.Or(10 * time.Second), Logf: warn}
}

// writeTextfile rewrites the Prometheus textfile from every configured
// host's recorded state, so hosts not in this run keep their metrics.
func writeTextfile(cfg *config.Config, repoID, path string) error {
	var states []*status.HostState
	for _, h := range cfg.Hosts {
		st, err := status.LoadState(cfg.CacheDir, repoID, h.Name)
		if err != nil {
			return err
		}
		states = append(states, st)
	}
	return notify.WriteTextfile(path, states)
}

// Line is a host's outcome in one line, as the summary and the host's
// ping show it.
func Line(r HostResult) string {
	if !r.OK {
		line, _, _ := strings.Cut(r.Error, "\n")
		return fmt.Sprintf("%-12s FAILED  %s", r.Host, line)
	}
	return fmt.Sprintf("%-12s snapshot %s  %d files, %s  moved %s on the wire (%d chunks, %s new)  freeze %.1f ms  took %.2fs",
		r.Host, r.SnapshotID[:8], r.Files, units.Bytes(r.Bytes), units.Bytes(r.Wire.BytesIn+r.Wire.BytesOut),
		r.ChunksWanted, units.Bytes(r.BytesAdded), r.FreezeMS, r.DurationMS/1000)
}

// Summary is one Line per host, then which failed.
func Summary(results []HostResult) string {
	var w strings.Builder
	var failed []string
	for _, r := range results {
		fmt.Fprintln(&w, Line(r))
		if !r.OK {
			failed = append(failed, r.Host)
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(&w, "%d of %d hosts failed: %s\n", len(failed), len(results), strings.Join(failed, ", "))
	}
	return w.String()
}

// RestoreOnto restores sn onto host h under a shared repository lock, so a
// prune cannot remove blobs while they are being sent.
func RestoreOnto(ctx context.Context, cfg *config.Config, r *repo.Repo, sn *repo.Snapshot, h *config.Host, opts restore.AgentOptions) (*restore.AgentResult, error) {
	unlock, lctx, err := r.Lock(ctx, false, cfg.RepoLockWait(), opts.Logf)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if opts.Logf != nil {
		opts.Logf("%s: restoring snapshot %s of %s", h.Name, sn.ID.Str(), sn.Hostname)
	}
	return restore.Agent(lctx, r, sn, Connecter(h, true), opts)
}
