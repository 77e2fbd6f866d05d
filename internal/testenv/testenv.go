// Package testenv lets tests anywhere in the module run against real external
// components — OpenSSH's sshd with forced-command keys, a private dockerd, the
// reference restic CLI and freshly built haul binaries — and fail (in CI) or
// skip (elsewhere) when one is not installed.
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Require makes sure the external tool is installed: tool is a command name,
// looked up on PATH and in /usr/sbin and /sbin, or a path containing a slash.
// When it is missing, Require reports it with the install hint — t.Fatalf when
// $CI is set (CI must never skip), t.Skipf otherwise.
func Require(t testing.TB, tool, installHint string) {
	t.Helper()
	if _, ok := lookTool(tool); ok {
		return
	}
	missing(t, tool, installHint)
}

// missing reports tool as unavailable, unconditionally.
func missing(t testing.TB, tool, installHint string) {
	t.Helper()
	msg := fmt.Sprintf("testenv: %s is not available; install it with: %s", tool, installHint)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set, so this test must not be skipped)", msg)
		return
	}
	reportSkip(t, tool, installHint)
	t.Skipf("%s (skipping; with CI set this is a failure)", msg)
}

// reportSkip appends "tool<TAB>hint<TAB>test" to $HAUL_SKIP_REPORT, so
// `make test` can say loudly how many integration tests did not run and
// why, instead of a quiet "ok".
func reportSkip(t testing.TB, tool, installHint string) {
	path := os.Getenv("HAUL_SKIP_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%s\t%s\n", tool, installHint, t.Name())
}

// lookTool finds a command on PATH, in the sbin directories (not always on a
// non-root user's PATH), or at an explicit path.
func lookTool(tool string) (string, bool) {
	if strings.ContainsRune(tool, '/') {
		fi, err := os.Stat(tool)
		return tool, err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
	}
	if p, err := exec.LookPath(tool); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// ModuleRoot returns the directory holding go.mod, found by walking up from
// the working directory (a test's working directory is its package dir).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("no go.mod found above the working directory")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatalf("testenv: module root: %v", rootErr)
	}
	return rootDir
}

// processDir is a temporary directory shared by everything this test process
// builds (binaries, image tarballs). It is named after the pid, so that a
// later process can remove the leftovers of one that died without cleaning up.
var (
	procDirOnce sync.Once
	procDir     string
	procDirErr  error
)

const procDirPrefix = "haul-testenv-"

func processDir(t testing.TB) string {
	t.Helper()
	procDirOnce.Do(func() {
		removeStaleProcessDirs()
		procDir, procDirErr = os.MkdirTemp("", fmt.Sprintf("%s%d-", procDirPrefix, os.Getpid()))
	})
	if procDirErr != nil {
		t.Fatalf("testenv: %v", procDirErr)
	}
	return procDir
}

func removeStaleProcessDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), procDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), procDirPrefix)
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || pidAlive(pid) {
			continue
		}
		_ = os.RemoveAll(m)
	}
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Binaries returns a directory holding the haul and haul-agent executables.
// If $HAUL_BIN_DIR is set (CI builds them once into bin/), it must contain
// both. Otherwise ./agent/cmd/haul-agent and ./puller/cmd/haul are built once
// per test process into a temporary directory shared by the process.
func Binaries(t testing.TB) (dir string) {
	t.Helper()
	if d := os.Getenv("HAUL_BIN_DIR"); d != "" {
		for _, name := range []string{"haul", "haul-agent"} {
			fi, err := os.Stat(filepath.Join(d, name))
			if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				t.Fatalf("testenv: HAUL_BIN_DIR=%s has no executable %s (build with `go build -o bin/ ./...`, or unset HAUL_BIN_DIR)", d, name)
			}
		}
		return d
	}
	root := ModuleRoot(t)
	pdir := processDir(t)
	binOnce.Do(func() {
		dir := filepath.Join(pdir, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			binErr = err
			return
		}
		cmd := exec.Command(goTool(), "build", "-o", dir+string(filepath.Separator),
			"./agent/cmd/haul-agent", "./puller/cmd/haul")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./agent/cmd/haul-agent ./puller/cmd/haul: %v\n%s\n(has `go generate ./...` been run?)", err, out)
			return
		}
		binDir = dir
	})
	if binErr != nil {
		t.Fatalf("testenv: %v", binErr)
	}
	return binDir
}

// goTool returns the go command; `go test` puts $GOROOT/bin first on PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// ResticBin returns the path of the reference restic CLI: $HAUL_RESTIC if
// set, else <module root>/bin/restic if it exists, else restic on PATH.
func ResticBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HAUL_RESTIC"); p != "" {
		if _, ok := lookTool(p); !ok {
			t.Fatalf("testenv: HAUL_RESTIC=%s is not an executable file", p)
		}
		return p
	}
	if p, ok := lookTool(filepath.Join(ModuleRoot(t), "bin", "restic")); ok {
		return p
	}
	if p, err := exec.LookPath("restic"); err == nil {
		return p
	}
	missing(t, "restic", "go build -o bin/restic github.com/restic/restic/cmd/restic")
	return ""
}

// Restic runs the restic CLI on repo with the password in passwordFile and a
// cache under t.TempDir(), and returns its stdout. A non-zero exit fails the
// test with the arguments, stdout and stderr.
func Restic(t testing.TB, repo, passwordFile string, args ...string) []byte {
	t.Helper()
	stdout, stderr, err := ResticErr(t, repo, passwordFile, args...)
	if err != nil {
		t.Fatalf("testenv: restic %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// ResticErr is like Restic but returns stdout, stderr and the error instead
// of failing the test.
func ResticErr(t testing.TB, repo, passwordFile string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	bin := ResticBin(t)
	cmd := exec.Command(bin, args...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RESTIC_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"RESTIC_REPOSITORY="+repo,
		"RESTIC_PASSWORD_FILE="+passwordFile,
		"RESTIC_CACHE_DIR="+filepath.Join(t.TempDir(), "restic-cache"),
	)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

// tail returns the last n bytes of a file, for failure messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := fi.Size() - n
	if off < 0 {
		off = 0
	}
	b := make([]byte, fi.Size()-off)
	_, _ = f.ReadAt(b, off)
	return string(b)
}

// Haul runs the haul binary from Binaries with --config cfg and returns
// what it printed and its exit code; failing to run it at all fails the
// test.
func Haul(t testing.TB, cfg string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(Binaries(t), "haul"), append([]string{"--config", cfg}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return o.String(), e.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run haul %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), 0
}

// Slow skips an end-to-end test under -short (make test-short, the edit
// loop), saying why it is slow; make test, and so CI, always runs it.
func Slow(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: %s; make test runs it", why)
	}
}
