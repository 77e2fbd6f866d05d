package flock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestExclusiveWaitsThenFails(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "lock")
	l, err := Acquire(ctx, p, Options{RecordPID: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := Holder(p); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("holder %q", got)
	}
	// flock belongs to the open file: a second open conflicts even in
	// the same process.
	if _, err := Acquire(ctx, p, Options{}); !errors.Is(err, ErrHeld) {
		t.Fatalf("try-once on a held lock: %v", err)
	}
	start := time.Now()
	if _, err := Acquire(ctx, p, Options{Shared: true, Wait: 120 * time.Millisecond, Poll: 10 * time.Millisecond}); !errors.Is(err, ErrHeld) {
		t.Fatalf("shared wait on an exclusive lock: %v", err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Errorf("gave up after %v, before the wait", time.Since(start))
	}
	go func() { time.Sleep(50 * time.Millisecond); l.Unlock() }()
	l2, err := Acquire(ctx, p, Options{Wait: -1, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("wait for release: %v", err)
	}
	l2.Unlock()
}

func TestSharedLocksCoexist(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "lock")
	a, err := Acquire(ctx, p, Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unlock()
	b, err := Acquire(ctx, p, Options{Shared: true})
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	b.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Acquire(ctx, p, Options{Wait: -1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("exclusive under a shared lock with a cancelled ctx: %v", err)
	}
}
