// Package pipetest connects the puller to an in-process peer over pipes,
// so the protocol's tests run the real agent code (or a hostile peer)
// without a process, sshd or network. Tests only.
package pipetest

import (
	"context"
	"io"

	"github.com/haulproject/haul/puller/transport"
)

// Peer is the agent side of one session of verb: what the puller writes
// arrives on in, what the peer writes to out reaches the puller.
type Peer func(ctx context.Context, verb string, in io.Reader, out io.Writer) error

// Connect runs the peer for one session, in its own goroutine. As the
// real transports do, the session ends with its context. The wire's Close
// waits for the peer and returns its error.
func (p Peer) Connect(ctx context.Context, verb string) (transport.Wire, error) {
	toAgent, fromPuller := io.Pipe()
	toPuller, fromAgent := io.Pipe()
	w := &wire{Reader: toPuller, WriteCloser: fromPuller, done: make(chan error, 1)}
	stop := context.AfterFunc(ctx, func() {
		toPuller.CloseWithError(ctx.Err())
		toAgent.CloseWithError(ctx.Err())
	})
	go func() {
		err := p(ctx, verb, toAgent, fromAgent)
		fromAgent.CloseWithError(io.EOF)
		toAgent.Close()
		stop()
		w.done <- err
	}()
	return w, nil
}

type wire struct {
	io.Reader
	io.WriteCloser
	done chan error
}

func (w *wire) CloseWrite() error { return w.WriteCloser.Close() }

func (w *wire) Close() error {
	w.WriteCloser.Close()
	go func() { _, _ = io.Copy(io.Discard, w.Reader) }()
	return <-w.done
}

func (w *wire) Stats() transport.Stats { return transport.Stats{} }
func (w *wire) Stderr() string         { return "" }
