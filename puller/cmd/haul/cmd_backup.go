package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/config"
	"github.com/urfave/cli/v2"
)

var cmdBackup = &cli.Command{
	Name:  "backup",
	Usage: "pull a snapshot from each host (or the named ones), in parallel",
	Flags: []cli.Flag{
		&cli.StringSliceFlag{Name: "host", Usage: "back up only host `NAME` (repeatable)"},
		&cli.StringSliceFlag{Name: "tag", Usage: "add `TAG` to the snapshots (repeatable)"},
		jsonFlag,
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
	// Fail early and clearly if the repository cannot be opened.
	if _, err := openRepo(ctx, cfg); err != nil {
		return err
	}

	jsonOut := c.Bool("json")
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		if jsonOut {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(c.App.ErrWriter, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	results := make([]hostResult, len(hosts))
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := backupHost(ctx, cfg, h, c.StringSlice("tag"), logf)
			results[i] = hostResult{Result: res, OK: err == nil}
			if err != nil {
				results[i].Error = err.Error()
				logf("%s: FAILED: %v", h.Name, err)
			}
		}()
	}
	wg.Wait()

	var failed []string
	for _, r := range results {
		if !r.OK {
			failed = append(failed, r.Host)
		}
	}
	if jsonOut {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"hosts": results, "ok": len(failed) == 0, "failed": failed}); err != nil {
			return err
		}
	} else {
		printBackupSummary(c.App.Writer, results)
	}
	if len(failed) > 0 {
		return hostFailure(fmt.Errorf("%d of %d hosts failed: %s", len(failed), len(results), strings.Join(failed, ", ")))
	}
	return nil
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

// backupHost opens its own repository handle, so hosts pulled in parallel
// each have their own blob uploader; restic's shared lock lets them, and a
// concurrent restic backup, run side by side.
func backupHost(ctx context.Context, cfg *config.Config, h *config.Host, tags []string, logf func(string, ...any)) (*backup.Result, error) {
	res := &backup.Result{Host: h.Name}
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return res, err
	}
	unlock, lctx, err := r.Lock(ctx, false, cfg.LockWait.Or(5*time.Minute), logf)
	if err != nil {
		return res, err
	}
	defer unlock()
	logf("%s: pulling", h.Name)
	res, err = backup.Run(lctx, r, connecter(h, false), backup.Options{
		Host: h.Name, Tags: append(append([]string(nil), h.Tags...), tags...), CacheDir: cfg.CacheDir, Logf: logf,
	})
	if err == nil {
		logf("%s: snapshot %s saved", h.Name, res.SnapshotID[:8])
	}
	return res, err
}

func printBackupSummary(w io.Writer, results []hostResult) {
	for _, r := range results {
		if !r.OK {
			fmt.Fprintf(w, "%-12s FAILED  %s\n", r.Host, r.Error)
			continue
		}
		fmt.Fprintf(w, "%-12s snapshot %s  %d files, %s  moved %s on the wire (%d chunks, %s new)  freeze %.1f ms  took %.2fs\n",
			r.Host, r.SnapshotID[:8], r.Files, humanBytes(r.Bytes), humanBytes(r.Wire.BytesIn+r.Wire.BytesOut),
			r.ChunksWanted, humanBytes(r.BytesAdded), r.FreezeMS, r.DurationMS/1000)
	}
}
