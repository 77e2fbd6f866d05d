package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TB lets a command (haul-bench) use internal/testenv's helpers, which take a
// testing.TB: Fatalf panics with a Fatal that Main recovers, Cleanup
// functions run when Close is called, and TempDir makes directories under
// one root. Methods testenv does not call are not implemented (the embedded
// nil testing.TB would panic).
type TB struct {
	testing.TB
	root string

	mu       sync.Mutex
	cleanups []func()
	n        int
}

// Fatal is the panic value of TB.Fatalf.
type Fatal struct{ Msg string }

func (f Fatal) Error() string { return f.Msg }

// NewTB makes a TB whose temporary directories live under root.
func NewTB(root string) *TB { return &TB{root: root} }

func (t *TB) Helper()             {}
func (t *TB) Name() string        { return "haul-bench" }
func (t *TB) Failed() bool        { return false }
func (t *TB) Logf(string, ...any) {}
func (t *TB) Fatalf(format string, args ...any) {
	panic(Fatal{Msg: fmt.Sprintf(format, args...)})
}
func (t *TB) Fatal(args ...any) { panic(Fatal{Msg: strings.TrimSpace(fmt.Sprintln(args...))}) }
func (t *TB) Errorf(format string, args ...any) {
	panic(Fatal{Msg: fmt.Sprintf(format, args...)})
}

// Skipf is fatal for a benchmark: a missing tool makes the numbers
// incomplete.
func (t *TB) Skipf(format string, args ...any) { t.Fatalf(format, args...) }

func (t *TB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *TB) TempDir() string {
	t.mu.Lock()
	t.n++
	n := t.n
	t.mu.Unlock()
	dir := filepath.Join(t.root, fmt.Sprintf("tmp%03d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	return dir
}

// Close runs the cleanups, last registered first.
func (t *TB) Close() {
	t.mu.Lock()
	cs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}
