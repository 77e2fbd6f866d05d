package forget

import (
	"context"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/prune"
	"github.com/haulproject/haul/puller/repo"
)

// Options say what Run forgets (`haul forget`).
type Options struct {
	Hosts []string // only these hosts' snapshots (restic's --host); empty: all
	// PolicyFor is the retention of a host (config.Config.RetentionFor).
	PolicyFor func(host string) *config.Retention
	// DryRun decides and reports, removes nothing.
	DryRun bool
	// Prune prunes afterwards when snapshots were (or, dry, would be)
	// removed, tolerating MaxUnused unused space (prune.Options).
	Prune     bool
	MaxUnused string
	// Planned, if set, sees the plan before anything is removed (the
	// command prints it there); an error stops the run.
	Planned func(*Plan) error
	// Logf receives what is done and skipped; nil discards it.
	Logf func(format string, args ...any)
}

// Result is what Run did.
type Result struct {
	Plan    *Plan
	Removed int           // snapshots removed (0 on a dry run)
	Prune   *prune.Result // nil unless a prune ran
}

// Run applies the retention to r's snapshots as `restic forget --keep-*`
// does, then prunes if asked: the plan is made, shown to Planned, the
// snapshots removed, the data no snapshot uses pruned. r must be under
// restic's lock (exclusive unless DryRun). The Result is filled as far as
// the run got, also on error.
func Run(ctx context.Context, r *repo.Repo, opts Options) (*Result, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := &Result{}
	sns, err := Load(ctx, r, opts.Hosts)
	if err != nil {
		return res, err
	}
	if res.Plan, err = MakePlan(sns, opts.PolicyFor); err != nil {
		return res, err
	}
	plan := res.Plan
	if opts.Planned != nil {
		if err := opts.Planned(plan); err != nil {
			return res, err
		}
	}
	for _, s := range plan.Skipped {
		logf("host %s, paths %v: no retention policy applies; keeping all %d snapshots", s.Host, s.Paths, s.Snapshots)
	}
	if len(plan.Remove) == 0 {
		return res, nil
	}
	if opts.DryRun {
		logf("would remove %d snapshots", len(plan.Remove))
	} else {
		res.Removed, err = Remove(ctx, r, plan.Remove)
		logf("removed %d snapshots", res.Removed)
		if err != nil {
			return res, err
		}
	}
	if !opts.Prune {
		return res, nil
	}
	res.Prune, err = prune.Run(ctx, r, prune.Options{DryRun: opts.DryRun, MaxUnused: opts.MaxUnused, Ignore: plan.Remove, Logf: logf})
	return res, err
}
