package main

import (
	"fmt"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/hostkey"
	"github.com/urfave/cli/v2"
)

var hostFlag = &cli.StringFlag{Name: "host", Required: true, Usage: "the host `NAME` in the config"}

var cmdHostKey = &cli.Command{
	Name:  "hostkey",
	Usage: "keep a VPS's SSH host key on this machine, export it for a rebuild, pin it in known_hosts",
	Description: "A rebuild installs the kept key on the new machine (tofu/'s extra-files script runs\n" +
		"`haul hostkey export`), so the pin in known_hosts stays valid and haul connects to the new\n" +
		"VPS without trusting a new key. Keys live under host_keys_dir/<host>/ (0700, the key 0600).",
	Subcommands: []*cli.Command{
		{
			Name:   "generate",
			Usage:  "make a new ed25519 host key for a host (once, before its first install)",
			Flags:  []cli.Flag{hostFlag, &cli.BoolFlag{Name: "force", Usage: "replace a kept key (every pin of it stops matching)"}, jsonFlag},
			Action: func(c *cli.Context) error { return runHostKeyGenerate(c, hostKeyFlags(c)) },
		},
		{
			Name:   "import",
			Usage:  "keep the host key a VPS already has (its /etc/ssh/ssh_host_ed25519_key)",
			Flags:  []cli.Flag{hostFlag, &cli.StringFlag{Name: "from", Required: true, Usage: "private key `FILE`, unencrypted"}, &cli.BoolFlag{Name: "force", Usage: "replace a kept key"}, jsonFlag},
			Action: func(c *cli.Context) error { return runHostKeyImport(c, hostKeyFlags(c)) },
		},
		{
			Name:  "export",
			Usage: "write the kept key below DIR as etc/ssh/ssh_host_<type>_key (+ .pub): nixos-anywhere's extra-files layout",
			Flags: []cli.Flag{hostFlag,
				&cli.StringFlag{Name: "out", Value: ".", Usage: "root `DIR` of the extra files (the extra-files script's working directory)"}, jsonFlag},
			Action: func(c *cli.Context) error { return runHostKeyExport(c, hostKeyFlags(c)) },
		},
		{
			Name:  "pin",
			Usage: "pin the kept key's public half for the host's address in its known_hosts (replaces an older pin; idempotent)",
			Flags: []cli.Flag{hostFlag,
				&cli.StringFlag{Name: "address", Usage: "pin for `HOST:PORT` instead of the host's address"}, jsonFlag},
			Action: func(c *cli.Context) error { return runHostKeyPin(c, hostKeyFlags(c)) },
		},
	},
}

// hostKeyOptions are the hostkey subcommands' flags; each reads its own.
type hostKeyOptions struct {
	Host  string
	Force bool   // generate, import
	From  string // import
	Out   string // export
	// Address is pin's HOST:PORT; empty: the host's address.
	Address string
	JSON    bool
}

func hostKeyFlags(c *cli.Context) hostKeyOptions {
	return hostKeyOptions{Host: c.String("host"), Force: c.Bool("force"), From: c.String("from"),
		Out: c.String("out"), Address: c.String("address"), JSON: c.Bool("json")}
}

func hostKeyHost(c *cli.Context, name string) (*config.Config, *config.Host, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, nil, err
	}
	h, err := cfg.Host(name)
	if err != nil {
		return nil, nil, configFailure(err)
	}
	return cfg, h, nil
}

func printKey(c *cli.Context, jsonOut bool, verb string, k *hostkey.Key) error {
	if jsonOut {
		return printJSON(c.App.Writer, k)
	}
	fmt.Fprintf(c.App.Writer, "%s host key of %s: %s\n  %s\n  %s\n", verb, k.Host, k.Fingerprint, k.PrivatePath, k.Authorized)
	fmt.Fprintf(c.App.ErrWriter, "next: `haul hostkey pin --host %s` pins it; the VPS gets it from tofu's extra-files script (`haul hostkey export`)\n", k.Host)
	return nil
}

func runHostKeyGenerate(c *cli.Context, opts hostKeyOptions) error {
	cfg, h, err := hostKeyHost(c, opts.Host)
	if err != nil {
		return err
	}
	k, err := hostkey.Generate(cfg.HostKeysDir, h.Name, opts.Force)
	if err != nil {
		return configFailure(err)
	}
	return printKey(c, opts.JSON, "generated", k)
}

func runHostKeyImport(c *cli.Context, opts hostKeyOptions) error {
	cfg, h, err := hostKeyHost(c, opts.Host)
	if err != nil {
		return err
	}
	k, err := hostkey.Import(cfg.HostKeysDir, h.Name, opts.From, opts.Force)
	if err != nil {
		return configFailure(err)
	}
	return printKey(c, opts.JSON, "imported", k)
}

func runHostKeyExport(c *cli.Context, opts hostKeyOptions) error {
	cfg, h, err := hostKeyHost(c, opts.Host)
	if err != nil {
		return err
	}
	k, err := hostkey.Load(cfg.HostKeysDir, h.Name)
	if err != nil {
		return configFailure(err)
	}
	files, err := hostkey.Export(k, opts.Out)
	if err != nil {
		return hostFailure(err)
	}
	if opts.JSON {
		return printJSON(c.App.Writer, map[string]any{"host": h.Name, "fingerprint": k.Fingerprint, "files": files})
	}
	// stdout may be tofu's log: the paths and fingerprint, never the key.
	for _, f := range files {
		fmt.Fprintf(c.App.Writer, "wrote %s\n", f)
	}
	fmt.Fprintf(c.App.Writer, "host key of %s: %s\n", h.Name, k.Fingerprint)
	return nil
}

func runHostKeyPin(c *cli.Context, opts hostKeyOptions) error {
	cfg, h, err := hostKeyHost(c, opts.Host)
	if err != nil {
		return err
	}
	addr := opts.Address
	if addr == "" {
		addr = h.Address
	}
	if addr == "" || h.KnownHosts == "" {
		return configFailure(fmt.Errorf("host %s has no address and known_hosts to pin for (it runs through command); give --address and set known_hosts", h.Name))
	}
	k, err := hostkey.Load(cfg.HostKeysDir, h.Name)
	if err != nil {
		return configFailure(err)
	}
	res, err := hostkey.Pin(h.KnownHosts, addr, k.Public)
	if err != nil {
		return hostFailure(err)
	}
	if opts.JSON {
		return printJSON(c.App.Writer, res)
	}
	switch {
	case !res.Changed:
		fmt.Fprintf(c.App.Writer, "%s already pins %s for %s: unchanged\n", res.KnownHosts, k.Fingerprint, res.Pattern)
	case res.Replaced > 0:
		fmt.Fprintf(c.App.Writer, "pinned %s for %s in %s, replacing %d older line(s)\n", k.Fingerprint, res.Pattern, res.KnownHosts, res.Replaced)
	default:
		fmt.Fprintf(c.App.Writer, "pinned %s for %s in %s\n", k.Fingerprint, res.Pattern, res.KnownHosts)
	}
	return nil
}
