package main

import (
	"encoding/json"

	"github.com/haulproject/haul/puller/prune"
	"github.com/urfave/cli/v2"
)

var cmdPrune = &cli.Command{
	Name:  "prune",
	Usage: "remove data no snapshot references (restic's prune, under restic's exclusive lock)",
	Flags: []cli.Flag{maintDryRunFlag, maxUnusedFlag, jsonFlag, cronQuietFlag},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		ctx, cancel := signalContext(c)
		defer cancel()
		log := newRunLog(c)
		defer log.Close()
		dry := c.Bool("dry-run")
		r, unlock, lctx, err := openLocked(ctx, cfg, dry, log.Logf)
		if err != nil {
			return err
		}
		defer unlock()
		res, err := prune.Run(lctx, r, prune.Options{DryRun: dry, MaxUnused: c.String("max-unused"), Logf: log.Logf})
		if err != nil {
			return configFailure(err)
		}
		if c.Bool("json") {
			return json.NewEncoder(c.App.Writer).Encode(res)
		}
		logPruneResult(log.Logf, res)
		return nil
	},
}
