package main

import (
	"fmt"
	"runtime"

	"github.com/haulproject/haul/internal/version"
	"github.com/haulproject/haul/proto"
	"github.com/urfave/cli/v2"
)

var cmdVersion = &cli.Command{
	Name:  "version",
	Usage: "print version information",
	Action: func(c *cli.Context) error {
		fmt.Fprintf(c.App.Writer, "haul %s protocol %d-%d restic-format v2 (restic v0.19.1 packages) %s %s/%s\n",
			version.Version, proto.MinVersion, proto.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	},
}
