package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdSnapshots = &cli.Command{
	Name:  "snapshots",
	Usage: "list snapshots, with haul's freeze window and bytes moved",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "host", Usage: "only snapshots of host `NAME`"},
		jsonFlag,
	},
	Action: func(c *cli.Context) error {
		return withRepo(c, func(ctx context.Context, _ *config.Config, r *repo.Repo) error {
			sns, err := r.Snapshots(ctx, c.String("host"))
			if err != nil {
				return configFailure(err)
			}
			if c.Bool("json") {
				return printSnapshotsJSON(c, sns)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTime\tHost\tPaths\tFiles\tSize\tFreeze\tMoved")
			for _, sn := range sns {
				files, size, freeze, moved := "-", "-", "-", "-"
				if sn.Summary != nil {
					files = fmt.Sprint(sn.Summary.TotalFilesProcessed)
					size = units.Bytes(int64(sn.Summary.TotalBytesProcessed))
				}
				if sn.Haul != nil {
					freeze = fmt.Sprintf("%.1f ms", sn.Haul.FreezeMS)
					moved = units.Bytes(sn.Haul.WireBytesIn + sn.Haul.WireBytesOut)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sn.ID.Str(), sn.Time.Format("2006-01-02 15:04:05"),
					escape.String(sn.Hostname), escape.String(strings.Join(sn.Paths, ",")), files, size, freeze, moved)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%d snapshots\n", len(sns))
			return nil
		})
	},
}

func printSnapshotsJSON(c *cli.Context, sns []repo.Snapshot) error {
	out := make([]map[string]any, 0, len(sns))
	for _, sn := range sns {
		b, err := json.Marshal(sn.Snapshot)
		if err != nil {
			return err
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		m["id"] = sn.ID.String()
		m["short_id"] = sn.ID.Str()
		if sn.Haul != nil {
			m["haul"] = sn.Haul
		}
		out = append(out, m)
	}
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
