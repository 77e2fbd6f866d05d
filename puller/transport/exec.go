package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Exec runs the agent as a local process, with the verb in
// SSH_ORIGINAL_COMMAND as sshd would set it. For tests, demos and local
// data.
type Exec struct {
	Argv []string
	Env  []string // extra environment
}

// Connect starts the process.
func (e *Exec) Connect(ctx context.Context, verb string) (Wire, error) {
	if len(e.Argv) == 0 {
		return nil, fmt.Errorf("exec transport: empty command")
	}
	cmd := exec.Command(e.Argv[0], e.Argv[1:]...)
	cmd.Env = append(append(os.Environ(), e.Env...), "SSH_ORIGINAL_COMMAND="+verb)
	w := &execWire{cmd: cmd, stderr: &tail{}}
	cmd.Stderr = w.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %q: %w", strings.Join(e.Argv, " "), err)
	}
	w.stdin, w.stdout = stdin, stdout
	go func() {
		<-ctx.Done()
		_ = stdin.Close()
		_ = stdout.Close()
	}()
	return w, nil
}

type execWire struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr *tail
	c      counter
}

func (w *execWire) Read(p []byte) (int, error) {
	n, err := w.stdout.Read(p)
	w.c.in.Add(int64(n))
	return n, err
}

func (w *execWire) Write(p []byte) (int, error) {
	n, err := w.stdin.Write(p)
	w.c.out.Add(int64(n))
	return n, err
}

func (w *execWire) CloseWrite() error { return w.stdin.Close() }

// Close ends the session: closing both pipes makes an agent still writing
// get EPIPE instead of blocking, and one that ignores that is killed.
func (w *execWire) Close() error {
	_ = w.stdin.Close()
	go func() { _, _ = io.Copy(io.Discard, w.stdout) }()
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = w.cmd.Process.Kill()
		err = <-done
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("agent exited with %v: %s", ee.ProcessState, w.stderr.String())
	}
	return err
}

func (w *execWire) Stats() Stats   { return w.c.stats() }
func (w *execWire) Stderr() string { return w.stderr.String() }
