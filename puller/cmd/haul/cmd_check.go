package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/haulproject/haul/puller/check"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdCheck = &cli.Command{
	Name:  "check",
	Usage: "verify the repository as `restic check` does; exit 2 if it is damaged",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "read-data", Usage: "also read and verify all data"},
		&cli.StringFlag{Name: "read-data-subset", Usage: "also read and verify a random `N%` of the data packs"},
		jsonFlag, cronQuietFlag,
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		ctx, cancel := signalContext(c)
		defer cancel()
		log := newRunLog(c)
		defer log.Close()
		pw, err := cfg.Password()
		if err != nil {
			return configFailure(err)
		}
		// The checker loads and verifies the index itself.
		r, err := repo.OpenNoIndex(ctx, cfg.Repository, pw)
		if err != nil {
			return configFailure(err)
		}
		unlock, lctx, err := r.Lock(ctx, true, cfg.RepoLockWait(), log.Logf)
		if err != nil {
			return configFailure(err)
		}
		defer unlock()
		res, err := check.Run(lctx, r, check.Options{ReadData: c.Bool("read-data"), ReadDataSubset: c.String("read-data-subset"), Logf: log.Logf, Progress: log.Host("check")})
		log.Close() // the progress line is cleared before the result is printed
		if err != nil {
			return configFailure(err)
		}
		if c.Bool("json") {
			if err := json.NewEncoder(c.App.Writer).Encode(res); err != nil {
				return err
			}
		} else {
			for _, h := range res.Hints {
				log.Logf("hint: %s", h)
			}
		}
		if !res.OK {
			return configFailure(fmt.Errorf("repository %s is damaged: %d errors:\n%s\nsee docs/operations.md (\"When check finds errors\")",
				cfg.Repository, len(res.Errors), strings.Join(res.Errors, "\n")))
		}
		if !c.Bool("json") && !c.Bool("quiet") {
			read := ""
			if res.ReadData != "none" {
				read = fmt.Sprintf(", read %d of %d packs", res.PacksRead, res.PacksTotal)
			}
			fmt.Fprintf(c.App.Writer, "no errors were found (%d snapshots%s, %.1fs)\n", res.Snapshots, read, res.DurationMS/1000)
		}
		return nil
	},
}
