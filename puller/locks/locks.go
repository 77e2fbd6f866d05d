// Package locks finds and removes stale restic locks in a local repository
// before haul takes its own, so a haul or restic process that was killed
// does not block the next run.
//
// restic v0.19.1 never removes a stale lock by itself: a stale exclusive
// lock blocks every later command, and any stale lock blocks `prune` and
// `check`, until someone runs `restic unlock`. haul applies the same test
// as `restic unlock` (restic.Lock.Stale) with one change: restic probes the
// lock's PID by sending it SIGHUP, which would hit an unrelated process that
// reused the PID; haul sends no signal and compares the process's start time
// with the lock's time instead.
package locks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// Removed describes one stale lock that was removed.
type Removed struct {
	ID       string
	PID      int
	Hostname string
	Time     time.Time
	Reason   string
}

func (r Removed) String() string {
	return fmt.Sprintf("removed stale lock %s (PID %d on %s, refreshed %s): %s",
		r.ID[:8], r.PID, r.Hostname, r.Time.Format(time.RFC3339), r.Reason)
}

// Repository is what RemoveStale needs: restic's lock listing.
type Repository interface {
	restic.ListerLoaderUnpacked
}

// RemoveStale deletes the stale locks of the local repository at path and
// returns what it removed. Locks it cannot read are left alone (restic
// reports them when locking).
func RemoveStale(ctx context.Context, r Repository, path string) ([]Removed, error) {
	host, _ := os.Hostname()
	var stale []Removed
	err := restic.ForAllLocks(ctx, r, nil, func(id restic.ID, l *restic.Lock, err error) error {
		if err != nil {
			return nil
		}
		if reason, ok := Stale(l, host, time.Now()); ok {
			stale = append(stale, Removed{ID: id.String(), PID: l.PID, Hostname: l.Hostname, Time: l.Time, Reason: reason})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list locks of %s: %w", path, err)
	}
	var removed []Removed
	for _, s := range stale {
		// restic's local backend keeps locks flat under locks/<id>.
		err := os.Remove(filepath.Join(path, "locks", s.ID))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("remove stale lock %s: %w", s.ID[:8], err)
		}
		removed = append(removed, s)
	}
	return removed, nil
}

// Stale reports whether a lock is stale and why, as restic decides: it was
// not refreshed for restic.StaleLockTimeout (a live holder refreshes it
// every 5 minutes and gives up after 22.5), or it was made on this host
// (host) by a process that is gone.
func Stale(l *restic.Lock, host string, now time.Time) (string, bool) {
	if age := now.Sub(l.Time); age > restic.StaleLockTimeout {
		return fmt.Sprintf("not refreshed for %s (restic treats locks older than %s as stale)", age.Round(time.Second), restic.StaleLockTimeout), true
	}
	if host == "" || l.Hostname != host {
		return "", false
	}
	if gone, why := processGone(l.PID, l.Time); gone {
		return why, true
	}
	return "", false
}

// startSlack absorbs the rounding of boot time and process start ticks.
const startSlack = 5 * time.Second

// processGone reports whether the process that made a lock at lockTime has
// exited: no process has its PID, it is a zombie, or the process that has
// it started after the lock was written (the PID was reused).
func processGone(pid int, lockTime time.Time) (bool, string) {
	if pid <= 0 {
		return true, fmt.Sprintf("invalid PID %d", pid)
	}
	switch p := readProc(pid); {
	case p.noProc:
		// No /proc (not Linux): signal 0 tests existence without side effects.
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			return true, fmt.Sprintf("process %d is gone", pid)
		}
		return false, ""
	case !p.exists:
		return true, fmt.Sprintf("process %d is gone", pid)
	case p.zombie:
		return true, fmt.Sprintf("process %d has exited (zombie)", pid)
	case p.startOK && p.start.After(lockTime.Add(startSlack)):
		return true, fmt.Sprintf("PID %d now belongs to a process started after the lock was written", pid)
	}
	return false, ""
}

type procInfo struct {
	noProc  bool // /proc is not available
	exists  bool
	zombie  bool
	start   time.Time
	startOK bool
}

// readProc reads a process's state and start time from /proc (Linux).
func readProc(pid int) procInfo {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return procInfo{noProc: true}
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}
	}
	p := procInfo{exists: true}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return p
	}
	// After the command name: state(0) ppid ... starttime(19), in clock ticks
	// since boot.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return p
	}
	p.zombie = f[0] == "Z" || f[0] == "X"
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return p
	}
	boot, ok := bootTime()
	if !ok {
		return p
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	p.start, p.startOK = boot.Add(time.Duration(ticks)*(time.Second/100)), true
	return p
}

func bootTime() (time.Time, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, false
			}
			return time.Unix(sec, 0), true
		}
	}
	return time.Time{}, false
}
