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

// withRepo runs fn with the config, a context a signal cancels and the
// repository open, and closes the repository after: how the commands that
// read it start.
func withRepo(c *cli.Context, fn func(ctx context.Context, cfg *config.Config, r *repo.Repo) error) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	return withConfigRepo(c, cfg, fn)
}

// withConfigRepo is withRepo with the config already loaded, for commands
// that check their flags against it before opening the repository (which
// derives the key).
func withConfigRepo(c *cli.Context, cfg *config.Config, fn func(ctx context.Context, cfg *config.Config, r *repo.Repo) error) error {
	ctx, cancel := signalContext(c)
	defer cancel()
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(ctx, cfg, r)
}

// withLockedRepo is withRepo for a maintenance command, under restic's
// lock: exclusive to change the repository, shared for a dry run, which
// only reads. fn runs in the lock's context.
func withLockedRepo(c *cli.Context, dryRun bool, logf func(string, ...any), fn func(ctx context.Context, cfg *config.Config, r *repo.Repo) error) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext(c)
	defer cancel()
	r, unlock, lctx, err := openLocked(ctx, cfg, dryRun, logf)
	if err != nil {
		return err
	}
	defer unlock()
	return fn(lctx, cfg, r)
}

// openLocked opens the repository under restic's lock (shared when
// readOnly, else exclusive), for commands that have their config and
// context already; the returned func releases the lock and closes the
// repository.
func openLocked(ctx context.Context, cfg *config.Config, readOnly bool, logf func(string, ...any)) (*repo.Repo, func(), context.Context, error) {
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return nil, nil, ctx, err
	}
	unlock, lctx, err := r.Lock(ctx, !readOnly, cfg.RepoLockWait(), logf)
	if err != nil {
		r.Close()
		return nil, nil, ctx, configFailure(err)
	}
	return r, func() { unlock(); r.Close() }, lctx, nil
}
