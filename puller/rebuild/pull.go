package rebuild

import (
	"context"
	"fmt"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/pull"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
)

// Pulled returns Options that rebuild host h of cfg through haul's own
// sessions (`haul rebuild`): the probe and the final backup (tagged
// "rebuild") with the backup key, the restore with the restore key, the
// repository opened with cfg's password. The caller sets the token, the
// flags and the outputs.
func Pulled(cfg *config.Config, h *config.Host, logf func(format string, args ...any)) Options {
	return Options{
		Config: cfg, Host: h, Logf: logf,
		Probe:    pull.Connecter(h, false),
		OpenRepo: func(ctx context.Context) (*repo.Repo, error) { return pull.OpenRepo(ctx, cfg) },
		FinalBackup: func(ctx context.Context) (*SnapshotInfo, error) {
			res, err := pull.Host(ctx, cfg, h, pull.HostOptions{Tags: []string{"rebuild"}, Logf: logf})
			if err != nil {
				return nil, err
			}
			if res.Snapshot == nil {
				return nil, fmt.Errorf("the backup of %s reported no snapshot", h.Name)
			}
			return &SnapshotInfo{ID: res.SnapshotID, Time: res.Snapshot.Time, Paths: res.Snapshot.Paths}, nil
		},
		Restore: func(ctx context.Context, r *repo.Repo, sn *repo.Snapshot) (*restore.AgentResult, error) {
			return pull.RestoreOnto(ctx, cfg, r, sn, h, restore.AgentOptions{Logf: logf})
		},
	}
}
