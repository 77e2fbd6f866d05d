package backup

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/puller/transport"
)

// ErrTimeout is wrapped by the errors of a session dropped for silence or
// for running past its deadline.
var ErrTimeout = fmt.Errorf("timed out")

// TimeoutError says which timeout dropped a host's session.
type TimeoutError struct {
	Key   string        // idle_timeout or deadline
	After time.Duration // its value
	What  string
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s (%s = %s); the session was dropped and no snapshot written (raise %s in the host's [hosts.limits] table if the agent is just slow)",
		e.What, e.Key, e.After, e.Key)
}

func (e *TimeoutError) Unwrap() error { return ErrTimeout }

// watchedWire cancels the session when a read or write has been waiting on
// the agent longer than the idle timeout. Time the puller spends on its own
// work (storing blobs) never counts: only time blocked on the peer.
type watchedWire struct {
	transport.Wire
	waitingSince atomic.Int64 // unix ns a blocked call started; 0 when none
	writingSince atomic.Int64
}

func (w *watchedWire) Read(p []byte) (int, error) {
	w.waitingSince.Store(time.Now().UnixNano())
	n, err := w.Wire.Read(p)
	w.waitingSince.Store(0)
	return n, err
}

func (w *watchedWire) Write(p []byte) (int, error) {
	w.writingSince.Store(time.Now().UnixNano())
	n, err := w.Wire.Write(p)
	w.writingSince.Store(0)
	return n, err
}

// blockedFor is how long the oldest call in progress has been waiting.
func (w *watchedWire) blockedFor(now time.Time) time.Duration {
	var d time.Duration
	for _, since := range []int64{w.waitingSince.Load(), w.writingSince.Load()} {
		if since != 0 {
			d = max(d, now.Sub(time.Unix(0, since)))
		}
	}
	return d
}

// watch cancels ctx with a TimeoutError when w has been blocked on the
// agent for idle; it returns when ctx ends.
func watch(ctx context.Context, cancel context.CancelCauseFunc, w *watchedWire, idle time.Duration) {
	tick := max(idle/20, 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if d := w.blockedFor(now); d >= idle {
				cancel(&TimeoutError{Key: "idle_timeout", After: idle,
					What: fmt.Sprintf("the agent sent nothing and read nothing for %s", d.Round(time.Millisecond))})
				return
			}
		}
	}
}
