package main

import (
	"fmt"

	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdInit = &cli.Command{
	Name:  "init",
	Usage: "create the repository named in the config (restic format v2)",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		pw, err := cfg.Password()
		if err != nil {
			return configFailure(err)
		}
		r, err := repo.Init(c.Context, cfg.Repository, pw, nil)
		if err != nil {
			return configFailure(err)
		}
		fmt.Fprintf(c.App.Writer, "created repository %s at %s\n", r.Config().ID[:8], cfg.Repository)
		fmt.Fprintf(c.App.Writer, "keep %s safe: without it the repository cannot be read\n", cfg.PasswordFile)
		return nil
	},
}
