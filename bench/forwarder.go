package bench

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Forwarder is a byte-counting TCP forwarder in front of sshd: every tool
// connects to its port, so each one's bytes on the wire are counted the same
// way, SSH framing, key exchange and all.
type Forwarder struct {
	ln     net.Listener
	target string
	link   Link // RTT: added by pipe, half in each direction

	up, down atomic.Int64 // client→server, server→client
	open     atomic.Int64 // connections not yet closed
	wg       sync.WaitGroup
}

// StartForwarder listens on a free loopback port and forwards to target.
func StartForwarder(target string) (*Forwarder, error) { return StartForwarderLink(target, Link{}) }

// StartForwarderLink is StartForwarder that also adds link's round-trip
// time (see Link); its rate is the kernel's to enforce.
func StartForwarderLink(target string, link Link) (*Forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &Forwarder{ln: ln, target: target, link: link}
	go f.accept()
	return f, nil
}

// Addr is the forwarder's "127.0.0.1:PORT".
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Port is the forwarder's port.
func (f *Forwarder) Port() int { return f.ln.Addr().(*net.TCPAddr).Port }

// Bytes returns the bytes moved so far in each direction.
func (f *Forwarder) Bytes() (up, down int64) { return f.up.Load(), f.down.Load() }

// Open is the number of connections still open.
func (f *Forwarder) Open() int64 { return f.open.Load() }

// waitIdle waits until no connection is open, up to timeout.
func (f *Forwarder) waitIdle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for f.open.Load() != 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// Close stops accepting and waits for open connections to end.
func (f *Forwarder) Close() {
	f.ln.Close()
	f.wg.Wait()
}

func (f *Forwarder) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.open.Add(1)
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *Forwarder) serve(c net.Conn) {
	defer f.wg.Done()
	defer f.open.Add(-1)
	defer c.Close()
	if f.link.RTT > 0 {
		// TCP's handshake: a round trip before the first byte can move.
		time.Sleep(f.link.RTT)
	}
	s, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		if f.link.RTT > 0 {
			delayPipe(dst, src, n, f.link.RTT/2)
		} else {
			copyHalf(dst, src, n)
		}
		done <- struct{}{}
	}
	go pipe(s, c, &f.up)
	go pipe(c, s, &f.down)
	<-done
	<-done
}

// copyHalf copies src to dst until either ends, counting the bytes in n
// (nil: not counted), then passes the half-close on, as a direct
// connection would.
func copyHalf(dst, src net.Conn, n *atomic.Int64) {
	buf := make([]byte, 64<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if n != nil {
				n.Add(int64(k))
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// segment is bytes read from one side, due at the other.
type segment struct {
	due time.Time
	b   []byte
}

// delayQueue bounds the bytes a delaying pipe holds: 64 reads of up to
// 64 KiB, 4 MiB, Linux's default largest TCP send buffer.
const delayQueue = 64

// delayPipe copies src to dst, each byte delayed by d: a reader stamps what
// it reads, a writer passes it on when due. A full queue stops the reader,
// so a slow receiver holds the sender back as TCP would.
func delayPipe(dst, src net.Conn, n *atomic.Int64, d time.Duration) {
	q := make(chan segment, delayQueue)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			k, err := src.Read(buf)
			if k > 0 {
				n.Add(int64(k))
				q <- segment{due: time.Now().Add(d), b: buf[:k]}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for s := range q {
		if failed {
			continue // drain, so the reader is not blocked
		}
		if w := time.Until(s.due); w > 0 {
			time.Sleep(w)
		}
		if _, err := dst.Write(s.b); err != nil {
			failed = true
			_ = src.Close() // the reader's next Read fails
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
