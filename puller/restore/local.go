// Package restore puts a snapshot back: into a local directory, as
// `restic restore` would, or onto an agent, which swaps it in safely.
package restore

import (
	"context"
	"fmt"
	"os"

	"github.com/haulproject/haul/puller/internal/restic/restorer"
	"github.com/haulproject/haul/puller/repo"
)

// LocalResult summarises a local restore.
type LocalResult struct {
	Snapshot string `json:"snapshot"`
	Target   string `json:"target"`
	Files    uint64 `json:"files_verified"`
}

// Local restores sn into target with restic's restorer, then verifies every
// restored file's content against the snapshot. select, when not nil,
// chooses items as restic's --include/--exclude do.
func Local(ctx context.Context, r *repo.Repo, sn *repo.Snapshot, target string, sel func(item string, isDir bool) (bool, bool), warn func(string)) (*LocalResult, error) {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return nil, fmt.Errorf("create target %s: %w", target, err)
	}
	res := restorer.NewRestorer(r.Repository, sn.Snapshot, restorer.Options{Overwrite: restorer.OverwriteAlways})
	var warnings []string
	res.Warn = func(msg string) {
		warnings = append(warnings, msg)
		if warn != nil {
			warn(msg)
		}
	}
	if sel != nil {
		res.SelectFilter = sel
	}
	n, err := res.RestoreTo(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("restore snapshot %s to %s: %w", sn.ID.Str(), target, err)
	}
	verified, err := res.VerifyFiles(ctx, target, n, nil)
	if err != nil {
		return nil, fmt.Errorf("verify restored files in %s: %w", target, err)
	}
	return &LocalResult{Snapshot: sn.ID.String(), Target: target, Files: uint64(verified)}, nil
}
