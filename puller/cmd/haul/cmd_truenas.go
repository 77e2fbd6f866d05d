package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

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
			Usage: "create or update haul's cron job through the TrueNAS API (idempotent)",
			Description: `Creates the cron job, or updates the one this command created before (found by
the marker "[haul:<config>]" in its description). Running it again with the same
settings changes nothing. The job runs "haul backup --quiet" (and, with --forget,
"&& haul forget --prune --quiet"), so TrueNAS mails only failures: stdout is hidden,
stderr is not.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "url", Required: true, Usage: "TrueNAS base `URL`, e.g. https://nas.lan or http://localhost on the NAS itself"},
				&cli.StringFlag{Name: "api-key-file", Required: true, Usage: "`FILE` holding a TrueNAS API key (Credentials → API Keys)"},
				&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` to trust for the TrueNAS certificate (for a self-signed one)"},
				&cli.StringFlag{Name: "user", Value: "root", Usage: "run the job as `USER`"},
				&cli.StringFlag{Name: "schedule", Value: "0 3 * * *", Usage: "cron `EXPR`: minute hour day-of-month month day-of-week"},
				&cli.StringFlag{Name: "config", Usage: "haul config `FILE` on the NAS, kept on a pool dataset (default: the global --config)"},
				&cli.StringFlag{Name: "binary", Usage: "haul executable `PATH` on the NAS, kept on a pool dataset (default: this executable)"},
				&cli.BoolFlag{Name: "forget", Usage: "after the backup, apply retention and prune (haul forget --prune)"},
				&cli.BoolFlag{Name: "disabled", Usage: "install the job disabled"},
			},
			Action: runTrueNASCronInstall,
		}},
	}},
}

var safeShellWord = regexp.MustCompile(`^[A-Za-z0-9/._+:=@%-]+$`)

// shellQuote quotes a word for the /bin/sh that cron runs the command with.
func shellQuote(s string) string {
	if safeShellWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func runTrueNASCronInstall(c *cli.Context) error {
	sched, err := truenas.ParseSchedule(c.String("schedule"))
	if err != nil {
		return configFailure(err)
	}
	// The subcommand's own --config, else the global one.
	var cfgPath string
	for _, ctx := range c.Lineage() {
		if cfgPath = ctx.String("config"); cfgPath != "" {
			break
		}
	}
	if cfgPath == "" {
		return configFailure(fmt.Errorf("--config: give the haul config's path on the NAS"))
	}
	if cfgPath, err = filepath.Abs(cfgPath); err != nil {
		return configFailure(err)
	}
	bin := c.String("binary")
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return configFailure(fmt.Errorf("--binary: %w", err))
		}
	}
	if !filepath.IsAbs(bin) {
		return configFailure(fmt.Errorf("--binary %s: give an absolute path (cron has no useful PATH)", bin))
	}
	key, err := os.ReadFile(c.String("api-key-file"))
	if err != nil {
		return configFailure(fmt.Errorf("read --api-key-file: %w", err))
	}
	apiKey := strings.TrimSpace(string(key))
	if apiKey == "" {
		return configFailure(fmt.Errorf("--api-key-file %s is empty", c.String("api-key-file")))
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if ca := c.String("ca-file"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return configFailure(fmt.Errorf("read --ca-file: %w", err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return configFailure(fmt.Errorf("--ca-file %s holds no PEM certificate", ca))
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}

	haul := shellQuote(bin) + " --config " + shellQuote(cfgPath)
	command := haul + " backup --quiet"
	if c.Bool("forget") {
		// Retention only after every host was backed up, as haul.service
		// does: a failing run changes nothing in the repository's history.
		command += " && " + haul + " forget --prune --quiet"
	}
	marker := "[haul:" + cfgPath + "]"
	job := truenas.CronJob{
		Enabled:     !c.Bool("disabled"),
		Stdout:      true,  // hide stdout: the summary of a good run
		Stderr:      false, // mail stderr: failures
		Schedule:    sched,
		Command:     command,
		Description: "haul backup, managed by `haul truenas cron install` " + marker,
		User:        c.String("user"),
	}
	client := &truenas.Client{URL: c.String("url"), APIKey: apiKey, HTTP: hc}
	action, got, err := truenas.Install(c.Context, client, job, marker)
	if err != nil {
		return configFailure(err)
	}
	fmt.Fprintf(c.App.Writer, "%s TrueNAS cron job %d: %q at %q as %s\n", action, got.ID, job.Command, sched.String(), job.User)
	return nil
}
