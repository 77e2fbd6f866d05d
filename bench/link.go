package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haulproject/haul/internal/testenv"
)

// Link is the network path between the "NAS" and the "VPS". The zero Link
// is loopback, unshaped.
//
// A shaped link is made on this machine: a network namespace the bench
// creates, joined to the host by a veth pair whose two ends each carry a tbf
// qdisc at Rate (the kernel shapes both directions). Every SSH connection of
// every tool crosses it: tool → the byte-counting forwarder on 127.0.0.1 →
// veth → a relay listening inside the namespace → sshd. This kernel has no
// sch_netem, so the latency is added in user space by the forwarder: each
// byte is held RTT/2 in each direction before it is passed on (a queue
// bounded at 4 MiB, Linux's default largest TCP send buffer), and each new
// connection waits one RTT before its first byte moves, as TCP's handshake
// does. What this leaves out: the TCP connection that crosses the veth sees
// no RTT itself, so slow start and loss recovery run at loopback speed (a
// real 40 ms path needs a few round trips to reach full rate, ~0.2 s per
// connection at most); the bench measures what it built (MeasureLink) and
// prints it beside the numbers.
type Link struct {
	Rate int64         // bits per second, each direction; 0: unshaped
	RTT  time.Duration // round-trip time added to every connection
}

// Profiles are the WAN profiles the docs publish: a home line and a
// faster one.
var Profiles = []Link{
	{Rate: 20_000_000, RTT: 40 * time.Millisecond},
	{Rate: 100_000_000, RTT: 20 * time.Millisecond},
}

// Loopback says whether l is the unshaped loopback path.
func (l Link) Loopback() bool { return l.Rate == 0 && l.RTT == 0 }

// Name is the link as the -link flag writes it: "20M-40ms", or "lo".
func (l Link) Name() string {
	if l.Loopback() {
		return "lo"
	}
	rate := "unlimited"
	if l.Rate > 0 {
		rate = strconv.FormatInt(l.Rate/1_000_000, 10) + "M"
	}
	return fmt.Sprintf("%s-%dms", rate, l.RTT.Milliseconds())
}

// String describes l for a reader.
func (l Link) String() string {
	if l.Loopback() {
		return "loopback, unshaped"
	}
	rate := "no rate limit"
	if l.Rate > 0 {
		rate = fmt.Sprintf("%d Mbit/s each way", l.Rate/1_000_000)
	}
	return fmt.Sprintf("%s, %d ms round trip", rate, l.RTT.Milliseconds())
}

// ParseLink reads "lo" or "RATE-RTT": "20M-40ms", "100M-20ms" (rate in
// Mbit/s; "0M" for no rate limit).
func ParseLink(s string) (Link, error) {
	if s == "" || s == "lo" {
		return Link{}, nil
	}
	rate, rtt, ok := strings.Cut(s, "-")
	bad := fmt.Errorf("-link %q: want lo or RATE-RTT, e.g. 20M-40ms (Mbit/s each way, round-trip time)", s)
	if !ok || !strings.HasSuffix(rate, "M") {
		return Link{}, bad
	}
	mbit, err := strconv.ParseInt(strings.TrimSuffix(rate, "M"), 10, 64)
	if err != nil || mbit < 0 || mbit > 100_000 {
		return Link{}, bad
	}
	d, err := time.ParseDuration(rtt)
	if err != nil || d < 0 || d > 10*time.Second {
		return Link{}, bad
	}
	return Link{Rate: mbit * 1_000_000, RTT: d}, nil
}

// netLink is a shaped link's kernel side: the namespace, the veth pair and
// the relay inside the namespace.
type netLink struct {
	ns         string
	hostIf     string
	hostIP     string
	nsIP       string
	relay      net.Listener
	relayConns sync.WaitGroup
}

var linkSeq atomic.Int64

// startLink builds the namespace and veth pair for l and a relay in the
// namespace that forwards each connection to target (sshd, on the host's
// loopback). It returns the relay's address, which the host reaches only
// through the veth pair. Everything is removed by t's cleanup.
func startLink(t testing.TB, l Link, target string) string {
	t.Helper()
	testenv.Require(t, "ip", "apt-get install iproute2")
	testenv.Require(t, "tc", "apt-get install iproute2")
	if os.Geteuid() != 0 {
		t.Fatalf("bench: a shaped link (-link %s) needs root: it creates a network namespace and a veth pair", l.Name())
	}
	pid := os.Getpid()
	seq := linkSeq.Add(1) % 10
	nl := &netLink{
		ns:     fmt.Sprintf("haul-bench-%d-%d", pid, seq),
		hostIf: fmt.Sprintf("hb%d%dh", pid%1_000_000, seq),
	}
	nsIf := fmt.Sprintf("hb%d%dn", pid%1_000_000, seq)
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("bench: shaped link: %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ipCmd("ip", "netns", "add", nl.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", nl.ns).Run() })
	ipCmd("ip", "link", "add", nl.hostIf, "type", "veth", "peer", "name", nsIf, "netns", nl.ns)
	// Deleting the namespace deletes its veth end and with it the pair;
	// this is for a run whose namespace delete failed.
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", nl.hostIf).Run() })
	nl.hostIP, nl.nsIP = pickSubnet(t, pid)
	ipCmd("ip", "addr", "add", nl.hostIP+"/30", "dev", nl.hostIf)
	ipCmd("ip", "link", "set", nl.hostIf, "up")
	ipCmd("ip", "-n", nl.ns, "addr", "add", nl.nsIP+"/30", "dev", nsIf)
	ipCmd("ip", "-n", nl.ns, "link", "set", nsIf, "up")
	ipCmd("ip", "-n", nl.ns, "link", "set", "lo", "up")
	if l.Rate > 0 {
		// burst: 4 ms at the rate, at least 10 full frames; the queue
		// (latency) holds 100 ms at the rate, a home router's buffer.
		burst := max(l.Rate/8/250, 10*1514)
		tbf := []string{"root", "tbf", "rate", strconv.FormatInt(l.Rate, 10) + "bit",
			"burst", strconv.FormatInt(burst, 10), "latency", "100ms"}
		ipCmd(append([]string{"tc", "qdisc", "add", "dev", nl.hostIf}, tbf...)...)
		ipCmd(append([]string{"tc", "-n", nl.ns, "qdisc", "add", "dev", nsIf}, tbf...)...)
	}
	ln, err := listenInNetns(nl.ns, net.JoinHostPort(nl.nsIP, "0"))
	if err != nil {
		t.Fatalf("bench: shaped link: listen in namespace %s: %v", nl.ns, err)
	}
	nl.relay = ln
	go nl.serve(target)
	t.Cleanup(func() {
		ln.Close()
		nl.relayConns.Wait()
	})
	return ln.Addr().String()
}

// pickSubnet chooses a /30 in 10.213.0.0/16 that no interface uses.
func pickSubnet(t testing.TB, pid int) (host, ns string) {
	t.Helper()
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		t.Fatalf("bench: ip addr show: %v", err)
	}
	for i := range 16384 {
		n := (pid + i) % 16384
		a, b := n/64, (n%64)*4
		prefix := fmt.Sprintf("10.213.%d.", a)
		host, ns = prefix+strconv.Itoa(b+1), prefix+strconv.Itoa(b+2)
		if !strings.Contains(string(out), " "+host+"/") && !strings.Contains(string(out), " "+ns+"/") {
			return host, ns
		}
	}
	t.Fatalf("bench: no free /30 in 10.213.0.0/16")
	return "", ""
}

// listenInNetns opens a TCP listener inside the named network namespace. A
// socket belongs to the namespace of the thread that created it, so the
// listener is made on a locked thread that has entered the namespace; that
// thread is never handed back to the scheduler (the goroutine exits locked,
// and the runtime ends the thread).
func listenInNetns(ns, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// serve forwards each connection the relay accepts to target.
func (nl *netLink) serve(target string) {
	for {
		c, err := nl.relay.Accept()
		if err != nil {
			return
		}
		nl.relayConns.Add(1)
		go func() {
			defer nl.relayConns.Done()
			splice(c, target)
		}()
	}
}

// splice joins c to a new connection to target, passing half-closes on.
func splice(c net.Conn, target string) {
	defer c.Close()
	s, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		copyHalf(dst, src, nil)
		done <- struct{}{}
	}
	go cp(s, c)
	go cp(c, s)
	<-done
	<-done
}

// LinkCheck is what MeasureLink found the link to do.
type LinkCheck struct {
	RTT      time.Duration // an application-level round trip, median of 5
	UpMbit   float64       // throughput of a bulk transfer, client → server
	DownMbit float64       // server → client
}

// MeasureLink checks a shaped link end to end through its forwarder with a
// small echo server started in place of sshd for the purpose: round trips
// of one byte, and 4 MiB each way.
func MeasureLink(l Link) (LinkCheck, error) {
	var lc LinkCheck
	tb := NewTB(os.TempDir())
	defer tb.Close()
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				if f, ok := p.(Fatal); ok {
					err = f
					return
				}
				panic(p)
			}
		}()
		echo, lerr := net.Listen("tcp", "127.0.0.1:0")
		if lerr != nil {
			err = lerr
			return
		}
		tb.Cleanup(func() { echo.Close() })
		go serveEcho(echo)
		target := echo.Addr().String()
		if !l.Loopback() {
			target = startLink(tb, l, target)
		}
		fwd, ferr := StartForwarderLink(target, l)
		if ferr != nil {
			err = ferr
			return
		}
		tb.Cleanup(fwd.Close)
		lc, err = measureThrough(fwd.Addr())
	}()
	return lc, err
}

// serveEcho answers each connection: 'p' bytes are echoed, a 'u' followed
// by a 4-byte length is read and acknowledged with one byte, a 'd' with a
// length is answered with that many bytes.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var op [5]byte
			buf := make([]byte, 64<<10)
			for {
				if _, err := readFull(c, op[:1]); err != nil {
					return
				}
				switch op[0] {
				case 'p':
					if _, err := c.Write(op[:1]); err != nil {
						return
					}
				case 'u', 'd':
					if _, err := readFull(c, op[1:5]); err != nil {
						return
					}
					n := int(op[1])<<24 | int(op[2])<<16 | int(op[3])<<8 | int(op[4])
					if op[0] == 'u' {
						for n > 0 {
							k, err := c.Read(buf[:min(n, len(buf))])
							if err != nil {
								return
							}
							n -= k
						}
						if _, err := c.Write(op[:1]); err != nil {
							return
						}
						continue
					}
					for n > 0 {
						k, err := c.Write(buf[:min(n, len(buf))])
						if err != nil {
							return
						}
						n -= k
					}
				default:
					return
				}
			}
		}()
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func measureThrough(addr string) (LinkCheck, error) {
	var lc LinkCheck
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return lc, err
	}
	defer c.Close()
	var rtts []time.Duration
	b := make([]byte, 1)
	for range 5 {
		t := time.Now()
		if _, err := c.Write([]byte{'p'}); err != nil {
			return lc, err
		}
		if _, err := readFull(c, b); err != nil {
			return lc, err
		}
		rtts = append(rtts, time.Since(t))
	}
	slices.Sort(rtts)
	lc.RTT = rtts[len(rtts)/2]
	n := 4 << 20
	hdr := func(op byte) []byte { return []byte{op, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} }
	// Up: the time to the acknowledgement, less one round trip.
	t := time.Now()
	if _, err := c.Write(hdr('u')); err != nil {
		return lc, err
	}
	payload := make([]byte, n)
	if _, err := c.Write(payload); err != nil {
		return lc, err
	}
	if _, err := readFull(c, b); err != nil {
		return lc, err
	}
	lc.UpMbit = float64(n*8) / max(time.Since(t)-lc.RTT, time.Millisecond).Seconds() / 1e6
	t = time.Now()
	if _, err := c.Write(hdr('d')); err != nil {
		return lc, err
	}
	if _, err := readFull(c, payload); err != nil {
		return lc, err
	}
	lc.DownMbit = float64(n*8) / max(time.Since(t)-lc.RTT, time.Millisecond).Seconds() / 1e6
	return lc, nil
}
