package locks

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/restic"
)

func TestStale(t *testing.T) {
	host, _ := os.Hostname()
	now := time.Now()

	// A process that has exited and been reaped: its PID is free.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := cmd.Process.Pid

	cases := []struct {
		name  string
		lock  restic.Lock
		stale bool
	}{
		{"live process here", restic.Lock{Hostname: host, PID: os.Getpid(), Time: now}, false},
		{"dead process here", restic.Lock{Hostname: host, PID: deadPID, Time: now.Add(-time.Second)}, true},
		{"PID reused after the lock was written", restic.Lock{Hostname: host, PID: os.Getpid(), Time: now}, false},
		{"dead PID on another host", restic.Lock{Hostname: "elsewhere", PID: deadPID, Time: now.Add(-time.Minute)}, false},
		{"not refreshed for 31 minutes elsewhere", restic.Lock{Hostname: "elsewhere", PID: 1, Time: now.Add(-31 * time.Minute)}, true},
	}
	// This test process started before now: a lock "written" before it
	// started means the PID was reused.
	if p := readProc(os.Getpid()); p.startOK {
		cases[2].lock.Time = p.start.Add(-time.Minute)
		cases[2].stale = true
	} else {
		t.Log("no /proc start time; skipping the PID-reuse case")
	}
	for i := range cases {
		c := &cases[i]
		why, got := Stale(&c.lock, host, now)
		if got != c.stale {
			t.Errorf("%s: stale = %v (%s), want %v", c.name, got, why, c.stale)
		}
	}
}
