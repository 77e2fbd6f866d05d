package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/setup"
	"github.com/urfave/cli/v2"
)

var cmdKey = &cli.Command{
	Name:  "key",
	Usage: "manage the repository's key",
	Subcommands: []*cli.Command{{
		Name: "machine",
		Usage: "replace the key the password file opens by one with a low scrypt cost, for a password haul generated " +
			"(as `haul init --create-password` now does: the ~0.5 s restic's cost takes is most of a no-change backup)",
		Flags:  []cli.Flag{jsonFlag},
		Action: runKeyMachine,
	}},
}

type keyMachineResult struct {
	Repository string `json:"repository"`
	Key        string `json:"key"`
	Replaced   string `json:"replaced,omitempty"`
	Already    bool   `json:"already,omitempty"`
	N          int    `json:"N"`
	R          int    `json:"r"`
	P          int    `json:"p"`
}

func runKeyMachine(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	pw, err := cfg.Password()
	if err != nil {
		return configFailure(err)
	}
	// A passphrase a human chose needs restic's scrypt cost.
	if !setup.IsGeneratedPassword(pw) {
		return configFailure(fmt.Errorf("the password in %s is not one haul generated (43 base64url characters, 256 random bits): "+
			"a passphrase needs restic's scrypt cost, so its key stays as it is. To switch, write a random password "+
			"(e.g. `haul init --create-password` into a new config) and make it the key's with `restic key passwd`, then run this again", cfg.PasswordFile))
	}
	// Exclusive: no backup of this process's kind opens the key while it
	// is replaced.
	return withConfigLockedRepo(c, cfg, false, nil, func(ctx context.Context, cfg *config.Config, r *repo.Repo) error {
		res := keyMachineResult{Repository: cfg.Repository, N: repo.MachineKeyKDF.N, R: repo.MachineKeyKDF.R, P: repo.MachineKeyKDF.P}
		old := r.KeyID().String()
		already, err := r.HasMachineKey(ctx)
		if err != nil {
			return configFailure(fmt.Errorf("repository %s: %w", cfg.Repository, err))
		}
		if already {
			res.Key, res.Already = old, true
		} else {
			id, err := r.UseMachineKey(ctx, pw)
			if err != nil {
				return configFailure(fmt.Errorf("repository %s: %w", cfg.Repository, err))
			}
			res.Key, res.Replaced = id.String(), old
		}
		if c.Bool("json") {
			return json.NewEncoder(c.App.Writer).Encode(res)
		}
		if res.Already {
			fmt.Fprintf(c.App.Writer, "key %s already has the low scrypt cost (N=%d, r=%d, p=%d)\n", res.Key[:8], res.N, res.R, res.P)
			return nil
		}
		fmt.Fprintf(c.App.Writer, "replaced key %s by %s (scrypt N=%d, r=%d, p=%d; the same password and master key)\n", res.Replaced[:8], res.Key[:8], res.N, res.R, res.P)
		return nil
	})
}
