package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/internal/version"
	"github.com/haulproject/haul/proto"
)

// Session is an agent session past the hello exchange: every verb starts
// with Dial.
type Session struct {
	Wire  Wire
	Conn  *proto.Conn
	Reply proto.HelloReply
}

// Hello is what the puller offers in its hello.
type Hello struct {
	// Polynomial is the repository's chunker polynomial (hex); a backup's
	// walk needs it, other verbs leave it empty.
	Polynomial string
	// MaxVersion caps the protocol versions offered (0: proto.Version);
	// tests use it to act as an older puller.
	MaxVersion int
	// Features are the optional parts of the protocol the caller takes
	// (proto.FeatureProgress: it handles the agent's progress frames).
	Features []string
}

// Versions lists the protocol versions h offers, oldest first.
func (h Hello) Versions() []int {
	maxV := proto.Version
	if h.MaxVersion > 0 {
		maxV = min(maxV, h.MaxVersion)
	}
	var vs []int
	for v := proto.MinVersion; v <= maxV; v++ {
		vs = append(vs, v)
	}
	return vs
}

// Dial starts a session for verb and exchanges hellos: it offers every
// protocol version from proto.MinVersion up to h's cap, and checks that
// the agent answered for verb with one of them. An agent that shares no
// version answers with the `version` error PROTOCOL.md defines, which is
// returned as a *proto.Error. On failure the session is closed, and the
// error carries what the agent said on stderr.
func Dial(ctx context.Context, c Connecter, verb string, h Hello) (*Session, error) {
	w, err := c.Connect(ctx, verb)
	if err != nil {
		return nil, err
	}
	s := &Session{Wire: w, Conn: proto.NewConn(w, w)}
	if err := s.hello(verb, h); err != nil {
		_ = w.CloseWrite()
		// An agent whose session ends after the hello complains on
		// stderr and exits non-zero; the hello's error is the news.
		_ = w.Close()
		return nil, s.AgentSaid(err)
	}
	return s, nil
}

func (s *Session) hello(verb string, h Hello) error {
	versions := h.Versions()
	msg := proto.Hello{Versions: versions, ChunkerPolynomial: h.Polynomial, Client: "haul " + version.Version, Features: h.Features}
	if err := s.Conn.Send(proto.THello, &msg); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	if err := s.Conn.Expect(proto.THelloReply, &s.Reply); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if s.Reply.Verb != verb {
		return fmt.Errorf("agent answered verb %s to a %s request", escape.Quote(s.Reply.Verb), verb)
	}
	if !slices.Contains(versions, s.Reply.Version) {
		return fmt.Errorf("agent chose protocol version %d, not one of %v", s.Reply.Version, versions)
	}
	return nil
}

// Both says whether the caller's hello and the agent's reply both list
// feature.
func (s *Session) Both(h Hello, feature string) bool {
	return slices.Contains(h.Features, feature) && slices.Contains(s.Reply.Features, feature)
}

// AgentSaid adds the tail of the agent's stderr to err, unless err is the
// agent's own error report (which already says it) or there is none.
func (s *Session) AgentSaid(err error) error {
	var pe *proto.Error
	if err == nil || errors.As(err, &pe) {
		return err
	}
	if tail := s.Wire.Stderr(); tail != "" {
		return fmt.Errorf("%w\nagent said: %s", err, escape.Text(tail))
	}
	return err
}
