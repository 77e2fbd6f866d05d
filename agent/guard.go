package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/haulproject/haul/agent/restore"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/internal/atomicfile"
	"github.com/haulproject/haul/internal/flock"
	"github.com/haulproject/haul/proto"
)

// The guard brings quiesced targets back when the agent cannot: it was
// killed outright (SIGKILL, the OOM killer) or hangs past guard_timeout.
// Two parts share the code below:
//
//   - the watchdog: `haul-agent recover --config F --watch-pid PID`, which
//     Freeze starts (detached, in its own session, no shell) before it
//     quiesces anything. It polls the agent and the marker; when the agent
//     is gone, or the deadline passes, with the marker still there, it
//     resumes the recorded targets. It exits as soon as the marker is gone.
//   - the check: `haul-agent recover --config F`, run by a systemd unit at
//     boot and by a timer, which catches what the watchdog could not (it
//     was killed too, or the machine rebooted mid-freeze).
//
// Resuming is idempotent (starting a running container or unit does
// nothing), so two guards acting at once do no harm; guard.lock keeps a
// new freeze from starting while a guard is still bringing back an old one.

// WatchdogSpec says how Freeze starts the watchdog.
type WatchdogSpec struct {
	Exe        string // the haul-agent binary
	ConfigPath string // absolute path of its config file
}

// Watchdog, when Exe is set, makes Freeze start the watchdog process.
// haul-agent's main sets it; tests that call Freeze in-process leave it
// empty (and get no SIGKILL guard).
var Watchdog WatchdogSpec

// watchdogPoll is how often the watchdog looks at the agent and the marker.
const watchdogPoll = 50 * time.Millisecond

// startWatchdog starts the watchdog for this process, if one is configured.
func startWatchdog(cfg *Config) error {
	if Watchdog.Exe == "" {
		return nil
	}
	log, err := os.OpenFile(cfg.GuardLogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open guard log: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(Watchdog.Exe, "recover", "--config", Watchdog.ConfigPath, "--watch-pid", strconv.Itoa(os.Getpid()))
	// Not the session's stdout or stderr: sshd would keep the channel open
	// until the watchdog exits. Its own session: a signal for the agent's
	// process group (Ctrl-C, sshd hanging up) must not reach it.
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the freeze watchdog %s: %w (without it a killed agent could leave services stopped, so the freeze is refused)", Watchdog.Exe, err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it exits first
	return nil
}

// Watch is the watchdog: it waits until the freeze of agent pid ends. If
// the agent dies with its marker still there, or the marker's deadline
// passes, it resumes the marker's targets. logf gets one line per action.
func Watch(ctx context.Context, cfg *Config, pid int, logf func(string, ...any)) error {
	for {
		m, _, err := readMarkers(cfg)
		if err != nil {
			logf("read freeze marker: %v", err)
		}
		if m == nil || m.PID != pid {
			return nil // the freeze is over (or a newer one runs, with its own watchdog)
		}
		switch {
		case !processAlive(pid, m.PIDStart):
			return recoverMarker(ctx, cfg, pid, fmt.Sprintf("agent pid %d died during its freeze", pid), logf)
		case time.Now().After(m.Deadline):
			return recoverMarker(ctx, cfg, pid, fmt.Sprintf("agent pid %d is still frozen past quiesce.guard_timeout (%v)", pid, m.Deadline.Sub(m.Started).Round(time.Second)), logf)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(watchdogPoll):
		}
	}
}

// Recover is the boot-time and timer check: if a freeze marker is left
// whose agent is gone, or whose deadline has passed, it resumes the
// recorded targets. A freeze still within its deadline is left alone. It
// reports whether it resumed anything.
func Recover(ctx context.Context, cfg *Config, logf func(string, ...any)) (bool, error) {
	m, path, err := readMarkers(cfg)
	if err != nil {
		return false, err
	}
	if m == nil {
		return false, nil
	}
	alive := processAlive(m.PID, m.PIDStart)
	if alive && time.Now().Before(m.Deadline) {
		logf("a freeze by agent pid %d is in progress since %s (%s); its guard deadline is %s", m.PID, m.Started.Format(time.RFC3339), filepath.Base(path), m.Deadline.Format(time.RFC3339))
		return false, nil
	}
	reason := fmt.Sprintf("agent pid %d is gone but its freeze marker %s is left", m.PID, path)
	if alive {
		reason = fmt.Sprintf("agent pid %d is frozen past its guard deadline %s", m.PID, m.Deadline.Format(time.RFC3339))
	}
	return true, recoverMarker(ctx, cfg, m.PID, reason, logf)
}

// recoverLeftover runs before a freeze: a marker left by an agent that died
// is recovered first, so the new plan sees those targets running and the
// old guard cannot start them under the new freeze.
func recoverLeftover(ctx context.Context, cfg *Config) error {
	m, path, err := readMarkers(cfg)
	if err != nil {
		return proto.Errorf(proto.CodeFreeze, "%v", err)
	}
	if m == nil {
		return nil
	}
	if m.PID != os.Getpid() && processAlive(m.PID, m.PIDStart) {
		return proto.Errorf(proto.CodeBusy, "agent pid %d still holds the freeze marker %s; wait for it to finish (or run `haul-agent recover`)", m.PID, path)
	}
	logf := func(string, ...any) {}
	if f, err := os.OpenFile(cfg.GuardLogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
		defer f.Close()
		logf = RecoverLogger(f)
	}
	rerr := recoverMarker(ctx, cfg, m.PID, fmt.Sprintf("a new freeze found the marker of agent pid %d, which is gone", m.PID), logf)
	if rerr != nil {
		return proto.Errorf(proto.CodeFreeze, "an earlier freeze (agent pid %d) left %s and its targets could not be resumed: %v; fix that first (haul-agent recover --config ... retries)", m.PID, path, rerr)
	}
	return nil
}

// recoverMarker resumes the targets of agent pid's marker, under guard.lock,
// and removes the marker once they are all back.
func recoverMarker(ctx context.Context, cfg *Config, pid int, reason string, logf func(string, ...any)) error {
	l, err := flock.Acquire(ctx, cfg.guardLockPath(), flock.Options{Wait: -1, Poll: 20 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("guard lock: %w", err)
	}
	defer l.Unlock()
	// Claim the thaw: the agent checks for this rename after its sync.
	if m, err := readMarker(cfg.FrozenMarkerPath()); err == nil && m.PID == pid {
		if err := os.Rename(cfg.FrozenMarkerPath(), cfg.ThawingMarkerPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("claim freeze marker: %w", err)
		}
	}
	m, err := readMarker(cfg.ThawingMarkerPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil // someone else finished the thaw meanwhile
	}
	if err != nil {
		return err
	}
	if m.PID != pid {
		return nil
	}
	finishSwapIfIdle(ctx, cfg, logf)
	logf("%s: resuming %s", reason, describeTargets(m.Targets))
	opts := quiesce.Options{Mode: m.Mode, DockerHost: m.DockerHost, Timeout: cfg.Quiesce.Timeout.Or(30 * time.Second)}
	rctx, cancel := context.WithTimeout(ctx, opts.Timeout*time.Duration(len(m.Targets)+2))
	defer cancel()
	if err := quiesce.ResumeTargets(rctx, opts, m.Targets); err != nil {
		logf("resume failed, marker %s kept for the next try: %v", cfg.ThawingMarkerPath(), err)
		return err
	}
	if err := os.Remove(cfg.ThawingMarkerPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	logf("resumed %s", describeTargets(m.Targets))
	return nil
}

// finishSwapIfIdle rolls forward a restore's swap that the dead agent was
// killed in, before its containers are started on the data: unless a live
// session holds the state dir's lock (it finishes the swap itself when it
// starts). A failure is logged, not returned: the containers come back
// either way, and the journal is kept for the next try.
func finishSwapIfIdle(ctx context.Context, cfg *Config, logf func(string, ...any)) {
	l, err := flock.Acquire(ctx, cfg.lockPath(), flock.Options{Wait: 0})
	if err != nil {
		if _, jerr := os.Stat(cfg.restoreHost().SwapJournal); jerr == nil {
			logf("an interrupted restore swap is left (%s); the session holding %s finishes it", cfg.restoreHost().SwapJournal, cfg.lockPath())
		}
		return
	}
	defer l.Unlock()
	if err := restore.FinishSwap(cfg.restoreHost(), logf); err != nil {
		logf("finishing an interrupted restore swap failed (the next restore retries): %v", err)
	}
}

func describeTargets(ts []quiesce.Target) string {
	if len(ts) == 0 {
		return "no targets"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.String()
	}
	return strings.Join(parts, ", ")
}

// readMarkers returns the freeze marker, under either name, and its path;
// nil if there is none.
func readMarkers(cfg *Config) (*FrozenMarker, string, error) {
	for _, p := range []string{cfg.FrozenMarkerPath(), cfg.ThawingMarkerPath()} {
		m, err := readMarker(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, p, err
		}
		return m, p, nil
	}
	return nil, "", nil
}

func readMarker(path string) (*FrozenMarker, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m FrozenMarker
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("freeze marker %s is unreadable (%v): resume its services by hand, then delete it", path, err)
	}
	return &m, nil
}

// writeMarker writes the marker durably: after a power cut mid-freeze the
// boot-time check must find it.
func writeMarker(path string, m *FrozenMarker) error {
	return atomicfile.WriteJSON(path, m, 0o600)
}

// procStartTime returns a process's start time in clock ticks since boot
// (field 22 of /proc/PID/stat), 0 if unknown.
func procStartTime(pid int) uint64 {
	st, ok := procStat(pid)
	if !ok {
		return 0
	}
	return st.start
}

type procInfo struct {
	state string
	start uint64
}

func procStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procInfo{}, false
	}
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return procInfo{state: f[0], start: start}, true
}

// processAlive reports whether pid runs and, when start is known, is the
// same process (not a reused PID). A zombie counts as gone: its parent may
// not have reaped it yet.
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, ok := procStat(pid)
	if !ok || st.state == "Z" || st.state == "X" {
		return false
	}
	return start == 0 || st.start == start
}

// RecoverLogger returns a logf for the recover command that writes
// timestamped lines to w.
func RecoverLogger(w io.Writer) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Fprintf(w, "%s haul-agent recover[%d]: %s\n", time.Now().Format(time.RFC3339), os.Getpid(), fmt.Sprintf(format, args...))
	}
}
