package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/pull"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/runlog"
	"github.com/urfave/cli/v2"
)

var cmdRestore = &cli.Command{
	Name:  "restore",
	Usage: "restore a snapshot onto a host's agent (swapped in safely), onto another host (--to), or into a local directory (--target)",
	Description: "Onto an agent: the snapshot is staged beside the live data, verified, and swapped in while the\n" +
		"services are quiesced; the previous data is kept as <path>.prev-<time>. The session uses the host's\n" +
		"restore_identity_file (or restore_command). A host that is already ready refuses unless its agent\n" +
		"config sets allow_inplace_restore; a host with data but no ready marker (a hand-built one) refuses unless\n" +
		"--replace-live-data is given (look first with --dry-run). The snapshot's data paths go onto the agent's:\n" +
		"the same paths stay, one path onto one other path is mapped automatically, else --map SRC=DST each.\n" +
		"Device nodes and setuid/setgid bits are restored only with --allow-special.\nWith --target DIR the snapshot is restored locally, as `restic restore` would;\n" +
		"--include/--exclude PATTERN then restore part of it, with restic's pattern rules (an agent always\n" +
		"receives whole data paths, so patterns are refused without --target).",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "host", Usage: "the snapshot's host `NAME`; also the host restored onto unless --to is given"},
		&cli.StringFlag{Name: "snapshot", Value: "latest", Usage: "snapshot `ID` (or a prefix) or latest"},
		&cli.StringFlag{Name: "to", Usage: "restore onto configured host `NAME` instead (a new VPS)"},
		&cli.BoolFlag{Name: "dry-run", Usage: "stage and verify on the agent, then remove the staging copy: nothing is swapped, no service is touched; shows the path mapping"},
		mapFlag,
		replaceLiveFlag,
		allowSpecialFlag,
		&cli.StringFlag{Name: "target", Usage: "restore into local directory `DIR`, the same tree `restic restore` gives"},
		patternFlag("include", "with --target: restore only what matches `PATTERN` (restic's --include; repeatable)"),
		patternFlag("exclude", "with --target: restore all but what matches `PATTERN` (restic's --exclude; repeatable)"),
		patternFlag("iinclude", "like --include `PATTERN` but ignores the case of file names"),
		patternFlag("iexclude", "like --exclude `PATTERN` but ignores the case of file names"),
		patternFlag("include-file", "read include patterns from `FILE`, one a line"),
		patternFlag("exclude-file", "read exclude patterns from `FILE`, one a line"),
		jsonFlag,
	},
	Action: runRestore,
}

func runRestore(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	if c.String("target") != "" {
		if c.String("to") != "" || c.Bool("dry-run") || c.IsSet("map") || c.Bool("replace-live-data") {
			return configFailure(fmt.Errorf("--target restores locally, the snapshot's paths below DIR; it cannot be combined with --to, --dry-run, --map or --replace-live-data"))
		}
		return restoreLocal(c, cfg)
	}
	if !patterns(c).Empty() {
		return configFailure(fmt.Errorf("--include/--exclude need --target DIR: an agent swaps in whole data paths, so a partial restore onto it would drop everything not selected. " +
			"Restore the files locally with --target DIR and copy them over, or restore the whole snapshot"))
	}
	onto := c.String("to")
	if onto == "" {
		onto = c.String("host")
	}
	if onto == "" {
		return configFailure(fmt.Errorf("restore needs --host NAME (the snapshot's host, restored onto itself), --to HOST to restore onto another host, or --target DIR"))
	}
	if c.String("host") == "" && (c.String("snapshot") == "" || c.String("snapshot") == "latest") {
		return configFailure(fmt.Errorf("say whose snapshot to restore onto %s: --host NAME, or --snapshot ID", onto))
	}
	target, err := cfg.Host(onto)
	if err != nil {
		return configFailure(err)
	}
	ctx, cancel := signalContext(c)
	defer cancel()
	jsonOut := c.Bool("json")
	log := newRunLog(c) // events, and a progress line on a terminal
	defer log.Close()

	r, err := openRepo(ctx, cfg)
	if err != nil {
		return err
	}
	sn, err := r.Find(ctx, c.String("host"), c.String("snapshot"))
	if err != nil {
		return configFailure(err)
	}
	opts, err := restoreFlags(c)
	if err != nil {
		return configFailure(err)
	}
	opts.DryRun, opts.Logf, opts.Progress = c.Bool("dry-run"), log.Logf, log.Host(target.Name)
	res, err := pull.RestoreOnto(ctx, cfg, r, sn, target, opts)
	log.Close() // the progress line is cleared before the result is printed
	if err != nil {
		return hostFailure(err)
	}
	for _, w := range res.Outcome.Warnings {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
	}
	if jsonOut {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printAgentRestore(c.App.Writer, res)
	return nil
}

func progress(c *cli.Context, quiet bool) func(string, ...any) {
	return func(format string, args ...any) {
		if !quiet {
			fmt.Fprintf(c.App.ErrWriter, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
		}
	}
}

var (
	mapFlag = &cli.GenericFlag{Name: "map", Value: &patternList{},
		Usage: "put snapshot path `SRC=DST`: SRC (a path of the snapshot) goes to DST (a data path of the target, or a directory below one); repeatable. " +
			"Not needed when both sides have the same paths, or one path each"}
	replaceLiveFlag = &cli.BoolFlag{Name: "replace-live-data",
		Usage: "restore onto a host that has data but no ready marker (a hand-built host): its data is replaced (kept as <path>.prev-<time>)"}
	allowSpecialFlag = &cli.BoolFlag{Name: "allow-special",
		Usage: "restore device nodes and setuid/setgid bits of files as the snapshot has them (default: device nodes skipped, the bits cleared, both listed)"}
)

// restoreFlags reads the flags restore and migrate share.
func restoreFlags(c *cli.Context) (restore.AgentOptions, error) {
	maps, err := restore.ParseMaps(patternValues(c, "map"))
	if err != nil {
		return restore.AgentOptions{}, err
	}
	return restore.AgentOptions{Maps: maps, ReplaceLiveData: c.Bool("replace-live-data"), AllowSpecial: c.Bool("allow-special")}, nil
}

// printMapping says where the snapshot's paths went, when they moved.
func printMapping(w io.Writer, m *restore.Mapping) {
	if m == nil || m.Identity() {
		return
	}
	how := "mapped"
	if m.Auto {
		how = "auto-mapped (" + m.Reason + ")"
	}
	fmt.Fprintf(w, "  paths %s: %s\n", how, m)
}

func printAgentRestore(w io.Writer, res *restore.AgentResult) {
	defer printMapping(w, res.Mapping)
	o := res.Outcome
	if o.DryRun {
		fmt.Fprintf(w, "dry run: snapshot %s of %s staged and verified on %s (%d files, %s; %d chunks, %s on the wire) in %.2fs; staging removed, nothing swapped\n",
			res.Snapshot[:8], res.SnapshotHost, res.Target, o.Files, units.Bytes(o.Bytes), res.ChunksSent,
			units.Bytes(res.Wire.BytesIn+res.Wire.BytesOut), res.DurationMS/1000)
		if o.ChangeCount > 0 {
			// The agent's words: quoted, so nothing in a path reaches the
			// terminal raw.
			fmt.Fprintf(w, "  the swap would change the live data in %d places (it is kept as <path>.prev-<time>):\n", o.ChangeCount)
			for _, c := range o.Changes {
				fmt.Fprintf(w, "    %s\n", strconv.Quote(c)[1:len(strconv.Quote(c))-1])
			}
			if n := o.ChangeCount - len(o.Changes); n > 0 {
				fmt.Fprintf(w, "    … and %d more\n", n)
			}
		}
		return
	}
	fmt.Fprintf(w, "restored snapshot %s of %s onto %s: %d files, %s (%d chunks, %s on the wire) in %.2fs\n",
		res.Snapshot[:8], res.SnapshotHost, res.Target, o.Files, units.Bytes(o.Bytes), res.ChunksSent,
		units.Bytes(res.Wire.BytesIn+res.Wire.BytesOut), res.DurationMS/1000)
	fmt.Fprintf(w, "  services quiesced %.1f ms, for the swap only\n", o.FreezeMS)
	if len(o.Kept) > 0 {
		fmt.Fprintf(w, "  previous data kept as %s\n", strings.Join(o.Kept, ", "))
	}
	if len(o.Pruned) > 0 {
		fmt.Fprintf(w, "  older copies removed: %s\n", strings.Join(o.Pruned, ", "))
	}
	if o.Marker != "" {
		fmt.Fprintf(w, "  ready marker written: %s\n", o.Marker)
	}
}

func restoreLocal(c *cli.Context, cfg *config.Config) error {
	ctx, cancel := signalContext(c)
	defer cancel()
	r, err := openRepo(ctx, cfg)
	if err != nil {
		return err
	}
	warn := func(msg string) { fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", msg) }
	sel, err := restore.Selector(patterns(c), warn)
	if err != nil {
		return configFailure(err)
	}
	sn, err := r.Find(ctx, c.String("host"), c.String("snapshot"))
	if err != nil {
		return configFailure(err)
	}
	stop := func() {}
	defer func() { stop() }()
	lo := restore.LocalOptions{Select: sel, AllowSpecial: c.Bool("allow-special"), Warn: warn}
	if !c.Bool("json") && runlog.IsTerminal(c.App.ErrWriter) {
		// A progress line on the terminal; warnings go between its
		// redraws.
		l := runlog.New(runlog.Options{Events: c.App.ErrWriter, Progress: c.App.ErrWriter})
		h := l.Host(sn.Hostname)
		lo.Progress, lo.Warn = h, func(msg string) { h.Logf("warning: %s", msg) }
		stop = func() { h.Done(); l.Close() }
	}
	res, err := restore.Local(ctx, r, sn, c.String("target"), lo)
	stop() // the progress line is cleared before the result is printed
	if err != nil {
		return hostFailure(err)
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	fmt.Fprintf(c.App.Writer, "restored snapshot %s to %s: %d files verified\n", sn.ID.Str(), res.Target, res.Files)
	return nil
}

// patternList collects a repeatable pattern flag. Unlike cli.StringSlice it
// does not split values at commas: a pattern may contain one.
type patternList []string

func (p *patternList) Set(v string) error { *p = append(*p, v); return nil }
func (p *patternList) String() string     { return strings.Join(*p, " ") }

func patternFlag(name, usage string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Usage: usage, Value: &patternList{}}
}

func patternValues(c *cli.Context, name string) []string {
	if p, ok := c.Generic(name).(*patternList); ok {
		return *p
	}
	return nil
}

func patterns(c *cli.Context) restore.Patterns {
	return restore.Patterns{
		Include: patternValues(c, "include"), IInclude: patternValues(c, "iinclude"), IncludeFile: patternValues(c, "include-file"),
		Exclude: patternValues(c, "exclude"), IExclude: patternValues(c, "iexclude"), ExcludeFile: patternValues(c, "exclude-file"),
	}
}
