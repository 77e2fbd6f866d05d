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

// withHosts loads the config and selects the hosts named (every host when
// names is empty): how the commands that work per host start. An unknown
// name is a config failure.
func withHosts(c *cli.Context, names []string, fn func(cfg *config.Config, hosts []*config.Host) error) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	hosts, err := selectHosts(cfg, names)
	if err != nil {
		return err
	}
	return fn(cfg, hosts)
}

// withLockedRepo is withRepo for a maintenance command, under restic's
// lock: exclusive to change the repository, shared for a dry run, which
// only reads. fn runs in the lock's context.
func withLockedRepo(c *cli.Context, dryRun bool, logf func(string, ...any), fn func(ctx context.Context, cfg *config.Config, r *repo.Repo) error) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	return withConfigLockedRepo(c, cfg, dryRun, logf, fn)
}

// withConfigLockedRepo is withLockedRepo with the config already loaded:
// the repository is opened under restic's lock (shared when readOnly, else
// exclusive), and fn runs in the lock's context; the lock is released and
// the repository closed after.
func withConfigLockedRepo(c *cli.Context, cfg *config.Config, readOnly bool, logf func(string, ...any), fn func(ctx context.Context, cfg *config.Config, r *repo.Repo) error) error {
	return withConfigRepo(c, cfg, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
		unlock, lctx, err := r.Lock(ctx, !readOnly, cfg.RepoLockWait(), logf)
		if err != nil {
			return configFailure(err)
		}
		defer unlock()
		return fn(lctx, cfg, r)
	})
}
