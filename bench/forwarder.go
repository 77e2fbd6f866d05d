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

	up, down atomic.Int64 // client→server, server→client
	open     atomic.Int64 // connections not yet closed
	wg       sync.WaitGroup
}

// StartForwarder listens on a free loopback port and forwards to target.
func StartForwarder(target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &Forwarder{ln: ln, target: target}
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
	s, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		buf := make([]byte, 64<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				n.Add(int64(k))
				if _, werr := dst.Write(buf[:k]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		// Pass the half-close on, as a direct connection would.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(s, c, &f.up)
	go pipe(c, s, &f.down)
	<-done
	<-done
}
