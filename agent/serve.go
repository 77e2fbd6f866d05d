// Package agent is haul-agent: the program sshd runs as the forced command
// of the NAS's key. It quiesces the services, keeps a consistent mirror of
// the data paths, streams the manifest and the chunks the puller asks for,
// and applies restores.
package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/haulproject/haul/agent/restore"
	"io"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/agent/sftpview"
	"github.com/haulproject/haul/internal/flock"
	"github.com/haulproject/haul/internal/version"
	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
	"golang.org/x/sys/unix"
)

// Server runs one session over a pair of streams (sshd's pipes).
type Server struct {
	Config       *Config
	AllowRestore bool
	In           io.Reader
	Out          io.Writer
	Log          io.Writer // stderr: sshd forwards it to the puller

	// Quiescer overrides the one built from the config (tests).
	Quiescer quiesce.Quiescer
	// MaxVersion caps the protocol version (0: the newest); tests use it
	// to act as an older agent.
	MaxVersion int
	// NoProgress acts as an agent from before progress frames (tests): it
	// neither lists proto.FeatureProgress nor sends them.
	NoProgress bool
	// NoProgressCounts acts as an agent from before counts in progress
	// frames (tests): it does not list proto.FeatureProgressCounts.
	NoProgressCounts bool
	// ProgressInterval is how often the mirror syncs report their counts
	// (0: every proto.MinCountsInterval, 250 ms, as often as the puller
	// redraws its progress line). Tests set it shorter; otherwise it is
	// never under that, for a puller refuses more than
	// proto.MaxCountsPerSecond.
	ProgressInterval time.Duration
}

// frame is one received frame with its own copy of the payload.
type frame struct {
	t       proto.Type
	payload []byte
	err     error
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, "haul-agent: "+format+"\n", args...)
	}
}

// Serve runs the session for verb until the puller is done, the streams
// close or ctx is cancelled.
func (s *Server) Serve(ctx context.Context, verb string) error {
	switch verb {
	case VerbVersion:
		_, err := fmt.Fprintf(s.Out, "haul-agent %s protocol %d-%d\n", version.Version, proto.MinVersion, proto.Version)
		return err
	case VerbSFTP:
		// read-only whatever AllowRestore says
		return sftpview.Serve(ctx, sftpview.Mirror{Host: s.Config.Host, Dir: s.Config.MirrorDir(), DataPaths: s.Config.DataPaths, LockPath: s.Config.lockPath()}, s.In, s.Out)
	case VerbBackup:
	case VerbRestore:
		if !s.AllowRestore {
			return fmt.Errorf("restore refused: this key's forced command does not allow restore (add --allow-restore to the restore key's entry, never to the backup key's)")
		}
	default:
		return fmt.Errorf("verb %q is not served here", verb)
	}
	if err := os.MkdirAll(s.Config.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Chmod(s.Config.StateDir, 0o700); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn := &proto.Conn{R: proto.NewReader(s.In), W: proto.NewWriter(s.Out)}
	// A short read-ahead: during a restore frames carry chunks of up to 8 MiB,
	// and the VPS is small.
	frames := make(chan frame, 2)
	go func() {
		defer close(frames)
		for {
			t, p, err := conn.R.Read()
			if err != nil {
				frames <- frame{err: err}
				cancel() // the puller is gone or broken: stop work, thaw
				return
			}
			select {
			case frames <- frame{t: t, payload: append([]byte(nil), p...)}:
			case <-ctx.Done():
				return
			}
		}
	}()

	sess := &session{Server: s, conn: conn, frames: frames, verb: verb}
	err := sess.run(ctx)
	if err != nil {
		var pe *proto.Error
		if !errors.As(err, &pe) {
			conn.SendError(errorCode(err), "%s: %v", s.Config.Host, err)
		}
	}
	return err
}

func errorCode(err error) string {
	var ce *proto.CodedError
	switch {
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, proto.ErrFrame):
		return proto.CodeProtocol
	case errors.Is(err, context.Canceled):
		return proto.CodeCancelled
	case errors.Is(err, unix.ENOSPC):
		return proto.CodeNoSpace
	}
	return proto.CodeInternal
}

type session struct {
	*Server
	conn    *proto.Conn
	frames  <-chan frame
	verb    string
	version int // negotiated protocol version
	// committed reports the mirror's deferred fsync after a freeze.
	committed chan error
	pol       chunker.Pol
	// progress: both hellos list proto.FeatureProgress, so the puller
	// takes progress frames.
	progress bool
	// progressCounts: both hellos also list proto.FeatureProgressCounts,
	// so progress frames may carry counts.
	progressCounts bool
	// wireSent is the bytes the writer has written so far (read by the
	// chunk sender to see how fast the wire drains).
	wireSent atomic.Int64
}

// next returns the next frame or the reason there is none.
func (s *session) next(ctx context.Context) (proto.Type, []byte, error) {
	select {
	case f, ok := <-s.frames:
		if !ok {
			return 0, nil, io.ErrUnexpectedEOF
		}
		if f.err == io.EOF {
			return 0, nil, fmt.Errorf("puller closed the connection: %w", context.Canceled)
		}
		if f.err != nil {
			return 0, nil, f.err
		}
		return f.t, f.payload, nil
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// pullerReported is the error a TError from the puller ends the session with.
func pullerReported(payload []byte) error {
	var e proto.Error
	_ = proto.Decode(proto.TError, payload, &e)
	return fmt.Errorf("puller reported: %w", &e)
}

func (s *session) run(ctx context.Context) error {
	t, p, err := s.next(ctx)
	if err != nil {
		return err
	}
	var hello proto.Hello
	if err := proto.DecodeAs(t, p, proto.THello, &hello); err != nil {
		return err
	}
	chosen, maxV := 0, proto.Version
	if s.MaxVersion > 0 {
		maxV = min(maxV, s.MaxVersion)
	}
	for _, v := range hello.Versions {
		if v >= proto.MinVersion && v <= maxV && v > chosen {
			chosen = v
		}
	}
	if chosen == 0 {
		return proto.Errorf(proto.CodeVersion, "no common protocol version: puller offers %v, agent %s speaks %d-%d; upgrade the older side", hello.Versions, version.Version, proto.MinVersion, maxV)
	}
	s.version = chosen
	if hello.ChunkerPolynomial != "" {
		pol, err := strconv.ParseUint(hello.ChunkerPolynomial, 16, 64)
		if err != nil || !chunker.Pol(pol).Irreducible() {
			return proto.Errorf(proto.CodeProtocol, "chunker polynomial %q is not an irreducible polynomial", hello.ChunkerPolynomial)
		}
		s.pol = chunker.Pol(pol)
	}
	reply := proto.HelloReply{
		Version:        chosen,
		Agent:          "haul-agent " + version.Version,
		Host:           s.Config.Host,
		Verb:           s.verb,
		DataPaths:      s.Config.DataPaths,
		RestoreAllowed: s.AllowRestore,
		Ready:          s.Config.Ready(),
		Features:       []string{proto.FeatureExclude},
	}
	if !s.NoProgress {
		reply.Features = append(reply.Features, proto.FeatureProgress)
		s.progress = slices.Contains(hello.Features, proto.FeatureProgress)
		if !s.NoProgressCounts {
			reply.Features = append(reply.Features, proto.FeatureProgressCounts)
			s.progressCounts = s.progress && slices.Contains(hello.Features, proto.FeatureProgressCounts)
		}
	}
	if err := s.conn.Send(proto.THelloReply, &reply); err != nil {
		return err
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	// A restore killed mid-swap is finished before anything else reads or
	// freezes the data, so no session sees some paths restored and others not.
	if err := restore.FinishSwap(s.Config.restoreHost(), s.logf); err != nil {
		return err
	}
	if s.verb == VerbRestore {
		return s.restore(ctx)
	}
	return s.backup(ctx)
}

// lock takes the state dir's lock so two sessions never freeze or swap at
// once; a second session waits up to lock_timeout.
func (s *session) lock(ctx context.Context) (func(), error) {
	path, wait := s.Config.lockPath(), s.Config.LockTimeout.Or(10*time.Minute)
	l, err := flock.Acquire(ctx, path, flock.Options{Wait: wait, Poll: 100 * time.Millisecond, RecordPID: true})
	if errors.Is(err, flock.ErrHeld) {
		return nil, proto.Errorf(proto.CodeBusy, "another haul session holds %s (pid %s); it did not finish within %v", path, flock.Holder(path), wait)
	}
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}

func (s *session) quiescer() (quiesce.Quiescer, error) {
	if s.Quiescer != nil {
		return s.Quiescer, nil
	}
	q := s.Config.Quiesce
	return quiesce.New(quiesce.Options{
		Mode: q.Mode, Containers: q.Containers, ComposeProject: q.ComposeProject,
		Units: q.Units, DockerHost: q.DockerHost, Timeout: q.Timeout.Or(30 * time.Second),
	})
}
