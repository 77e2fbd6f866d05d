// Package transport connects the puller to an agent. The backup and restore
// logic sees only a Wire; whether it runs over SSH or a local process is
// this package's business, so every protocol test can run over exec and the
// same tests again over a real sshd.
package transport

import (
	"context"
	"io"
	"strings"
	"sync"
	"sync/atomic"
)

// Connecter starts an agent session for a verb (backup, restore).
type Connecter interface {
	Connect(ctx context.Context, verb string) (Wire, error)
}

// Wire is one session's byte stream.
type Wire interface {
	io.Reader
	io.Writer
	// CloseWrite signals end of input to the agent.
	CloseWrite() error
	// Close ends the session and waits for the agent to exit; it returns
	// the agent's exit error, if any.
	Close() error
	// Stats counts bytes on the transport: for SSH, the TCP connection
	// including encryption and handshake.
	Stats() Stats
	// Stderr returns the tail of what the agent wrote to stderr.
	Stderr() string
}

// Stats are byte counts of a session's transport.
type Stats struct {
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
}

type counter struct{ in, out atomic.Int64 }

func (c *counter) stats() Stats { return Stats{BytesIn: c.in.Load(), BytesOut: c.out.Load()} }

// tail keeps the last few KiB written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 8 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailSize {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-tailSize:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
