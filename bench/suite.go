package bench

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/haulproject/haul/internal/workload"
)

// Step is one backup in a suite: the change applied to the tree before it.
type Step struct {
	Name  string // "full", "a", "b", "c", "d"
	Label string // for tables and the chart
	// Change alters the tree; nil for the initial full backup.
	Change func(dir string, seed int64) (string, error) `json:"-"`
}

// Steps are the peers suite's backups, in order: the initial full backup,
// then the scenarios (a)–(d), each after the previous one.
var Steps = []Step{
	{Name: "full", Label: "full"},
	{Name: "a", Label: "(a) nothing", Change: func(dir string, _ int64) (string, error) { return workload.ChangeNothing(dir) }},
	{Name: "b", Label: "(b) 500 rows + logs", Change: func(dir string, seed int64) (string, error) { return workload.ChangeRows(dir, 500, seed) }},
	{Name: "c", Label: "(c) ACME renewal", Change: workload.RenewACME},
	// (d) corrupts the database: it stays last.
	{Name: "d", Label: "(d) 10% pages", Change: func(dir string, seed int64) (string, error) {
		return workload.RewriteFraction(dir, 0.10, seed)
	}},
}

// Result is one tool's backup at one step.
type Result struct {
	Tool     string        `json:"tool"`
	Step     string        `json:"step"`
	Wall     time.Duration `json:"wall_ns"`
	WireUp   int64         `json:"wire_up"`
	WireDown int64         `json:"wire_down"`
	VPSCPU   time.Duration `json:"vps_cpu_ns"`
	NASCPU   time.Duration `json:"nas_cpu_ns"`
	VPSRSS   int64         `json:"vps_rss"`
	NASRSS   int64         `json:"nas_rss"`
	Haul     *HaulResult   `json:"haul,omitempty"`
}

// Wire is the bytes on the connection, both directions.
func (r Result) Wire() int64 { return r.WireUp + r.WireDown }

// StepInfo is what a step did to the tree.
type StepInfo struct {
	Step
	Desc string // the scenario's own description
}

// Options configures a suite.
type Options struct {
	Size  int64
	Seed  int64
	Tools []string // default AllTools (peers) or haul+restic (trunk)
	Steps []string // peers: subset of a, b, c, d (full always runs first)
	// NoChangeReps is how many no-change backups per tool the trunk suite
	// takes (the median is reported).
	NoChangeReps int
	Logf         func(format string, args ...any) `json:"-"`
}

// Report is a suite's outcome.
type Report struct {
	Suite    string
	Options  Options
	Tree     workload.Stats
	Steps    []StepInfo
	Tools    []Tool
	Results  []Result
	Link     Link      `json:"link"`
	LinkSeen LinkCheck `json:"link_measured"`
	Started  time.Time
	Duration time.Duration
}

// Get returns tool's result at step (the first, for repeated steps).
func (r *Report) Get(tool, step string) (Result, bool) {
	for _, x := range r.Results {
		if x.Tool == tool && x.Step == step {
			return x, true
		}
	}
	return Result{}, false
}

// All returns every result of tool at step.
func (r *Report) All(tool, step string) []Result {
	var out []Result
	for _, x := range r.Results {
		if x.Tool == tool && x.Step == step {
			out = append(out, x)
		}
	}
	return out
}

func (o *Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// prepare generates the tree and initialises every tool's repository.
func prepare(ctx context.Context, e *Env, opts Options, names []string) (*Report, error) {
	rep := &Report{Options: opts, Started: time.Now(), Link: e.Link, LinkSeen: e.LinkCheck}
	for _, n := range names {
		tool, err := LookupTool(n)
		if err != nil {
			return nil, err
		}
		rep.Tools = append(rep.Tools, tool)
	}
	opts.logf("generating a %s Pangolin-like tree (seed %d)", FormatBytes(opts.Size), opts.Seed)
	st, err := workload.Generate(e.Data, workload.Options{TargetSize: opts.Size, Seed: opts.Seed})
	if err != nil {
		return nil, err
	}
	rep.Tree = st
	for _, tool := range rep.Tools {
		if err := tool.init(ctx, e); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// backup runs tool's backup for step and records it.
func backup(ctx context.Context, e *Env, rep *Report, tool Tool, step, prev string) (Result, error) {
	cmd := tool.backup(e, step, prev)
	r, err := e.measure(ctx, tool.Side, cmd)
	if err != nil {
		return Result{}, err
	}
	res := Result{Tool: tool.Name, Step: step, Wall: r.Client.Wall, WireUp: r.WireUp, WireDown: r.WireDown}
	res.VPSCPU, res.VPSRSS = r.Side("vps")
	res.NASCPU, res.NASRSS = r.Side("nas")
	if tool.Name == ToolHaul {
		if res.Haul, err = parseHaul(r.Stdout); err != nil {
			return Result{}, err
		}
	}
	rep.Options.logf("  %-9s %-5s wire %9s  wall %7.2fs  cpu vps %6.2fs nas %6.2fs  rss vps %7s nas %7s",
		tool.Name, step, FormatBytes(res.Wire()), res.Wall.Seconds(), res.VPSCPU.Seconds(), res.NASCPU.Seconds(),
		FormatBytes(res.VPSRSS), FormatBytes(res.NASRSS))
	if h := res.Haul; h != nil {
		rep.Options.logf("            haul: %d chunks wanted (%s), freeze %.1f ms, phases %v", h.ChunksWanted, FormatBytes(h.ChunkBytes), h.FreezeMS, h.Phases)
	}
	rep.Results = append(rep.Results, res)
	return res, nil
}

// Peers runs the initial full backup and the scenarios with every tool, on
// the same data, each tool after each change.
func Peers(ctx context.Context, e *Env, opts Options) (*Report, error) {
	if len(opts.Tools) == 0 {
		opts.Tools = AllTools
	}
	steps := []Step{Steps[0]}
	for _, s := range Steps[1:] {
		if len(opts.Steps) == 0 || slices.Contains(opts.Steps, s.Name) {
			steps = append(steps, s)
		}
	}
	rep, err := prepare(ctx, e, opts, opts.Tools)
	if err != nil {
		return nil, err
	}
	rep.Suite = "peers"
	prev := ""
	for _, s := range steps {
		info := StepInfo{Step: s, Desc: "every file is new"}
		if s.Change != nil {
			if info.Desc, err = s.Change(e.Data, opts.Seed+int64(len(rep.Steps))); err != nil {
				return nil, fmt.Errorf("bench: scenario %s: %w", s.Name, err)
			}
		}
		rep.Steps = append(rep.Steps, info)
		opts.logf("step %s: %s", s.Label, info.Desc)
		for _, tool := range rep.Tools {
			if _, err := backup(ctx, e, rep, tool, s.Name, prev); err != nil {
				return nil, err
			}
		}
		prev = s.Name
	}
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

// Trunk is issue 2's benchmark: haul and restic, a full backup each, then
// NoChangeReps no-change backups each, alternating.
func Trunk(ctx context.Context, e *Env, opts Options) (*Report, error) {
	if len(opts.Tools) == 0 {
		opts.Tools = []string{ToolHaul, ToolRestic}
	}
	opts.NoChangeReps = max(opts.NoChangeReps, 1)
	rep, err := prepare(ctx, e, opts, opts.Tools)
	if err != nil {
		return nil, err
	}
	rep.Suite = "trunk"
	rep.Steps = []StepInfo{{Step: Steps[0], Desc: "every file is new"}}
	opts.logf("full backups")
	for _, tool := range rep.Tools {
		if _, err := backup(ctx, e, rep, tool, "full", ""); err != nil {
			return nil, err
		}
	}
	rep.Steps = append(rep.Steps, StepInfo{Step: Steps[1], Desc: fmt.Sprintf("nothing changed; median of %d runs", opts.NoChangeReps)})
	opts.logf("no-change backups (%d each)", opts.NoChangeReps)
	prev := "full"
	for i := range opts.NoChangeReps {
		for _, tool := range rep.Tools {
			name := fmt.Sprintf("a%d", i)
			if _, err := backup(ctx, e, rep, tool, name, prev); err != nil {
				return nil, err
			}
		}
		prev = fmt.Sprintf("a%d", i)
	}
	// Fold the repetitions into step "a": the median by wall time.
	for _, tool := range rep.Tools {
		var runs []Result
		for i := range opts.NoChangeReps {
			r, _ := rep.Get(tool.Name, fmt.Sprintf("a%d", i))
			runs = append(runs, r)
		}
		sort.Slice(runs, func(i, j int) bool { return runs[i].Wall < runs[j].Wall })
		m := runs[len(runs)/2]
		m.Step = "a"
		rep.Results = append(rep.Results, m)
	}
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

// FormatBytes prints n in binary units.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
