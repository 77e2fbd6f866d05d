package main

import (
	"fmt"
	"os"

	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/setup"
	"github.com/urfave/cli/v2"
)

var cmdInit = &cli.Command{
	Name:  "init",
	Usage: "create the repository named in the config (restic format v2), and optionally its password file and the NAS's SSH key",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "create-password", Usage: "first write a random password to the config's password_file (0600; refuses to overwrite)"},
		&cli.StringFlag{Name: "create-key", Usage: "also create the NAS's ed25519 key pair at `FILE` (0600) and FILE.pub, and print the VPS's authorized_keys line"},
	},
	Action: runInit,
}

func runInit(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if c.Bool("create-password") {
		if err := setup.CreatePasswordFile(cfg.PasswordFile); err != nil {
			return configFailure(fmt.Errorf("--create-password: %w", err))
		}
		fmt.Fprintf(w, "wrote a random password to %s (0600)\n", cfg.PasswordFile)
	}
	if f := c.String("create-key"); f != "" {
		name, _ := os.Hostname()
		kp, err := setup.CreateKeyPair(f, "haul-backup@"+name)
		if err != nil {
			return configFailure(fmt.Errorf("--create-key: %w", err))
		}
		fmt.Fprintf(w, "wrote the NAS's key pair %s (0600) and %s\n", kp.PrivatePath, kp.PublicPath)
		fmt.Fprintf(w, "add this line to the VPS's /root/.ssh/authorized_keys (NixOS: the haul-agent module's authorizedKeys):\n%s\n", kp.Entry)
	}
	pw, err := cfg.Password()
	if err != nil {
		return configFailure(fmt.Errorf("%w (haul init --create-password writes a random one)", err))
	}
	r, err := repo.Init(c.Context, cfg.Repository, pw, nil)
	if err != nil {
		return configFailure(err)
	}
	fmt.Fprintf(w, "created repository %s at %s\n", r.Config().ID[:8], cfg.Repository)
	if c.Bool("create-password") {
		// haul made the password: 256 random bits need no slow scrypt
		// (repo.MachineKeyKDF), and every backup derives the key anew.
		if _, err := r.UseMachineKey(c.Context, pw); err != nil {
			return fmt.Errorf("repository %s: %w", cfg.Repository, err)
		}
		fmt.Fprintf(w, "its key has a low scrypt cost: the password is 256 random bits (docs/cli.md, \"init\")\n")
	}
	fmt.Fprintf(w, "keep %s safe: without it the repository cannot be read\n", cfg.PasswordFile)
	return nil
}
