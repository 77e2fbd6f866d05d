// Package status answers "are my backups current?": per host the newest
// snapshot's age, size and haul's record of it, the last run's outcome
// (kept in the cache dir by `haul backup`), and whether the host is stale
// (its newest snapshot older than its max_age). Its JSON is a stable,
// documented interface (docs/operations.md); fields are only ever added.
package status

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/repo"
)

// FormatVersion is the report's "version"; it changes only if a field
// changes meaning or goes away.
const FormatVersion = 1

// Report is `haul status --json`.
type Report struct {
	Version    int       `json:"version"`
	Repository string    `json:"repository"`
	Time       time.Time `json:"time"`
	// OK is false when any host is stale or its last drill failed.
	OK bool `json:"ok"`
	// DrillFailed names the hosts whose last restore drill found a
	// problem (an empty list, never null).
	DrillFailed []string `json:"drill_failed"`
	// Stale names the stale hosts (an empty list, never null).
	Stale []string `json:"stale"`
	Hosts []Host   `json:"hosts"`
}

// Err is nil when the report is OK, else an error naming each stale host
// (and why) and each host whose last drill failed: `haul status` exits 1
// with it.
func (r *Report) Err() error {
	if r.OK {
		return nil
	}
	var why []string
	for _, h := range r.Hosts {
		if h.Stale {
			why = append(why, fmt.Sprintf("%s (%s)", h.Host, h.StaleReason))
		}
	}
	for _, h := range r.DrillFailed {
		why = append(why, h+" (last restore drill failed)")
	}
	return fmt.Errorf("not ok: %s", strings.Join(why, "; "))
}

// Host is one configured host's status.
type Host struct {
	Host string `json:"host"`
	// MaxAge is the host's max_age, also in seconds. A host that sets
	// none gets one: derived from the schedule haul installed, else 26h.
	MaxAge        string  `json:"max_age"`
	MaxAgeSeconds float64 `json:"max_age_seconds"`
	// MaxAgeSource says where MaxAge comes from: "config" (the host's
	// max_age), "schedule" (the installed cron schedule's longest gap plus
	// 2h) or "default" (26h).
	MaxAgeSource string `json:"max_age_source"`
	// Stale: the newest snapshot is older than MaxAge, or there is none.
	// StaleReason says which.
	Stale       bool   `json:"stale"`
	StaleReason string `json:"stale_reason,omitempty"`
	// Snapshots counts the host's snapshots in the repository.
	Snapshots int     `json:"snapshots"`
	Newest    *Newest `json:"newest"`
	// LastRun is the last `haul backup` of this host from this cache dir
	// (null if none); LastError repeats its error when it failed.
	LastRun   *Run   `json:"last_run"`
	LastError string `json:"last_error"`
	// LastSuccess is the last run that wrote a snapshot.
	LastSuccess *Run `json:"last_success"`
	// LastDrill is the last restore drill (`haul drill`, null if none);
	// LastGoodDrill the last that found nothing wrong.
	LastDrill     *Drill `json:"last_drill"`
	LastGoodDrill *Drill `json:"last_good_drill"`
}

// Newest describes a host's newest snapshot. Fields from restic's
// summary or haul's record are null for snapshots that lack them (for
// example snapshots written by the restic CLI).
type Newest struct {
	ID         string    `json:"id"`
	ShortID    string    `json:"short_id"`
	Time       time.Time `json:"time"`
	AgeSeconds float64   `json:"age_seconds"`
	Paths      []string  `json:"paths"`
	Files      *uint64   `json:"files"`
	Bytes      *uint64   `json:"bytes"`
	BytesAdded *uint64   `json:"bytes_added"`
	// BytesMoved is what crossed the transport (both ways) for it.
	BytesMoved *int64   `json:"bytes_moved"`
	FreezeMS   *float64 `json:"freeze_ms"`
	DurationMS *float64 `json:"duration_ms"`
}

// Build reports on hosts (in that order) from the repository's snapshots
// and the state haul backup kept in cacheDir.
func Build(ctx context.Context, r *repo.Repo, cacheDir string, hosts []*config.Host, now time.Time) (*Report, error) {
	sns, err := r.Snapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	byHost := map[string][]repo.Snapshot{}
	for _, sn := range sns { // oldest first
		byHost[sn.Hostname] = append(byHost[sn.Hostname], sn)
	}
	defAge, defSource, _ := defaultMaxAge(cacheDir)
	rep := &Report{Version: FormatVersion, Repository: r.Path, Time: now, Stale: []string{}, DrillFailed: []string{}, Hosts: []Host{}}
	for _, h := range hosts {
		hs := Host{Host: h.Name, Snapshots: len(byHost[h.Name])}
		maxAge, source := time.Duration(h.MaxAge), "config"
		if maxAge <= 0 {
			maxAge, source = defAge, defSource
		}
		hs.MaxAge, hs.MaxAgeSeconds, hs.MaxAgeSource = maxAge.String(), maxAge.Seconds(), source
		if list := byHost[h.Name]; len(list) > 0 {
			hs.Newest = newest(list[len(list)-1], now)
		}
		st, err := LoadState(cacheDir, r.Config().ID, h.Name)
		if err != nil {
			return nil, err
		}
		hs.LastRun, hs.LastSuccess = st.LastRun, st.LastSuccess
		hs.LastDrill, hs.LastGoodDrill = st.LastDrill, st.LastGoodDrill
		if hs.LastRun != nil && !hs.LastRun.OK {
			hs.LastError = hs.LastRun.Error
		}
		switch {
		case hs.Newest == nil:
			hs.Stale, hs.StaleReason = true, fmt.Sprintf("no snapshot yet (max_age %s%s)", maxAge, sourceNote(source))
		case now.Sub(hs.Newest.Time) > maxAge:
			hs.Stale, hs.StaleReason = true, fmt.Sprintf("newest snapshot is %s old, older than max_age %s%s",
				now.Sub(hs.Newest.Time).Round(time.Second), maxAge, sourceNote(source))
		}
		if hs.Stale {
			rep.Stale = append(rep.Stale, h.Name)
		}
		if hs.LastDrill != nil && !hs.LastDrill.OK {
			rep.DrillFailed = append(rep.DrillFailed, h.Name)
		}
		rep.Hosts = append(rep.Hosts, hs)
	}
	rep.OK = len(rep.Stale) == 0 && len(rep.DrillFailed) == 0
	return rep, nil
}

// sourceNote says where a max_age not from the config came from.
func sourceNote(source string) string {
	switch source {
	case "schedule":
		return ", derived from the installed cron schedule; set max_age to change it"
	case "default":
		return ", the default; set max_age to change it"
	}
	return ""
}

func newest(sn repo.Snapshot, now time.Time) *Newest {
	n := &Newest{
		ID: sn.ID.String(), ShortID: sn.ID.Str(), Time: sn.Time,
		AgeSeconds: now.Sub(sn.Time).Round(time.Millisecond).Seconds(), Paths: sn.Paths,
	}
	if s := sn.Summary; s != nil {
		files, bytes, added := uint64(s.TotalFilesProcessed), s.TotalBytesProcessed, s.DataAddedPacked
		n.Files, n.Bytes, n.BytesAdded = &files, &bytes, &added
	}
	if rec := sn.Haul; rec != nil {
		moved, freeze, dur := rec.WireBytesIn+rec.WireBytesOut, rec.FreezeMS, rec.DurationMS
		n.BytesMoved, n.FreezeMS, n.DurationMS = &moved, &freeze, &dur
	}
	return n
}
