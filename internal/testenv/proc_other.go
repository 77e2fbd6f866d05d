//go:build !linux

package testenv

import (
	"os/exec"
	"syscall"
	"time"
)

func setDeathSignal(cmd *exec.Cmd, sig syscall.Signal) {}

type proc struct {
	pid  int
	comm string
}

func descendants(root int) []proc              { return nil }
func (p proc) alive() bool                     { return false }
func (p proc) signal(sig syscall.Signal)       {}
func waitGone(ps []proc, d time.Duration) bool { return true }
func pidAlive(pid int) bool                    { return false }

func unmountDetach(path string) {}

func readProc(pid int) (proc, bool) { return proc{}, false }
