package truenas

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// HaulJob is the cron job `haul truenas cron install` manages.
type HaulJob struct {
	// Binary and Config are absolute paths on the NAS.
	Binary, Config string
	// Forget adds retention and prune after a good backup; Drill adds a
	// restore drill of every host after that.
	Forget, Drill bool
	User          string
	Schedule      Schedule
	Disabled      bool
}

// Marker identifies the job among the system's others: one job per
// haul config.
func (h HaulJob) Marker() string { return "[haul:" + h.Config + "]" }

var safeShellWord = regexp.MustCompile(`^[A-Za-z0-9/._+:=@-]+$`)

// shellQuote quotes a word for sh.
func shellQuote(s string) string {
	if safeShellWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Command is the job's command line. TrueNAS runs it as
// `sudo -u USER sh -c "COMMAND > /dev/null"` (plugins/cron/execute.py;
// older releases put `PATH=… COMMAND > /dev/null` in cron.d) and mails
// whatever reaches the pipe, stderr included. With several steps the line
// is one `sh -c '…'`, so that appended redirect covers every step, not
// only the last; every step runs with --quiet, which prints nothing on
// success and the failure on stderr, so a good run mails nothing and a bad
// one mails the error.
func (h HaulJob) Command() (string, error) {
	for _, p := range []struct{ flag, path string }{{"--binary", h.Binary}, {"--config", h.Config}} {
		if !filepath.IsAbs(p.path) {
			return "", fmt.Errorf("%s %q: give an absolute path on the NAS (cron has no useful working directory or PATH)", p.flag, p.path)
		}
		// TrueNAS deletes newlines from the command, and cron (and the
		// middleware's escaping of it) treats % specially.
		if strings.ContainsAny(p.path, "%\n\r") {
			return "", fmt.Errorf("%s %q: a path with %% or a newline cannot be put in a cron command; move it", p.flag, p.path)
		}
	}
	haul := shellQuote(h.Binary) + " --config " + shellQuote(h.Config)
	steps := []string{haul + " backup --quiet"}
	if h.Forget {
		// Retention only after every host was backed up, as haul.service
		// does: a failing run changes nothing in the repository's history.
		steps = append(steps, haul+" forget --prune --quiet")
	}
	if h.Drill {
		steps = append(steps, haul+" drill --quiet")
	}
	if len(steps) == 1 {
		return steps[0], nil
	}
	return "sh -c " + shellQuote(strings.Join(steps, " && ")), nil
}

// CronJob is the TrueNAS cron job entry for h: stdout hidden, stderr
// mailed.
func (h HaulJob) CronJob() (CronJob, error) {
	cmd, err := h.Command()
	if err != nil {
		return CronJob{}, err
	}
	if h.User == "" || strings.ContainsAny(h.User, " \t\n") {
		return CronJob{}, fmt.Errorf("--user %q: give the user to run the job as (TrueNAS refuses names with spaces)", h.User)
	}
	what := "haul backup"
	if h.Forget {
		what += ", forget --prune"
	}
	if h.Drill {
		what += ", drill"
	}
	return CronJob{
		Enabled:     !h.Disabled,
		Stdout:      true,  // hide stdout (--quiet prints nothing there anyway)
		Stderr:      false, // mail stderr: failures
		Schedule:    h.Schedule,
		Command:     cmd,
		Description: what + ", managed by `haul truenas cron install` " + h.Marker(),
		User:        h.User,
	}, nil
}

// InstallOptions are `haul truenas cron install`'s.
type InstallOptions struct {
	Connect Options
	Job     HaulJob
}

// InstallResult is what InstallHaulJob did.
type InstallResult struct {
	Action Action
	Job    CronJob
	// Via says how the middleware was reached.
	Via string
	// LongestGap is the schedule's longest gap between runs.
	LongestGap time.Duration
}

// InstallHaulJob creates or updates haul's cron job (see Install).
func InstallHaulJob(ctx context.Context, o InstallOptions) (*InstallResult, error) {
	gap, err := o.Job.Schedule.LongestGap()
	if err != nil {
		return nil, err
	}
	want, err := o.Job.CronJob()
	if err != nil {
		return nil, err
	}
	api, via, err := Connect(ctx, o.Connect)
	if err != nil {
		return nil, err
	}
	defer api.Close()
	action, got, err := Install(ctx, api, want, o.Job.Marker())
	if err != nil {
		return nil, err
	}
	return &InstallResult{Action: action, Job: got, Via: via, LongestGap: gap}, nil
}
