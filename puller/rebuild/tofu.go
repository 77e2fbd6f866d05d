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
	args := []string{"apply", "-input=false", "-auto-approve", "-no-color"}
	// A server that is gone is created by a plain apply; -replace of an
	// address the state no longer holds would fail.
	if pf := rb.res.Preflight; pf == nil || pf.Server != nil {
		args = append(args, "-replace="+rb.settings.TofuResource)
	}
	return append(args, rb.settings.TofuArgs...)
}

func tofuCommandLine(args []string) string { return "tofu " + strings.Join(args, " ") }

// tofuEnv is haul's environment for tofu, with the token as a variable
// (TF_VAR_hcloud_token) and what tofu's extra-files script needs to call
// `haul hostkey export`.
func (rb *rebuilder) tofuEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "TF_VAR_hcloud_token", "TF_VAR_haul_config", "TF_VAR_haul_host", "TF_VAR_haul_bin":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"TF_VAR_hcloud_token="+rb.opts.Token,
		"TF_VAR_haul_config="+rb.opts.Config.Path,
		"TF_VAR_haul_host="+rb.opts.Host.Name,
		"TF_VAR_haul_bin="+rb.opts.HaulBin,
		"TF_IN_AUTOMATION=1",
	)
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
	args := rb.tofuArgs()
	rb.logf("%s: running %s in %s", rb.opts.Host.Name, tofuCommandLine(args), s.TofuDir)
	cmd := exec.CommandContext(ctx, tofu, args...)
	cmd.Dir = s.TofuDir
	cmd.Env = rb.tofuEnv()
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
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("interrupted; tofu was asked to stop (check `tofu plan` in %s before rerunning): %w", s.TofuDir, ctx.Err())
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s in %s exited with status %d; its last lines:\n    %s\nThe old server may already be gone. Fix the cause (tofu's output above), then rerun: it continues with tofu apply",
				tofuCommandLine(args), s.TofuDir, ee.ExitCode(), strings.Join(tail.lines(), "\n    "))
		}
		return "", fmt.Errorf("run %s in %s: %w", tofu, s.TofuDir, err)
	}
	return fmt.Sprintf("%s in %s", tofuCommandLine(args), s.TofuDir), nil
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
