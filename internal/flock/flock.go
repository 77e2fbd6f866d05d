// Package flock takes advisory flock(2) locks on files, waiting as long as
// the caller allows. The agent's session lock, its freeze guard and the
// sftp view's shared hold, and the puller's rebuild lock use it.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ErrHeld is returned (wrapped) when another holder kept the lock for as
// long as the caller was willing to wait.
var ErrHeld = errors.New("lock is held by another process")

// Options say how to lock.
type Options struct {
	Shared bool // a shared lock; otherwise exclusive
	// Wait bounds the wait for a held lock: 0 tries once, a negative
	// value waits until ctx is done.
	Wait time.Duration
	// Poll is the interval between attempts (default 50ms): flock has no
	// timeout of its own.
	Poll time.Duration
	// RecordPID writes this process's pid into the file once the lock is
	// held, for Holder to name in messages (exclusive locks only).
	RecordPID bool
}

// Lock is a held lock.
type Lock struct{ f *os.File }

// Unlock releases the lock and closes its file.
func (l *Lock) Unlock() {
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	l.f.Close()
}

// Acquire locks path, creating it (0600) if missing.
func Acquire(ctx context.Context, path string, opts Options) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	how := unix.LOCK_EX
	if opts.Shared {
		how = unix.LOCK_SH
	}
	poll := opts.Poll
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	deadline := time.Now().Add(opts.Wait)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			if opts.RecordPID && !opts.Shared {
				_ = f.Truncate(0)
				_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			}
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if opts.Wait == 0 || (opts.Wait > 0 && time.Now().After(deadline)) {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrHeld)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Holder returns the pid the holder of path recorded, or "unknown".
func Holder(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}
