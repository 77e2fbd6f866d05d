// Package clitest runs the real haul and haul-agent binaries against a
// repository in a temporary directory, for the puller's command-level
// tests (forget, status, notifications, locks, TrueNAS).
package clitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/internal/repotest"
	"github.com/haulproject/haul/puller/repo"
)

// Env is one test's haul setup: a repository, its password file and a
// config file, all under Dir.
type Env struct {
	T            testing.TB
	Dir          string
	Haul         string // haul executable
	Agent        string // haul-agent executable
	Repo         string
	PasswordFile string
	Config       string
	// LockWait is the config's lock_wait (default 20s).
	LockWait string
}

// New prepares an Env and initialises its repository as `haul init` does,
// but in this process with restic's low-cost KDF parameters, which the
// repository's key file keeps: every haul and restic run that opens it
// then derives its key in microseconds instead of restic's calibrated half
// second. (`haul init` itself is tested in puller/cmd/haul.)
func New(t testing.TB) *Env {
	t.Helper()
	e := NewBare(t)
	repotest.LowCostKDF(t)
	pw, err := os.ReadFile(e.PasswordFile)
	Must(t, err)
	r, err := repo.Init(context.Background(), e.Repo, strings.TrimSpace(string(pw)), nil)
	Must(t, err)
	r.Close()
	return e
}

// NewBare prepares an Env without creating the repository.
func NewBare(t testing.TB) *Env {
	t.Helper()
	bins := testenv.Binaries(t)
	dir := t.TempDir()
	e := &Env{
		T: t, Dir: dir,
		Haul: filepath.Join(bins, "haul"), Agent: filepath.Join(bins, "haul-agent"),
		Repo: filepath.Join(dir, "repo"), PasswordFile: filepath.Join(dir, "password"),
		Config: filepath.Join(dir, "haul.toml"), LockWait: "20s",
	}
	Must(t, os.WriteFile(e.PasswordFile, []byte("correct horse battery staple\n"), 0o600))
	e.WriteConfig("")
	return e
}

// WriteConfig writes the config: repository, password and cache settings
// followed by body (retention, notify, hosts).
func (e *Env) WriteConfig(body string) {
	e.T.Helper()
	head := fmt.Sprintf("repository = %q\npassword_file = %q\ncache_dir = %q\nlock_wait = %q\n",
		e.Repo, e.PasswordFile, filepath.Join(e.Dir, "cache"), e.LockWait)
	Must(e.T, os.WriteFile(e.Config, []byte(head+body), 0o600))
}

// AgentCommand writes a haul-agent config serving dataDir as host and
// returns the exec-transport command for it, as a TOML array.
func (e *Env) AgentCommand(host, dataDir string) string {
	e.T.Helper()
	return TOMLArray(e.AgentArgv(host, dataDir)...)
}

// AgentArgv writes a haul-agent config serving dataDir as host and
// returns the command that serves it.
func (e *Env) AgentArgv(host, dataDir string) []string {
	e.T.Helper()
	cfg := filepath.Join(e.Dir, "agent-"+host+".json")
	b, err := json.Marshal(map[string]any{
		"host": host, "data_paths": []string{dataDir},
		"state_dir": filepath.Join(e.Dir, "agent-state-"+host),
	})
	Must(e.T, err)
	Must(e.T, os.WriteFile(cfg, b, 0o600))
	return []string{e.Agent, "serve", "--config", cfg}
}

// TOMLArray renders argv as a TOML array of strings.
func TOMLArray(argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// Result is a finished haul run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs haul with the Env's config and returns its output and exit
// code; it fails the test only if haul could not be run or timed out.
func (e *Env) Run(args ...string) Result {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Haul, append([]string{"--config", e.Config}, args...)...)
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	res := Result{Stdout: o.String(), Stderr: s.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		res.Code = ee.ExitCode()
	default:
		e.T.Fatalf("haul %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o.String(), s.String())
	}
	return res
}

// MustHaul runs haul and fails the test unless it exits 0.
func (e *Env) MustHaul(args ...string) Result {
	e.T.Helper()
	r := e.Run(args...)
	if r.Code != 0 {
		e.T.Fatalf("haul %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// Restic runs the reference restic CLI on the Env's repository.
func (e *Env) Restic(args ...string) []byte {
	e.T.Helper()
	return testenv.Restic(e.T, e.Repo, e.PasswordFile, args...)
}

// WriteRandom writes n random bytes to path and returns them.
func WriteRandom(t testing.TB, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	Must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	Must(t, os.WriteFile(path, b, 0o644))
	return b
}

// Locks lists the repository's lock files.
func (e *Env) Locks() []string {
	e.T.Helper()
	ents, err := os.ReadDir(filepath.Join(e.Repo, "locks"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.T.Fatal(err)
	}
	var ids []string
	for _, d := range ents {
		ids = append(ids, d.Name())
	}
	return ids
}

// Must fails the test on err.
var Must = testenv.Must
