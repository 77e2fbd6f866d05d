// Package forget applies the config's retention to the repository's
// snapshots with restic's own policy code (data.ApplyPolicy), grouped by
// host and paths as `restic forget` groups them by default, and prints its
// decisions in the shape of `restic forget --json`.
package forget

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// Group is one snapshot group's decision; its JSON is restic's
// ForgetGroup (cmd/restic/cmd_forget.go), field for field.
type Group struct {
	Tags    []string     `json:"tags"`
	Host    string       `json:"host"`
	Paths   []string     `json:"paths"`
	Keep    []Snapshot   `json:"keep"`
	Remove  []Snapshot   `json:"remove"`
	Reasons []KeepReason `json:"reasons"`

	// Policy describes the policy applied, as restic prints it.
	Policy string `json:"-"`
}

// Snapshot is a snapshot as restic's JSON output shows it.
type Snapshot struct {
	*data.Snapshot
	ID      *restic.ID `json:"id"`
	ShortID string     `json:"short_id"`
}

// KeepReason says why a snapshot is kept, as restic's JSON shows it.
type KeepReason struct {
	Snapshot Snapshot `json:"snapshot"`
	Matches  []string `json:"matches"`
}

// Skipped is a group no policy applies to: all its snapshots are kept.
type Skipped struct {
	Host      string   `json:"host"`
	Paths     []string `json:"paths"`
	Snapshots int      `json:"snapshots"`
}

// Plan is what forget would do.
type Plan struct {
	Groups  []*Group
	Skipped []Skipped
	// Remove holds the IDs of every snapshot to remove.
	Remove restic.IDSet
}

// Policy converts a retention config to restic's policy.
func Policy(r *config.Retention) (data.ExpirePolicy, error) {
	if r == nil {
		return data.ExpirePolicy{}, nil
	}
	p := data.ExpirePolicy{
		Last: r.KeepLast, Hourly: r.KeepHourly, Daily: r.KeepDaily,
		Weekly: r.KeepWeekly, Monthly: r.KeepMonthly, Yearly: r.KeepYearly,
	}
	if r.KeepWithin != "" {
		d, err := data.ParseDuration(r.KeepWithin)
		if err != nil {
			return p, fmt.Errorf("keep_within %q: %w", r.KeepWithin, err)
		}
		p.Within = d
	}
	return p, nil
}

// Load reads the repository's snapshots, only those of hosts when hosts is
// not empty (restic's --host).
func Load(ctx context.Context, r restic.ListerLoaderUnpacked, hosts []string) (data.Snapshots, error) {
	var out data.Snapshots
	err := data.ForAllSnapshots(ctx, r, r, nil, func(id restic.ID, sn *data.Snapshot, err error) error {
		if err != nil {
			return fmt.Errorf("load snapshot %s: %w", id.Str(), err)
		}
		if len(hosts) == 0 || sn.HasHostname(hosts) {
			out = append(out, sn)
		}
		return nil
	})
	return out, err
}

// MakePlan groups snapshots by host and paths and applies to each group
// the policy policyFor returns for its host. Groups whose policy is empty
// are skipped (kept whole). It fails, as restic does, if a policy would
// remove every snapshot of a group, and when no group has a policy at all.
func MakePlan(snapshots data.Snapshots, policyFor func(host string) *config.Retention) (*Plan, error) {
	groups, _, err := data.GroupSnapshots(snapshots, data.SnapshotGroupByOptions{Host: true, Path: true})
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	plan := &Plan{Remove: restic.NewIDSet()}
	for _, k := range keys {
		var key data.SnapshotGroupKey
		if err := json.Unmarshal([]byte(k), &key); err != nil {
			return nil, err
		}
		ret := policyFor(key.Hostname)
		if ret.Empty() {
			plan.Skipped = append(plan.Skipped, Skipped{Host: key.Hostname, Paths: key.Paths, Snapshots: len(groups[k])})
			continue
		}
		policy, err := Policy(ret)
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", key.Hostname, err)
		}
		keep, remove, reasons := data.ApplyPolicy(groups[k], policy)
		if len(keep) == 0 {
			return nil, fmt.Errorf("refusing to delete the last snapshot of group %q: the policy (%v) keeps none of them", key.String(), policy)
		}
		g := &Group{Tags: key.Tags, Host: key.Hostname, Paths: key.Paths, Policy: policy.String()}
		g.Keep = asJSON(keep)
		g.Remove = asJSON(remove)
		for _, kr := range reasons {
			g.Reasons = append(g.Reasons, KeepReason{Snapshot: one(kr.Snapshot), Matches: kr.Matches})
		}
		for _, sn := range remove {
			plan.Remove.Insert(*sn.ID())
		}
		plan.Groups = append(plan.Groups, g)
	}
	if len(plan.Groups) == 0 && len(plan.Skipped) > 0 {
		return nil, fmt.Errorf("no retention policy applies to any snapshot: set [retention] (or [hosts.retention]) keep_* values in the config")
	}
	return plan, nil
}

func one(sn *data.Snapshot) Snapshot {
	return Snapshot{Snapshot: sn, ID: sn.ID(), ShortID: sn.ID().Str()}
}

// asJSON mirrors restic's asJSONSnapshots, including null for none.
func asJSON(list data.Snapshots) []Snapshot {
	var out []Snapshot
	for _, sn := range list {
		out = append(out, one(sn))
	}
	return out
}

// Remover deletes snapshot files.
type Remover interface {
	restic.RemoverUnpacked[restic.WriteableFileType]
}

// Remove deletes the plan's snapshots and returns how many were removed.
// It tries every one and reports those it could not remove.
func Remove(ctx context.Context, r Remover, ids restic.IDSet) (int, error) {
	var (
		mu      sync.Mutex
		failed  []string
		removed int
	)
	err := restic.ParallelRemove(ctx, r, ids, restic.WriteableSnapshotFile, func(id restic.ID, err error) error {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", id.Str(), err))
		} else {
			removed++
		}
		return nil
	}, nil)
	if err != nil {
		return removed, err
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return removed, fmt.Errorf("could not remove %d snapshots: %s", len(failed), strings.Join(failed, "; "))
	}
	return removed, nil
}
