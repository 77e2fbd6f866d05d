package rebuild

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// tofuArgs is the apply command line. It never holds the token.
func (rb *rebuilder) tofuArgs() []string {
	pf := rb.res.Preflight
	return rb.tofuArgsReplacing(pf == nil || pf.Server != nil)
}

// tofuArgsReplacing is the apply command line, with -replace or without:
// a server that is gone is created by a plain apply (-replace of an
// address the state no longer holds would fail).
func (rb *rebuilder) tofuArgsReplacing(replace bool) []string {
	args := []string{"apply", "-input=false", "-auto-approve", "-no-color"}
	if replace {
		args = append(args, "-replace="+rb.settings.TofuResource)
	}
	return append(args, rb.settings.TofuArgs...)
}

// oldServerState looks the server up again: whether the old server (as
// preflight saw it) is still there, and the ID of whatever server has
// its name now (0: none).
func (rb *rebuilder) oldServerState(ctx context.Context) (oldThere bool, current int64, err error) {
	pf := rb.res.Preflight
	srv, _, err := rb.hcloudClient().Server.GetByName(ctx, rb.settings.Server)
	if err != nil {
		return false, 0, err
	}
	if srv == nil {
		return false, 0, nil
	}
	return pf != nil && pf.Server != nil && srv.ID == pf.Server.ID, srv.ID, nil
}

func tofuCommandLine(args []string) string { return "tofu " + strings.Join(args, " ") }

// tofuEnv is haul's environment for tofu, with the token as a variable
// (TF_VAR_hcloud_token), the API endpoint preflight used (HCLOUD_ENDPOINT,
// which terraform-provider-hcloud reads; unset means Hetzner's, for both),
// the install key if install_identity_file is set (TF_VAR_install_ssh_key)
// and what tofu's extra-files script needs to call `haul hostkey export`.
func (rb *rebuilder) tofuEnv() ([]string, error) {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "TF_VAR_hcloud_token", "TF_VAR_haul_config", "TF_VAR_haul_host", "TF_VAR_haul_bin", "TF_VAR_install_ssh_key",
			"HCLOUD_TOKEN", "HCLOUD_ENDPOINT":
			continue
		}
		env = append(env, kv)
	}
	if ep := rb.settings.HcloudEndpoint; ep != "" {
		env = append(env, "HCLOUD_ENDPOINT="+ep)
	}
	key, err := rb.installKeyEnv()
	if err != nil {
		return nil, err
	}
	env = append(env, key...)
	return append(env,
		"TF_VAR_hcloud_token="+rb.opts.Token,
		"TF_VAR_haul_config="+rb.opts.Config.Path,
		"TF_VAR_haul_host="+rb.opts.Host.Name,
		"TF_VAR_haul_bin="+rb.opts.HaulBin,
		"TF_IN_AUTOMATION=1",
	), nil
}

// phaseTofu runs `tofu apply -replace=<server>` in the tofu directory,
// streaming its output. Interrupting haul interrupts tofu gracefully, so
// its state stays consistent.
func (rb *rebuilder) phaseTofu(ctx context.Context) (string, error) {
	s := rb.settings
	tofu := s.Tofu
	if pf := rb.res.Preflight; pf != nil && pf.TofuPath != "" {
		tofu = pf.TofuPath
	}
	pf := rb.res.Preflight
	replace := pf == nil || pf.Server != nil
	// A rerun after a failed apply may find the old server already
	// replaced (say, nixos-anywhere failed on the new one): then a plain
	// apply finishes the job, where -replace would destroy the new server.
	if replace && pf != nil && pf.Server != nil {
		if there, current, err := rb.oldServerState(ctx); err == nil && !there {
			replace = false
			if current != 0 {
				rb.logf("%s: server %d was already replaced by %d in an earlier run; finishing with a plain apply", rb.opts.Host.Name, pf.Server.ID, current)
			} else {
				rb.logf("%s: server %d is already gone; a plain apply creates the new one", rb.opts.Host.Name, pf.Server.ID)
			}
		}
	}
	args := rb.tofuArgsReplacing(replace)
	env, err := rb.tofuEnv()
	if err != nil {
		return "", err
	}
	rb.logf("%s: running %s in %s", rb.opts.Host.Name, tofuCommandLine(args), s.TofuDir)
	cmd := exec.CommandContext(ctx, tofu, args...)
	cmd.Dir = s.TofuDir
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 2 * time.Minute
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	tail := &lineTail{max: 25}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := redact(sc.Text(), rb.opts.Token)
			tail.add(line)
			fmt.Fprintf(rb.opts.Out, "tofu: %s\n", line)
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("interrupted; tofu was asked to stop (check `tofu plan` in %s before rerunning): %w", s.TofuDir, ctx.Err())
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s in %s exited with status %d; its last lines:\n    %s\n%s Fix the cause (tofu's output above), then rerun: it continues with tofu apply",
				tofuCommandLine(args), s.TofuDir, ee.ExitCode(), strings.Join(tail.lines(), "\n    "), rb.afterTofuFailure(ctx))
		}
		return "", fmt.Errorf("run %s in %s: %w", tofu, s.TofuDir, err)
	}
	return fmt.Sprintf("%s in %s", tofuCommandLine(args), s.TofuDir), nil
}

// afterTofuFailure says what a failed apply left, from the API.
func (rb *rebuilder) afterTofuFailure(ctx context.Context) string {
	pf := rb.res.Preflight
	if pf == nil || pf.Server == nil {
		return "There was no old server to lose."
	}
	there, current, err := rb.oldServerState(ctx)
	switch {
	case err != nil:
		return fmt.Sprintf("Whether the old server is still there is unknown (%s).", apiError(err, rb.settings.Server))
	case there:
		return fmt.Sprintf("The old server %s (id %d) is untouched: tofu stopped before replacing it.", rb.settings.Server, pf.Server.ID)
	case current != 0:
		return fmt.Sprintf("The old server %d is gone; the new server %s is %d.", pf.Server.ID, rb.settings.Server, current)
	}
	return fmt.Sprintf("The old server %d is gone and no new one exists yet.", pf.Server.ID)
}

// redact keeps the token out of haul's output even if tofu prints it.
func redact(line, secret string) string {
	if secret == "" {
		return line
	}
	return strings.ReplaceAll(line, secret, "[token]")
}

type lineTail struct {
	mu  sync.Mutex
	max int
	buf []string
}

func (t *lineTail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, s)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
}

func (t *lineTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
