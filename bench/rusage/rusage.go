// Package rusage runs a command and records what it cost — wall and CPU time
// and peak resident set — for the benchmark harness. It is the body of
// haul-bench-rusage, which wraps sshd's forced commands and the clients, and
// imports nothing but the standard library so the wrapper stays small.
package rusage

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Usage is what one process tree cost. CPU comes from wait4's rusage, which
// covers the process and every descendant it waited for (rsync's ssh, sh's
// child). MaxRSS is the largest single process's peak, as /usr/bin/time
// reports it, with one correction: Linux carries the resident set of the
// process that exec'd a program into the program's Maxrss (Go starts
// children with vfork, so the child execs from the wrapper's memory), so
// Maxrss is at least the wrapper's own peak, the Floor. When it is not above
// the Floor, the child's VmHWM sampled from /proc every few milliseconds is
// reported instead (Sampled is then true).
type Usage struct {
	Side    string        `json:"side"` // "vps" or "nas"
	Role    string        `json:"role"` // "client" or "server"
	Argv0   string        `json:"argv0"`
	Wall    time.Duration `json:"wall_ns"`
	User    time.Duration `json:"user_ns"`
	Sys     time.Duration `json:"sys_ns"`
	MaxRSS  int64         `json:"maxrss_bytes"`
	Floor   int64         `json:"floor_bytes"`
	Sampled bool          `json:"sampled,omitempty"`
	Exit    int           `json:"exit"`
}

// CPU is user plus system time.
func (u Usage) CPU() time.Duration { return u.User + u.Sys }

// Main is haul-bench-rusage:
//
//	haul-bench-rusage -dir D -side vps|nas [-role client|server] -- cmd args…
//	haul-bench-rusage -dir D -side vps -original
//
// It runs the command with its own stdin, stdout and stderr (no copying),
// forwards termination signals, writes the Usage as JSON into D and exits
// with the command's status. -original runs $SSH_ORIGINAL_COMMAND split on
// blanks (what rsync asks sshd for has no quoting), as sshd would run it
// without a forced command but without a shell in between. While the command
// runs a "running-<pid>" marker sits in D, so the harness can wait for
// server-side commands to finish after their client has gone.
func Main(args []string) int {
	fs := flag.NewFlagSet("haul-bench-rusage", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the usage records")
	side := fs.String("side", "", "vps or nas")
	role := fs.String("role", "server", "client or server")
	original := fs.Bool("original", false, "run $SSH_ORIGINAL_COMMAND, split on blanks")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if *original {
		argv = strings.Fields(os.Getenv("SSH_ORIGINAL_COMMAND"))
	}
	if *dir == "" || len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "haul-bench-rusage: need -dir and a command (or -original with SSH_ORIGINAL_COMMAND set)")
		return 2
	}
	running := filepath.Join(*dir, fmt.Sprintf("running-%d", os.Getpid()))
	if err := os.WriteFile(running, nil, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "haul-bench-rusage: %v\n", err)
		return 2
	}
	defer os.Remove(running)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	floor := vmHWM(os.Getpid())
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "haul-bench-rusage: start %s: %v\n", argv[0], err)
		return 127
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	sampled := make(chan int64, 1)
	stop := make(chan struct{})
	go func() {
		// Sampling matters only while the child is no bigger than the
		// floor: once above it, wait4's Maxrss is the child's own. Start
		// often (short-lived commands), then back off to stay cheap.
		var peak int64
		interval := 2 * time.Millisecond
		for {
			peak = max(peak, vmHWM(cmd.Process.Pid))
			if peak > floor+512<<10 {
				<-stop
				sampled <- peak
				return
			}
			select {
			case <-stop:
				sampled <- peak
				return
			case <-time.After(interval):
			}
			interval = min(interval*3/2, 25*time.Millisecond)
		}
	}()
	_ = cmd.Wait()
	wall := time.Since(start)
	close(stop)
	peak := <-sampled

	u := Usage{Side: *side, Role: *role, Argv0: filepath.Base(argv[0]), Wall: wall, Floor: floor, Exit: cmd.ProcessState.ExitCode()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.User = time.Duration(ru.Utime.Nano())
		u.Sys = time.Duration(ru.Stime.Nano())
		u.MaxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	// Within 256 KiB of the floor, Maxrss says nothing about the child.
	if u.MaxRSS <= floor+256<<10 && peak > 0 {
		u.MaxRSS, u.Sampled = peak, true
	}
	b, _ := json.Marshal(u)
	rec := filepath.Join(*dir, fmt.Sprintf("usage-%d-%d.json", time.Now().UnixNano(), os.Getpid()))
	if err := os.WriteFile(rec+".tmp", b, 0o644); err == nil {
		_ = os.Rename(rec+".tmp", rec)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// vmHWM is a process's peak resident set so far (0 if it is gone).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	i := bytes.Index(b, []byte("VmHWM:"))
	if i < 0 {
		return 0
	}
	line, _, _ := bytes.Cut(b[i+len("VmHWM:"):], []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseInt(f[0], 10, 64)
	return kb << 10
}

// Collect waits (up to timeout) until no recorder in dir is running, then
// reads and removes every record.
func Collect(dir string, timeout time.Duration) ([]Usage, error) {
	deadline := time.Now().Add(timeout)
	for {
		running, _ := filepath.Glob(filepath.Join(dir, "running-*"))
		live := 0
		for _, r := range running {
			// A marker whose process is gone (killed outright) does not count.
			pid, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(r), "running-"))
			if pid > 0 && syscall.Kill(pid, 0) == nil {
				live++
			}
		}
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d recorded commands still running after %v", live, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	recs, _ := filepath.Glob(filepath.Join(dir, "usage-*.json"))
	sort.Strings(recs)
	var out []Usage
	for _, r := range recs {
		b, err := os.ReadFile(r)
		if err != nil {
			return nil, err
		}
		var u Usage
		if err := json.Unmarshal(b, &u); err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		out = append(out, u)
		os.Remove(r)
	}
	return out, nil
}
