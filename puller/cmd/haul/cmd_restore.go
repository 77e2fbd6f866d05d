package main

import (
	"encoding/json"
	"fmt"

	"github.com/haulproject/haul/puller/restore"
	"github.com/urfave/cli/v2"
)

var cmdRestore = &cli.Command{
	Name:  "restore",
	Usage: "restore a snapshot into a local directory (--target)",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "host", Usage: "the snapshot's host `NAME`"},
		&cli.StringFlag{Name: "snapshot", Value: "latest", Usage: "snapshot `ID` (or a prefix) or latest"},
		&cli.StringFlag{Name: "target", Usage: "restore into local directory `DIR`, the same tree `restic restore` gives"},
		jsonFlag,
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		if c.String("target") == "" {
			return configFailure(fmt.Errorf("restore needs --target DIR"))
		}
		ctx, cancel := signalContext(c)
		defer cancel()
		r, err := openRepo(ctx, cfg)
		if err != nil {
			return err
		}
		sn, err := r.Find(ctx, c.String("host"), c.String("snapshot"))
		if err != nil {
			return configFailure(err)
		}
		res, err := restore.Local(ctx, r, sn, c.String("target"), nil, func(msg string) {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", msg)
		})
		if err != nil {
			return hostFailure(err)
		}
		if c.Bool("json") {
			return json.NewEncoder(c.App.Writer).Encode(res)
		}
		fmt.Fprintf(c.App.Writer, "restored snapshot %s to %s: %d files verified\n", sn.ID.Str(), res.Target, res.Files)
		return nil
	},
}
