package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/haulproject/haul/puller/status"
	"github.com/haulproject/haul/puller/truenas"
	"github.com/urfave/cli/v2"
)

var cmdTrueNAS = &cli.Command{
	Name:  "truenas",
	Usage: "manage haul's schedule on a TrueNAS system",
	Subcommands: []*cli.Command{{
		Name:  "cron",
		Usage: "TrueNAS cron jobs",
		Subcommands: []*cli.Command{{
			Name:  "install",
			Usage: "create or update haul's cron job through the TrueNAS middleware (idempotent)",
			Description: `On the NAS itself (no --url) this uses midclt, which needs no API key. From
elsewhere give --url https://NAS and --api-key-file: TrueNAS 25.04 and later are
reached over JSON-RPC 2.0 (wss://NAS/api/current), 24.10 over its REST API. An
API key is never sent over plain HTTP (TrueNAS revokes a key used that way).

The job is found again by the marker "[haul:<config>]" in its description;
running this again with the same settings changes nothing. The job runs
"haul backup --quiet" (with --forget and --drill, more steps in one sh -c),
which prints nothing on success and the failure on stderr, so TrueNAS mails
only failures. The schedule is recorded in the config's cache_dir, and
"haul status" derives a default max_age from it.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "url", Usage: "TrueNAS base `URL` (https://nas.lan); leave out on the NAS itself to use midclt"},
				&cli.StringFlag{Name: "api-key-file", Usage: "`FILE` holding a TrueNAS API key (Credentials → API Keys); only with --url"},
				&cli.StringFlag{Name: "api-user", Value: "truenas_admin", Usage: "`USER` the API key belongs to"},
				&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` to trust for the TrueNAS certificate (for a self-signed one)"},
				&cli.StringFlag{Name: "midclt", Usage: "midclt `PATH` (default: from PATH)"},
				&cli.StringFlag{Name: "user", Value: "root", Usage: "run the job as `USER`"},
				&cli.StringFlag{Name: "schedule", Value: "0 3 * * *", Usage: "cron `EXPR`: minute hour day-of-month month day-of-week"},
				&cli.StringFlag{Name: "config", Usage: "haul config `FILE` on the NAS, kept on a pool dataset (default: the global --config)"},
				&cli.StringFlag{Name: "binary", Usage: "haul executable `PATH` on the NAS, kept on a pool dataset (default: this executable)"},
				&cli.BoolFlag{Name: "forget", Usage: "after the backup, apply retention and prune (haul forget --prune)"},
				&cli.BoolFlag{Name: "drill", Usage: "after that, run a restore drill of every host (haul drill)"},
				&cli.BoolFlag{Name: "disabled", Usage: "install the job disabled"},
				cronQuietFlag,
			},
			Action: func(c *cli.Context) error {
				return runTrueNASCronInstall(c, truenasCronOptions{
					URL: c.String("url"), APIKeyFile: c.String("api-key-file"), APIUser: c.String("api-user"),
					CAFile: c.String("ca-file"), Midclt: c.String("midclt"), User: c.String("user"),
					Schedule: c.String("schedule"), Config: globalString(c, "config"), Binary: c.String("binary"),
					Forget: c.Bool("forget"), Drill: c.Bool("drill"), Disabled: c.Bool("disabled"), Quiet: c.Bool("quiet"),
				})
			},
		}},
	}},
}

// truenasCronOptions are `truenas cron install`'s flags. Config is the
// subcommand's own --config, else the global one wherever it was given.
type truenasCronOptions struct {
	URL, APIKeyFile, APIUser, CAFile, Midclt string
	User, Schedule, Config, Binary           string
	Forget, Drill, Disabled, Quiet           bool
}

func runTrueNASCronInstall(c *cli.Context, opts truenasCronOptions) error {
	sched, err := truenas.ParseSchedule(opts.Schedule)
	if err != nil {
		return configFailure(err)
	}
	cfgPath := opts.Config
	if cfgPath == "" {
		cfgPath = configFlag.Value
	}
	if cfgPath == "" {
		return configFailure(fmt.Errorf("--config: give the haul config's path on the NAS"))
	}
	if cfgPath, err = filepath.Abs(cfgPath); err != nil {
		return configFailure(err)
	}
	bin := opts.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return configFailure(fmt.Errorf("--binary: %w", err))
		}
	}
	o := truenas.InstallOptions{
		Connect: truenas.Options{URL: opts.URL, APIUser: opts.APIUser, CAFile: opts.CAFile, Midclt: opts.Midclt},
		Job: truenas.HaulJob{Binary: bin, Config: cfgPath, Forget: opts.Forget, Drill: opts.Drill,
			User: opts.User, Schedule: sched, Disabled: opts.Disabled},
	}
	if f := opts.APIKeyFile; f != "" {
		if o.Connect.URL == "" {
			return configFailure(fmt.Errorf("--api-key-file needs --url; on the NAS itself leave both out (midclt needs no key)"))
		}
		key, err := os.ReadFile(f)
		if err != nil {
			return configFailure(fmt.Errorf("read --api-key-file: %w", err))
		}
		if o.Connect.APIKey = strings.TrimSpace(string(key)); o.Connect.APIKey == "" {
			return configFailure(fmt.Errorf("--api-key-file %s is empty", f))
		}
	}
	res, err := truenas.InstallAndRecord(c.Context, o)
	if err != nil {
		return configFailure(err)
	}
	note := "(haul status derives max_age from the schedule)"
	if res.CacheDir == "" {
		note = fmt.Sprintf("(config not readable here: haul status on the NAS uses max_age %s for hosts without one)", status.DefaultMaxAge)
	}
	if !opts.Quiet {
		fmt.Fprintf(c.App.Writer, "%s TrueNAS cron job %d via %s: %q at %q as %s %s\n",
			res.Action, res.Job.ID, res.Via, res.Job.Command, sched.String(), res.Job.User, note)
	}
	return nil
}
