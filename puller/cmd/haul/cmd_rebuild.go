package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/rebuild"
	"github.com/haulproject/haul/puller/runlog"
	"github.com/urfave/cli/v2"
)

var cmdRebuild = &cli.Command{
	Name:  "rebuild",
	Usage: "recreate a host's VPS from code and put its data back: preflight, final backup, tofu apply, wait for SSH, restore, start, health check",
	Description: "Phase by phase, each timed: preflight (Hetzner API: token, server, primary IPs and their\n" +
		"protection; tofu; the kept host key and its pin; a recent, whole snapshot), a last backup if the\n" +
		"old server answers, `tofu apply -replace=<server>` in tofu_dir (tofu installs NixOS with the kept\n" +
		"host key through nixos-anywhere), waiting for SSH with the pinned key, the restore with the restore\n" +
		"key, the host reporting ready (its stack starts on the ready marker), and an HTTPS health check of\n" +
		"the dashboard. A failed run leaves its state in the cache dir; rerun the same command to continue\n" +
		"with the failed phase. Settings: [hosts.rebuild] (docs/rebuild.md). Without --yes, haul asks on\n" +
		"the terminal and refuses when stdin is not one.",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "host", Required: true, Usage: "the host `NAME` to rebuild"},
		&cli.BoolFlag{Name: "dry-run", Usage: "run preflight only and print the plan; nothing changes"},
		&cli.BoolFlag{Name: "yes", Usage: "do not ask for confirmation"},
		&cli.BoolFlag{Name: "skip-final-backup", Usage: "restore the newest snapshot without pulling a last one from the old server"},
		&cli.StringFlag{Name: "snapshot", Usage: "restore snapshot `ID` (or prefix) instead of the newest, without a final backup: after a compromise, the data from before it"},
		&cli.BoolFlag{Name: "allow-missing-server", Usage: "proceed when the server does not exist (tofu creates it)"},
		&cli.BoolFlag{Name: "restart", Usage: "forget an unfinished earlier rebuild of the host and begin with preflight"},
		jsonFlag,
	},
	Action: func(c *cli.Context) error {
		return runRebuild(c, rebuildOptions{
			Host: c.String("host"), DryRun: c.Bool("dry-run"), Yes: c.Bool("yes"),
			SkipFinalBackup: c.Bool("skip-final-backup"), Snapshot: c.String("snapshot"),
			AllowMissingServer: c.Bool("allow-missing-server"), Restart: c.Bool("restart"), JSON: c.Bool("json"),
		})
	},
}

type rebuildOptions struct {
	Host               string
	DryRun, Yes        bool
	SkipFinalBackup    bool
	Snapshot           string
	AllowMissingServer bool
	Restart, JSON      bool
}

func runRebuild(c *cli.Context, o rebuildOptions) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	h, err := cfg.Host(o.Host)
	if err != nil {
		return configFailure(err)
	}
	if h.Rebuild == nil {
		return configFailure(fmt.Errorf("host %s has no [hosts.rebuild] section: add one (docs/rebuild.md lists its keys)", h.Name))
	}
	if !o.DryRun && !o.Yes && !runlog.IsTerminal(os.Stdin) {
		return configFailure(fmt.Errorf("refusing to rebuild %s without --yes: stdin is not a terminal, so nobody can confirm. Review the plan with --dry-run, then pass --yes", h.Name))
	}
	token, err := h.Rebuild.HcloudToken()
	if err != nil {
		return configFailure(fmt.Errorf("host %s: %w", h.Name, err))
	}
	self, err := os.Executable()
	if err != nil {
		self = "haul"
	}
	ctx, cancel := signalContext(c)
	defer cancel()

	opts := rebuild.Pulled(cfg, h, progress(c, false))
	opts.Token, opts.HaulBin, opts.Out = token, self, c.App.ErrWriter
	opts.DryRun, opts.SkipFinalBackup, opts.Snapshot = o.DryRun, o.SkipFinalBackup, o.Snapshot
	opts.AllowMissingServer, opts.Restart = o.AllowMissingServer, o.Restart
	if !o.Yes {
		opts.Confirm = func(res *rebuild.Result) error { return confirmRebuild(c, res) }
	}
	res, err := rebuild.Run(ctx, opts)
	if res != nil {
		if o.JSON {
			if jerr := printJSON(c.App.Writer, res); jerr != nil {
				return jerr
			}
		} else {
			printRebuild(c.App.Writer, res)
		}
	}
	if err != nil {
		var pe *rebuild.PhaseError
		if errors.As(err, &pe) || errors.Is(err, errNotConfirmed) {
			return hostFailure(err)
		}
		return configFailure(err)
	}
	return nil
}

var errNotConfirmed = errors.New("not confirmed; nothing was changed")

// confirmRebuild shows the preflight and the plan on the terminal and
// asks for the host's name.
func confirmRebuild(c *cli.Context, res *rebuild.Result) error {
	w := c.App.ErrWriter
	if res.Preflight != nil {
		printChecks(w, res)
	}
	fmt.Fprintf(w, "plan for %s:\n", res.Host)
	for _, l := range res.Plan {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "type the host's name (%s) to go ahead: ", res.Host)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if strings.TrimSpace(line) != res.Host {
		return errNotConfirmed
	}
	return nil
}

func printChecks(w io.Writer, res *rebuild.Result) {
	fmt.Fprintf(w, "preflight of %s:\n", res.Host)
	for _, ch := range res.Preflight.Checks {
		mark := "ok  "
		if !ch.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %-13s %s\n", mark, ch.Name, ch.Detail)
	}
}

func printRebuild(w io.Writer, res *rebuild.Result) {
	if res.DryRun {
		if res.Preflight != nil {
			printChecks(w, res)
		}
		if res.Error != "" {
			fmt.Fprintf(w, "dry run: preflight failed; nothing was changed\n")
			return
		}
		fmt.Fprintf(w, "plan (dry run: nothing was changed; run without --dry-run to do it):\n")
		for _, l := range res.Plan {
			fmt.Fprintf(w, "  %s\n", l)
		}
		return
	}
	var failed *rebuild.PhaseResult
	for _, p := range res.Phases {
		if p.Status == rebuild.StatusFailed {
			failed = p
		}
	}
	switch {
	case res.OK:
		fmt.Fprintf(w, "rebuilt %s in %s (recovery time, from the first run's start to a healthy dashboard; %d run(s))\n",
			res.Host, time.Duration(res.RecoveryMS*float64(time.Millisecond)).Round(10*time.Millisecond), res.Runs)
	case failed != nil && failed.Name == rebuild.PhasePreflight:
		printChecks(w, res)
		fmt.Fprintf(w, "rebuild of %s: preflight failed; nothing was changed\n", res.Host)
		return
	case failed != nil:
		fmt.Fprintf(w, "rebuild of %s stopped in phase %s (run %d); rerun `haul rebuild --host %s` to continue there\n", res.Host, failed.Name, res.Runs, res.Host)
	default:
		fmt.Fprintf(w, "rebuild of %s did not start\n", res.Host)
		return
	}
	for _, p := range res.Phases {
		t := "-"
		if p.Status != rebuild.StatusPending {
			t = fmt.Sprintf("%.2fs", p.MS/1000)
		}
		status := p.Status
		if p.Status == rebuild.StatusFailed {
			status = "FAILED"
		}
		if p.Run > 0 && p.Run != res.Runs && p.Status != rebuild.StatusPending {
			status += fmt.Sprintf(" (run %d)", p.Run)
		}
		detail := p.Detail
		if p.Status == rebuild.StatusFailed {
			detail, _, _ = strings.Cut(p.Error, "\n")
		}
		fmt.Fprintf(w, "  %-13s %9s  %-15s %s\n", p.Name, t, status, detail)
	}
	fmt.Fprintf(w, "  %-13s %9s\n", "phases total", fmt.Sprintf("%.2fs", res.PhasesMS/1000))
}
