package truenas

import (
	"context"
	"fmt"
	"time"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/status"
)

// InstallRecorded is InstallResult plus where the schedule was recorded.
type InstallRecorded struct {
	*InstallResult
	// CacheDir is where the schedule was recorded for `haul status`
	// (which derives a default max_age from it); empty when the config at
	// Job.Config could not be read here (`haul cron install --url` run
	// away from the NAS), so the NAS's status uses status.DefaultMaxAge.
	CacheDir string
}

// InstallAndRecord is `haul truenas cron install`: it creates or updates
// haul's cron job (InstallHaulJob), then records the job's schedule in
// the cache_dir of the config the job runs with, when that config is
// readable here.
func InstallAndRecord(ctx context.Context, o InstallOptions) (*InstallRecorded, error) {
	res, err := InstallHaulJob(ctx, o)
	if err != nil {
		return nil, err
	}
	out := &InstallRecorded{InstallResult: res}
	cfg, err := config.Load(o.Job.Config)
	if err != nil {
		return out, nil
	}
	if err := status.RecordSchedule(cfg.CacheDir, status.Schedule{Cron: o.Job.Schedule.String(), Installed: time.Now().UTC(), LongestGapSeconds: res.LongestGap.Seconds()}); err != nil {
		return out, fmt.Errorf("record the schedule in %s: %w", cfg.CacheDir, err)
	}
	out.CacheDir = cfg.CacheDir
	return out, nil
}
