package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/offsite"
	"github.com/haulproject/haul/puller/repo"
	"github.com/urfave/cli/v2"
)

var cmdCopy = &cli.Command{
	Name:      "copy",
	Usage:     "copy snapshots to a second restic repository (off-site), sending only the blobs it lacks",
	ArgsUsage: " ",
	Description: `Like "restic copy": each blob the target lacks is read from this repository,
encrypted with the target's key and stored; snapshots already copied are
skipped, so running it again sends only what is new. The target is any restic
backend URL: a local path, local:PATH, rest:https://user:pass@host/repo,
s3:host/bucket/path (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY),
sftp:user@host:/path. The stock restic CLI reads the copy.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "to", Required: true, EnvVars: []string{"HAUL_COPY_TO"}, Usage: "target restic repository `URL`"},
		&cli.StringFlag{Name: "to-password-file", Usage: "`FILE` with the target's password (default: the config's password_file)"},
		&cli.BoolFlag{Name: "init", Usage: "create the target first, with this repository's chunker parameters"},
		&cli.StringSliceFlag{Name: "host", Usage: "copy only host `NAME`'s snapshots (repeatable)"},
		&cli.StringSliceFlag{Name: "ca-file", Usage: "PEM `FILE` to trust for a TLS target (repeatable)"},
		jsonFlag, cronQuietFlag,
	},
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		pwFile := c.String("to-password-file")
		if pwFile == "" {
			pwFile = cfg.PasswordFile
		}
		pw, err := os.ReadFile(pwFile)
		if err != nil {
			return configFailure(fmt.Errorf("read the target's password: %w", err))
		}
		log := newRunLog(c)
		defer log.Close()
		return withConfigLockedRepo(c, cfg, true, log.Logf, func(lctx context.Context, cfg *config.Config, src *repo.Repo) error {
			res, err := offsite.Copy(lctx, src, offsite.Options{
				To: c.String("to"), Password: strings.TrimSpace(string(pw)), Init: c.Bool("init"),
				Hosts: c.StringSlice("host"), CAFiles: c.StringSlice("ca-file"), LockWait: cfg.RepoLockWait(), Logf: log.Logf,
			})
			if err != nil {
				return configFailure(err)
			}
			switch {
			case c.Bool("json"):
				return printJSON(c.App.Writer, res)
			case c.Bool("quiet"):
			default:
				for _, cp := range res.Copied {
					fmt.Fprintf(c.App.Writer, "%-12s snapshot %s (%s) copied as %s\n", cp.Host, cp.Source, cp.Time.Local().Format("2006-01-02 15:04"), cp.Target)
				}
				fmt.Fprintf(c.App.Writer, "%d snapshots copied to %s (%d already there), %d blobs from %d packs\n",
					len(res.Copied), res.Target, res.AlreadyThere, res.Blobs, res.Packs)
			}
			return nil
		})
	},
}
