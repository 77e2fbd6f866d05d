package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haulproject/haul/internal/atomicfile"
)

// DefaultMaxAge is the max_age of a host that sets none when haul did not
// install the schedule: a daily backup plus two hours' slack.
const DefaultMaxAge = 26 * time.Hour

// scheduleSlack is added to the schedule's longest gap between runs, so a
// run that takes a while is not stale.
const scheduleSlack = 2 * time.Hour

// Schedule is the backup schedule haul installed (`haul truenas cron
// install`), kept as <cache_dir>/schedule.json so status can derive a
// max_age from it.
type Schedule struct {
	Cron      string    `json:"cron"`
	Installed time.Time `json:"installed"`
	// LongestGapSeconds is the longest time between two runs.
	LongestGapSeconds float64 `json:"longest_gap_seconds"`
}

// MaxAge is the max_age the schedule implies: its longest gap plus slack.
func (s *Schedule) MaxAge() time.Duration {
	return time.Duration(s.LongestGapSeconds*float64(time.Second)) + scheduleSlack
}

func schedulePath(cacheDir string) string { return filepath.Join(cacheDir, "schedule.json") }

// RecordSchedule stores the schedule haul installed.
func RecordSchedule(cacheDir string, s Schedule) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(schedulePath(cacheDir), append(b, '\n'), 0o600)
}

// LoadSchedule reads the recorded schedule (nil if none was recorded).
func LoadSchedule(cacheDir string) (*Schedule, error) {
	b, err := os.ReadFile(schedulePath(cacheDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s Schedule
	if err := json.Unmarshal(b, &s); err != nil || s.LongestGapSeconds <= 0 {
		return nil, fmt.Errorf("%s is corrupt (%v): run `haul truenas cron install` again or delete it", schedulePath(cacheDir), err)
	}
	return &s, nil
}

// defaultMaxAge is the max_age of a host that sets none, and where it
// comes from ("schedule" or "default").
func defaultMaxAge(cacheDir string) (time.Duration, string, string) {
	s, err := LoadSchedule(cacheDir)
	if err != nil || s == nil {
		return DefaultMaxAge, "default", ""
	}
	return s.MaxAge(), "schedule", s.Cron
}
