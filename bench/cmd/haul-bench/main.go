// Command haul-bench measures haul against the tools its users would pick
// instead (rsync with --link-dest, rsync -z, restic over sftp, borg over SSH)
// on the same generated data through the same loopback sshd, and writes the
// numbers into docs/BENCHMARKS.md and a PNG chart.
//
//	go run ./bench/cmd/haul-bench                       # peers, 50 MiB
//	go run ./bench/cmd/haul-bench -size 1G              # peers, 1 GiB
//	go run ./bench/cmd/haul-bench -suite trunk -size 1G # issue 2: haul vs restic
//
// Run it from the module root after `go generate ./...`. It needs root (sshd),
// rsync, borg, ssh and the restic CLI (bin/restic: `make restic`).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haulproject/haul/bench"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "haul-bench: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) (err error) {
	fs := flag.NewFlagSet("haul-bench", flag.ContinueOnError)
	suite := fs.String("suite", "peers", "peers (haul, rsync, rsync -z, restic, borg; scenarios a-d) or trunk (issue 2: haul vs restic, full and no-change)")
	sizeFlag := fs.String("size", "", "tree size: 50M, 1G, … (default 50M for peers, 1G for trunk)")
	seed := fs.Int64("seed", 1, "workload seed")
	tools := fs.String("tools", "", "comma-separated tools (default all of the suite's)")
	steps := fs.String("steps", "", "peers: comma-separated scenarios of a,b,c,d (default all; the full backup always runs)")
	reps := fs.Int("reps", 3, "trunk: no-change backups per tool (the median is reported)")
	out := fs.String("out", "docs", "directory holding BENCHMARKS.md and the chart; empty writes nothing")
	jsonOut := fs.String("json", "", "also write the raw report as JSON to this file")
	work := fs.String("work", "", "working directory (default a new one under $TMPDIR, removed afterwards)")
	waitLoad := fs.Float64("wait-load", 1.0, "wait until the 1-minute load average is below this before measuring (0: don't wait)")
	hold := fs.Bool("hold", false, "after the run, keep sshd and the forwarder up and print how to run each tool by hand, until interrupted")
	linkFlag := fs.String("link", "lo", "the path between NAS and VPS: lo, or RATE-RTT, e.g. 20M-40ms (Mbit/s each way, round trip; a network namespace with veth + tbf, latency added by the forwarder; needs root)")
	waitMax := fs.Duration("wait-max", 10*time.Minute, "give up waiting for the load after this long and run anyway")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *suite != "peers" && *suite != "trunk" {
		return fmt.Errorf("-suite %q: want peers or trunk", *suite)
	}
	if *sizeFlag == "" {
		*sizeFlag = map[string]string{"peers": "50M", "trunk": "1G"}[*suite]
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return err
	}
	link, err := bench.ParseLink(*linkFlag)
	if err != nil {
		return err
	}
	opts := bench.Options{
		Size: size, Seed: *seed, NoChangeReps: *reps,
		Tools: splitList(*tools), Steps: splitList(*steps),
		Logf: func(format string, a ...any) {
			fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		},
	}
	command := strings.TrimSpace("go run ./bench/cmd/haul-bench " + strings.Join(args, " "))
	if d := os.Getenv("HAUL_BIN_DIR"); d != "" {
		command = "HAUL_BIN_DIR=" + d + " " + command
	}

	root := *work
	if root == "" {
		if root, err = os.MkdirTemp("", "haul-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(root)
	} else if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	t := bench.NewTB(root)
	defer t.Close()
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(bench.Fatal)
			if !ok {
				panic(p)
			}
			err = f
		}
	}()

	e := bench.NewEnvLink(t, link)
	if *waitLoad > 0 {
		waitForLoad(ctx, *waitLoad, *waitMax, opts.Logf)
	}
	meta := bench.Meta{Command: command, Machine: bench.ReadMachine(), Versions: e.Versions()}
	opts.Logf("machine: %d CPUs, load %.2f; work dir %s", meta.Machine.NProc, meta.Machine.Load[0], root)
	if !link.Loopback() {
		opts.Logf("link %s: measured round trip %v, %.1f Mbit/s up, %.1f Mbit/s down", link, e.LinkCheck.RTT.Round(100*time.Microsecond), e.LinkCheck.UpMbit, e.LinkCheck.DownMbit)
	}

	var rep *bench.Report
	if *suite == "peers" {
		rep, err = bench.Peers(ctx, e, opts)
	} else {
		rep, err = bench.Trunk(ctx, e, opts)
	}
	if err != nil {
		return err
	}
	meta.LoadEnd = bench.LoadAvg()
	if *hold {
		fmt.Fprintf(os.Stderr, "holding; the environment:\n%s\ninterrupt to stop\n", e.Describe())
		<-ctx.Done()
		return nil
	}

	if *jsonOut != "" {
		b, err := json.MarshalIndent(map[string]any{"report": rep, "meta": meta}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if *out == "" {
		return nil
	}
	section := *suite
	if def := map[string]int64{"peers": 50 << 20, "trunk": 1 << 30}[*suite]; size != def {
		section += "-" + bench.SizeName(size)
	}
	if !link.Loopback() {
		section += "-" + link.Name()
	}
	var md string
	if *suite == "peers" {
		chart := "bench-" + section + ".png"
		f, err := os.Create(filepath.Join(*out, chart))
		if err != nil {
			return err
		}
		if err := bench.WriteChart(f, rep); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		meta.ChartFile = chart
		md = bench.PeersMarkdown(rep, meta)
	} else {
		md = bench.TrunkMarkdown(rep, meta)
	}
	doc := filepath.Join(*out, "BENCHMARKS.md")
	if err := bench.UpdateSection(doc, section, md); err != nil {
		return err
	}
	opts.Logf("wrote section %q of %s", section, doc)
	return nil
}

func waitForLoad(ctx context.Context, below float64, maxWait time.Duration, logf func(string, ...any)) {
	deadline := time.Now().Add(maxWait)
	for {
		l := bench.LoadAvg()
		if l[0] < below {
			return
		}
		if time.Now().After(deadline) {
			logf("load %.2f still ≥ %.2f after %v; measuring anyway (the doc records the load)", l[0], below, maxWait)
			return
		}
		logf("waiting for the 1-minute load (%.2f) to drop below %.2f", l[0], below)
		select {
		case <-ctx.Done():
			return
		case <-time.After(15 * time.Second):
		}
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseInt(strings.TrimRight(s, "KMG"), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("-size %q: want a positive number with K, M or G", s)
	}
	return n * mult, nil
}
