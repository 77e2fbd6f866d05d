// Package ptytest opens a real pseudo-terminal pair (/dev/ptmx, as
// posix_openpt/grantpt/unlockpt do) for tests of what haul shows a person
// at a terminal.
package ptytest

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// PTY is an open pair: programs write to Slave, the test reads the screen
// from Master.
type PTY struct {
	Master, Slave *os.File

	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

// Open opens a pair and starts copying what reaches the master; both
// ends are closed at the end of the test.
func Open(t testing.TB) *PTY {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN) // ptsname
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open slave: %v", err)
	}
	// A wide terminal, so nothing wraps.
	_ = unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 200})
	p := &PTY{Master: m, Slave: s, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		b := make([]byte, 4096)
		for {
			k, err := m.Read(b)
			p.mu.Lock()
			p.buf.Write(b[:k])
			p.mu.Unlock()
			if err != nil {
				return // EIO once every slave is closed
			}
		}
	}()
	t.Cleanup(func() { s.Close(); m.Close() })
	return p
}

// CloseSlave closes the test's copy of the slave (after a child got its
// own) and waits until everything written has been read.
func (p *PTY) CloseSlave() {
	p.Slave.Close()
	<-p.done
}

// Output is everything the master has read so far.
func (p *PTY) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}
