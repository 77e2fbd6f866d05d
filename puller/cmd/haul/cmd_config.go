package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/haulproject/haul/puller/config"
	"github.com/urfave/cli/v2"
)

var cmdConfig = &cli.Command{
	Name:  "config",
	Usage: "config file helpers",
	Subcommands: []*cli.Command{{
		Name:  "example",
		Usage: "print an annotated example config (haul check-config accepts it)",
		Action: func(c *cli.Context) error {
			_, err := io.WriteString(c.App.Writer, config.Example)
			return err
		},
	}},
}

// checkConfigResult is `haul check-config --json`.
type checkConfigResult struct {
	OK         bool     `json:"ok"`
	Config     string   `json:"config"`
	Error      string   `json:"error,omitempty"`
	Repository string   `json:"repository,omitempty"`
	Hosts      []string `json:"hosts"`
	Warnings   []string `json:"warnings"`
}

var cmdCheckConfig = &cli.Command{
	Name:  "check-config",
	Usage: "check the config file: exit 0 if haul accepts it (missing files are warnings), 2 if not",
	Flags: []cli.Flag{jsonFlag, cronQuietFlag},
	Action: func(c *cli.Context) error {
		res := checkConfigResult{Config: globalString(c, "config"), Hosts: []string{}, Warnings: []string{}}
		cfg, err := loadConfig(c)
		if err == nil {
			res.OK, res.Repository = true, cfg.Repository
			for _, h := range cfg.Hosts {
				res.Hosts = append(res.Hosts, h.Name)
			}
			res.Warnings = append(res.Warnings, cfg.Check()...)
		} else {
			res.Error = err.Error()
		}
		if c.Bool("json") {
			enc := json.NewEncoder(c.App.Writer)
			enc.SetIndent("", "  ")
			if e := enc.Encode(res); e != nil {
				return e
			}
			if err != nil {
				return &exitError{code: exitConfig, err: fmt.Errorf("config not accepted")}
			}
			return nil
		}
		if err != nil {
			return err
		}
		for _, w := range res.Warnings {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
		}
		if !c.Bool("quiet") {
			fmt.Fprintf(c.App.Writer, "config %s is valid: repository %s, %d host(s) %v\n", res.Config, res.Repository, len(res.Hosts), res.Hosts)
		}
		return nil
	},
}
