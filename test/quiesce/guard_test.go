package quiesce_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// holdEnv keeps the agent frozen (targets quiesced) after its sync, so a
// test can act "mid-freeze". A test-only hook of haul-agent.
const holdEnv = "HAUL_AGENT_TEST_FREEZE_HOLD=20s"

// waitFrozen waits until the agent's freeze marker exists and every
// running container of s is stopped or paused; it returns the agent's pid.
func waitFrozen(t *testing.T, h *host, s *stack, backup *exec.Cmd) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var m struct{ PID int }
		b, err := os.ReadFile(filepath.Join(h.StateDir, "frozen.json"))
		if err == nil && json.Unmarshal(b, &m) == nil && m.PID > 0 {
			st := s.states()
			quiesced := true
			for _, n := range s.running {
				quiesced = quiesced && st[n] != "running"
			}
			if quiesced {
				return m.PID
			}
		}
		if backup.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("the agent never reached its freeze (marker: %v, states: %v)", err, s.states())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNoSnapshotNoMarker asserts that a failed backup left no snapshot and
// that the freeze marker is gone (within a few seconds: the guard removes
// it right after resuming).
func checkNoSnapshotNoMarker(t *testing.T, h *host) {
	t.Helper()
	if sns := h.snapshots(); len(sns) != 0 {
		t.Errorf("a failed backup left %d snapshots", len(sns))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, n := range []string{"frozen.json", "thawing.json"} {
			if _, err := os.Stat(filepath.Join(h.StateDir, n)); err == nil {
				left = append(left, n)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("freeze marker %v still in the state dir", left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentKilledMidFreeze SIGKILLs the agent while its targets are
// quiesced: the watchdog it started must bring them back within 30 s.
func TestAgentKilledMidFreeze(t *testing.T) {
	d := testenv.SharedDockerd(t)
	for _, mode := range []string{"stop", "pause"} {
		t.Run(mode, func(t *testing.T) {
			s := newStack(t, d, "qa-kill-"+mode, "")
			h := newHost(t, s.data, map[string]any{"mode": mode, "compose_project": s.project, "docker_host": d.Host, "timeout": "20s"}, holdEnv)
			backup := h.haulCmd("backup", "--json")
			var out strings.Builder
			backup.Stdout, backup.Stderr = &out, &out
			if err := backup.Start(); err != nil {
				t.Fatal(err)
			}
			pid := waitFrozen(t, h, s, backup)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill agent pid %d: %v", pid, err)
			}
			took := s.waitUp(30 * time.Second)
			t.Logf("mode %s: containers running again %v after SIGKILL of the agent", mode, took.Round(time.Millisecond))
			if err := backup.Wait(); err == nil {
				t.Errorf("haul backup succeeded although its agent was killed:\n%s", out.String())
			}
			s.checkUp("after the guard")
			checkNoSnapshotNoMarker(t, h)
			log, _ := os.ReadFile(filepath.Join(h.StateDir, "guard.log"))
			if !strings.Contains(string(log), fmt.Sprintf("agent pid %d died during its freeze", pid)) || !strings.Contains(string(log), "resumed") {
				t.Errorf("guard.log does not tell what happened:\n%s", log)
			}
			// The next backup works as usual, in the stack's order.
			since := time.Now()
			if r, stderr, err := h.backupNoHold(); err != nil || !r.OK {
				t.Fatalf("backup after recovery: %v %+v\n%s", err, r, stderr)
			}
			s.checkOrder(since, mode)
			s.checkUp("after the next backup")
		})
	}
}

// backupNoHold runs a backup with the agent started without the hold.
func (h *host) backupNoHold() (*backupResult, []byte, error) {
	h.writePullerConfig([]string{filepath.Join(h.bins, "haul-agent"), "serve", "--config", h.AgentCfg})
	return h.backup()
}

// TestConnectionCutMidFreeze kills the puller while the agent, reached
// through a real sshd, holds its targets quiesced: the agent sees the
// connection end and must bring them back within 5 s. The time is taken
// from dockerd's events (cut to the last start or unpause), not from
// polling, which costs a docker CLI run per container.
func TestConnectionCutMidFreeze(t *testing.T) {
	d := testenv.SharedDockerd(t)
	for _, mode := range []string{"pause", "stop"} {
		t.Run(mode, func(t *testing.T) {
			s := newStack(t, d, "qa-cut-"+mode, "")
			h := newHost(t, s.data, map[string]any{"mode": mode, "compose_project": s.project, "docker_host": d.Host, "timeout": "20s"})
			key := testenv.NewKeyPair(t, t.TempDir(), "backup_key")
			sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Keys: []testenv.AuthorizedKey{{
				Key:     key,
				Options: fmt.Sprintf(`command="env %s %s serve --config %s",restrict`, holdEnv, filepath.Join(h.bins, "haul-agent"), h.AgentCfg),
			}}})
			h.writePullerConfig(nil,
				fmt.Sprintf("address = %q", sshd.Addr), fmt.Sprintf("user = %q", sshd.User),
				fmt.Sprintf("identity_file = %q", key.PrivatePath), fmt.Sprintf("known_hosts = %q", sshd.KnownHosts))

			backup := h.haulCmd("backup", "--json")
			var out strings.Builder
			backup.Stdout, backup.Stderr = &out, &out
			if err := backup.Start(); err != nil {
				t.Fatal(err)
			}
			waitFrozen(t, h, s, backup)
			// The puller dies: its TCP connection closes, sshd ends the
			// session, the agent reads EOF.
			cut := time.Now()
			if err := backup.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = backup.Wait()
			s.waitUp(30 * time.Second)
			last := s.lastEvent(cut, map[string]bool{"start": true, "unpause": true})
			took := last.Sub(cut)
			t.Logf("mode %s: containers running again %v after the puller's connection was cut", mode, took.Round(time.Millisecond))
			if took > 5*time.Second {
				t.Errorf("mode %s: the last container came back %v after the cut, want within 5s", mode, took)
			}
			s.checkUp("after the cut")
			checkNoSnapshotNoMarker(t, h)
			// The agent itself resumed them; the watchdog only acts on its
			// death, and logs when it does.
			if log, _ := os.ReadFile(filepath.Join(h.StateDir, "guard.log")); strings.Contains(string(log), "died during its freeze") {
				t.Errorf("the watchdog, not the agent, resumed the targets:\n%s", log)
			}
		})
	}
}

// TestDockerDaemonDown points the agent at a Docker socket nobody listens
// on (what a crashed dockerd leaves) and at one that does not exist: the
// backup fails naming the cause, no snapshot is written, nothing is left
// stopped or marked.
func TestDockerDaemonDown(t *testing.T) {
	d := testenv.SharedDockerd(t)
	s := newStack(t, d, "qa-down", "")
	dir, err := os.MkdirTemp("/tmp", "hq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dead := filepath.Join(dir, "docker.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	for _, c := range []struct {
		name, socket, want string
	}{
		{"refused", dead, "nothing listens on docker socket " + dead},
		{"missing", filepath.Join(dir, "absent.sock"), "docker socket " + filepath.Join(dir, "absent.sock") + " does not exist"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t, s.data, map[string]any{"mode": "stop", "containers": s.running, "docker_host": "unix://" + c.socket})
			r, stderr, err := h.backup()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || r.OK {
				t.Fatalf("backup with the daemon down: exit %v, want 1 (host failed); %+v\n%s", err, r, stderr)
			}
			if msg := r.Hosts[0].Error; !strings.Contains(msg, c.want) || !strings.Contains(msg, "nothing was stopped") {
				t.Errorf("error %q does not name the cause (%q)", msg, c.want)
			}
			checkNoSnapshotNoMarker(t, h)
			s.checkUp("after the failed backup")
		})
	}
}

// TestContainerNotFound: one configured container does not exist. The
// backup fails naming it before anything is stopped.
func TestContainerNotFound(t *testing.T) {
	d := testenv.SharedDockerd(t)
	s := newStack(t, d, "qa-nf", "")
	before := inspectState(t, d, s.running[0]).StartedAt
	h := newHost(t, s.data, map[string]any{"mode": "stop", "containers": []string{s.running[0], "qa-nf-missing"}, "docker_host": d.Host})
	r, stderr, err := h.backup()
	if err == nil || r.OK {
		t.Fatalf("backup with a missing container succeeded: %+v\n%s", r, stderr)
	}
	if msg := r.Hosts[0].Error; !strings.Contains(msg, "qa-nf-missing") || !strings.Contains(msg, "not found") {
		t.Errorf("error %q does not name the missing container", msg)
	}
	if after := inspectState(t, d, s.running[0]).StartedAt; after != before {
		t.Errorf("container %s was restarted (started %s, now %s) although the plan failed", s.running[0], before, after)
	}
	checkNoSnapshotNoMarker(t, h)
	s.checkUp("after the failed backup")
}

// TestTwoBackupsAtOnce: two pullers back up the same agent at the same
// time. The second session waits for the first (the state dir's lock), so
// no container is ever paused twice: dockerd's events alternate pause and
// unpause for each one, and both backups succeed.
func TestTwoBackupsAtOnce(t *testing.T) {
	d := testenv.SharedDockerd(t)
	s := newStack(t, d, "qa-twice", "", "pangolin", "gerbil")
	q := map[string]any{"mode": "pause", "compose_project": s.project, "docker_host": d.Host}
	a := newHost(t, s.data, q, "HAUL_AGENT_TEST_FREEZE_HOLD=1s")
	b := newHost(t, s.data, q, "HAUL_AGENT_TEST_FREEZE_HOLD=1s")
	b.writePullerConfig([]string{"/usr/bin/env", "HAUL_AGENT_TEST_FREEZE_HOLD=1s", filepath.Join(a.bins, "haul-agent"), "serve", "--config", a.AgentCfg})

	since := time.Now()
	type res struct {
		r      *backupResult
		stderr []byte
		err    error
	}
	done := make(chan res, 2)
	for _, h := range []*host{a, b} {
		go func() {
			r, stderr, err := h.backup()
			done <- res{r, stderr, err}
		}()
	}
	for range 2 {
		r := <-done
		if r.err != nil || !r.r.OK {
			t.Errorf("a concurrent backup failed: %v %+v\n%s", r.err, r.r, r.stderr)
		}
	}
	s.checkUp("after both backups")
	out := d.Docker(t, "events", "--since", since.Format(time.RFC3339Nano), "--until", time.Now().Format(time.RFC3339Nano),
		"--filter", "label=com.docker.compose.project="+s.project, "--format", "{{.Actor.Attributes.name}} {{.Action}}")
	last := map[string]string{}
	pauses := 0
	for _, l := range strings.Split(out, "\n") {
		name, action, _ := strings.Cut(l, " ")
		if action != "pause" && action != "unpause" {
			continue
		}
		if last[name] == action {
			t.Errorf("container %s got %s twice in a row:\n%s", name, action, out)
		}
		last[name] = action
		if action == "pause" {
			pauses++
		}
	}
	if pauses != 2*len(s.running) {
		t.Errorf("%d pauses, want %d (each container once per backup):\n%s", pauses, 2*len(s.running), out)
	}
}
