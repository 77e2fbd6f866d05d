package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/haulproject/haul/internal/units"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/notify"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/runlog"
	"github.com/haulproject/haul/puller/status"
	"github.com/haulproject/haul/puller/transport"
	"github.com/urfave/cli/v2"
)

var cmdBackup = &cli.Command{
	Name:  "backup",
	Usage: "pull a snapshot from each host (or the named ones), in parallel",
	Description: `Hosts are pulled at most "parallel" at a time; a failing host does not stop the
others, and the summary names it (exit 1). Events are logged one line each on
stderr; on a terminal a live progress line is drawn on stdout. After the run the
outcome is pinged ([notify] ping_url, [hosts.notify] ping_url), each host's last
run is kept for ` + "`haul status`" + `, and the Prometheus textfile is rewritten.`,
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Usage: "back up only host `NAME` (repeatable)"},
		&cli.StringSliceFlag{Name: "tag", Usage: "add `TAG` to the snapshots (repeatable)"},
		jsonFlag,
		cronQuietFlag,
	},
	Action: runBackup,
}

// hostResult is one host's outcome in `haul backup --json`.
type hostResult struct {
	*backup.Result
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func runBackup(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	hosts, err := selectHosts(cfg, c.StringSlice("host"))
	if err != nil {
		return err
	}
	ctx, cancel := signalContext(c)
	defer cancel()
	log := newRunLog(c)
	defer log.Close()
	// Fail early and clearly if the repository cannot be opened.
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return err
	}
	repoID := r.Config().ID
	// The first host reuses this handle: opening derives the key (scrypt,
	// about half a second), which a no-change run should pay only once.
	spare <- r
	defer func() {
		select {
		case r := <-spare:
			r.Close()
		default:
		}
	}()

	runPing := newPinger(cfg, cfg.Notify.PingURL, cfg.Notify.PingURLFile, "[notify]", log.Errorf)
	runPing.Start(ctx)

	results := make([]hostResult, len(hosts))
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i, h := range hosts {
		hl := log.Host(h.Name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer hl.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ping := newPinger(cfg, h.Notify.PingURL, h.Notify.PingURLFile, "host "+h.Name, hl.Errorf)
			ping.Start(ctx)
			started := time.Now()
			res, err := pullHost(ctx, cfg, h, c.StringSlice("tag"), hl.Logf, hl)
			if res == nil {
				res = &backup.Result{Host: h.Name}
			}
			results[i] = hostResult{Result: res, OK: err == nil}
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
				ping.Success(ctx, backupLine(results[i])+"\n")
			}
		}()
	}
	wg.Wait()

	if path := cfg.Notify.PrometheusTextfile; path != "" {
		if err := writeTextfile(cfg, repoID, path); err != nil {
			log.Errorf("warning: %v", err)
		}
	}

	var failed []string
	for _, r := range results {
		if !r.OK {
			failed = append(failed, r.Host)
		}
	}
	log.Close()
	var summary strings.Builder
	printBackupSummary(&summary, results)
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"hosts": results, "ok": len(failed) == 0, "failed": failedList(failed)}); err != nil {
			return err
		}
	} else if !c.Bool("quiet") {
		io.WriteString(c.App.Writer, summary.String())
	} else if len(failed) > 0 {
		// Quiet: nothing on success, the whole summary with the failure.
		io.WriteString(c.App.ErrWriter, summary.String())
	}
	if len(failed) > 0 {
		err := fmt.Errorf("%d of %d hosts failed: %s", len(failed), len(results), strings.Join(failed, ", "))
		runPing.Fail(ctx, fmt.Sprintf("haul backup: %v\n\n%s\n--- log tail ---\n%s\n", err, summary.String(), log.Tail()))
		return hostFailure(err)
	}
	runPing.Success(ctx, summary.String())
	return nil
}

func failedList(f []string) []string {
	if f == nil {
		return []string{}
	}
	return f
}

func selectHosts(cfg *config.Config, names []string) ([]*config.Host, error) {
	if len(names) == 0 {
		if len(cfg.Hosts) == 0 {
			return nil, configFailure(fmt.Errorf("no [[hosts]] in %s", cfg.Path))
		}
		hosts := make([]*config.Host, len(cfg.Hosts))
		for i := range cfg.Hosts {
			hosts[i] = &cfg.Hosts[i]
		}
		return hosts, nil
	}
	var hosts []*config.Host
	for _, n := range names {
		h, err := cfg.Host(n)
		if err != nil {
			return nil, configFailure(err)
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// spare holds a repository handle opened before the hosts start; one host
// takes it instead of opening its own.
var spare = make(chan *repo.Repo, 1)

// backupHost opens its own repository handle, so hosts pulled in parallel
// each have their own blob uploader; restic's shared lock lets them, and a
// concurrent restic backup, run side by side.
func backupHost(ctx context.Context, cfg *config.Config, h *config.Host, tags []string, logf func(string, ...any)) (*backup.Result, error) {
	return pullHost(ctx, cfg, h, tags, logf, nil)
}

// pullHost is backupHost with progress reported to hl (nil: none).
func pullHost(ctx context.Context, cfg *config.Config, h *config.Host, tags []string, logf func(string, ...any), hl *runlog.Host) (*backup.Result, error) {
	phase := func(string) {}
	conn := connecter(h, false)
	if hl != nil {
		phase = hl.Phase
		conn = countingConnecter{conn, hl}
	}
	res := &backup.Result{Host: h.Name}
	phase("opening repository")
	var r *repo.Repo
	select {
	case r = <-spare:
	default:
		var err error
		if r, err = openRepo(ctx, cfg); err != nil {
			return res, err
		}
	}
	defer r.Close()
	phase("locking")
	unlock, lctx, err := r.Lock(ctx, false, repoLockWait(cfg), func(format string, args ...any) {
		logf("%s: %s", h.Name, fmt.Sprintf(format, args...))
	})
	if err != nil {
		return res, err
	}
	defer unlock()
	phase("pulling")
	logf("%s: pulling", h.Name)
	res, err = backup.Run(lctx, r, conn, backup.Options{
		Host: h.Name, Tags: append(append([]string(nil), h.Tags...), tags...), CacheDir: cfg.CacheDir, Logf: logf,
	})
	if err == nil {
		logf("%s: snapshot %s saved", h.Name, res.SnapshotID[:8])
	}
	return res, err
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

// newRunLog makes the run's log: events on stderr (none with --json,
// failures only with --quiet), a live progress line when stdout is a
// terminal.
func newRunLog(c *cli.Context) *runlog.Log {
	opts := runlog.Options{Events: c.App.ErrWriter, Quiet: c.Bool("quiet")}
	if c.Bool("json") {
		opts.Events = nil
	}
	if !c.Bool("json") && !c.Bool("quiet") && runlog.IsTerminal(c.App.Writer) {
		opts.Progress = c.App.Writer
	}
	return runlog.New(opts)
}

func repoLockWait(cfg *config.Config) time.Duration { return cfg.LockWait.Or(5 * time.Minute) }

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

func backupLine(r hostResult) string {
	if !r.OK {
		return fmt.Sprintf("%-12s FAILED  %s", r.Host, firstLineOf(r.Error))
	}
	return fmt.Sprintf("%-12s snapshot %s  %d files, %s  moved %s on the wire (%d chunks, %s new)  freeze %.1f ms  took %.2fs",
		r.Host, r.SnapshotID[:8], r.Files, units.Bytes(r.Bytes), units.Bytes(r.Wire.BytesIn+r.Wire.BytesOut),
		r.ChunksWanted, units.Bytes(r.BytesAdded), r.FreezeMS, r.DurationMS/1000)
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func printBackupSummary(w io.Writer, results []hostResult) {
	var failed []string
	for _, r := range results {
		fmt.Fprintln(w, backupLine(r))
		if !r.OK {
			failed = append(failed, r.Host)
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "%d of %d hosts failed: %s\n", len(failed), len(results), strings.Join(failed, ", "))
	}
}
