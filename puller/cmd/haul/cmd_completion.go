package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/haulproject/haul/puller/clidoc"
	"github.com/urfave/cli/v2"
)

var cmdCompletion = &cli.Command{
	Name:      "completion",
	Usage:     "print a shell completion script (" + strings.Join(clidoc.Shells, ", ") + ")",
	ArgsUsage: "SHELL",
	Description: `bash: haul completion bash > /etc/bash_completion.d/haul
zsh:  haul completion zsh > "${fpath[1]}/_haul"
fish: haul completion fish > ~/.config/fish/completions/haul.fish`,
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return configFailure(fmt.Errorf("name one shell: %s", strings.Join(clidoc.Shells, ", ")))
		}
		s, err := clidoc.Completion(c.App, c.Args().First())
		if err != nil {
			return configFailure(err)
		}
		_, err = io.WriteString(c.App.Writer, s)
		return err
	},
}

var cmdMan = &cli.Command{
	Name:  "man",
	Usage: "print haul's man page (roff): haul man > /usr/local/share/man/man1/haul.1",
	Action: func(c *cli.Context) error {
		s, err := clidoc.Man(c.App)
		if err != nil {
			return err
		}
		_, err = io.WriteString(c.App.Writer, s)
		return err
	},
}
