package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/pull"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

// signalContext is cancelled by SIGINT or SIGTERM, so a run stops cleanly:
// no snapshot is written, what was stored is kept.
func signalContext(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
}

func loadConfig(c *cli.Context) (*config.Config, error) {
	cfg, err := config.LoadWith(globalString(c, "config"), config.Overrides{
		Repository: globalString(c, "repo"), PasswordFile: globalString(c, "password-file"),
	})
	if err != nil {
		return nil, configFailure(err)
	}
	return cfg, nil
}

func openRepo(ctx context.Context, cfg *config.Config) (*repo.Repo, error) {
	r, err := pull.OpenRepo(ctx, cfg)
	if err != nil {
		return nil, configFailure(err)
	}
	return r, nil
}

// openLocked opens the repository for a maintenance command and takes
// restic's lock: exclusive to change it, shared for a dry run, which only
// reads.
func openLocked(ctx context.Context, cfg *config.Config, dryRun bool, logf func(string, ...any)) (*repo.Repo, func(), context.Context, error) {
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return nil, nil, ctx, err
	}
	unlock, lctx, err := r.Lock(ctx, !dryRun, cfg.RepoLockWait(), logf)
	if err != nil {
		return nil, nil, ctx, configFailure(err)
	}
	return r, unlock, lctx, nil
}
