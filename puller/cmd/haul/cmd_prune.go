package main

import (
	"context"
	"encoding/json"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/prune"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdPrune = &cli.Command{
	Name:  "prune",
	Usage: "remove data no snapshot references (restic's prune, under restic's exclusive lock)",
	Flags: []cli.Flag{maintDryRunFlag, maxUnusedFlag, jsonFlag, cronQuietFlag},
	Action: func(c *cli.Context) error {
		return runPrune(c, pruneOptions{DryRun: c.Bool("dry-run"), MaxUnused: c.String("max-unused"), JSON: c.Bool("json")})
	},
}

type pruneOptions struct {
	DryRun    bool
	MaxUnused string
	JSON      bool
}

func runPrune(c *cli.Context, opts pruneOptions) error {
	log := newRunLog(c)
	defer log.Close()
	return withLockedRepo(c, opts.DryRun, log.Logf, func(ctx context.Context, _ *config.Config, r *repo.Repo) error {
		res, err := prune.Run(ctx, r, prune.Options{DryRun: opts.DryRun, MaxUnused: opts.MaxUnused, Logf: log.Logf})
		if err != nil {
			return configFailure(err)
		}
		if opts.JSON {
			return json.NewEncoder(c.App.Writer).Encode(res)
		}
		logPruneResult(log.Logf, res)
		return nil
	})
}
