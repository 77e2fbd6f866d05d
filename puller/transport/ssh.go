package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSH connects to an agent through sshd, where the agent is the forced
// command of the key: the verb travels as the requested command and reaches
// the agent as SSH_ORIGINAL_COMMAND.
type SSH struct {
	Host         string // the host's name in the config, for messages
	Address      string // host:port
	User         string
	IdentityFile string
	KnownHosts   string // the pin: only keys listed here are accepted
	Timeout      time.Duration
}

// HostKeyError says the server's key does not match the pin.
type HostKeyError struct {
	Host, Address, KnownHosts string
	Got                       ssh.PublicKey
	Pinned                    []knownhosts.KnownKey
}

func (e *HostKeyError) Error() string {
	got := fmt.Sprintf("%s %s", e.Got.Type(), ssh.FingerprintSHA256(e.Got))
	norm := knownhosts.Normalize(e.Address)
	if len(e.Pinned) == 0 {
		return fmt.Sprintf("host %s (%s) offered %s, but %s pins no key for %s. "+
			"Check the fingerprint on the server's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "+
			"then pin it: `haul hostkey pin --host %s` or `ssh-keyscan -p PORT HOST >> %s`",
			e.Host, e.Address, got, e.KnownHosts, norm, e.Host, e.KnownHosts)
	}
	var pinned []string
	for _, k := range e.Pinned {
		pinned = append(pinned, fmt.Sprintf("%s %s (%s:%d)", k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.Filename, k.Line))
	}
	return fmt.Sprintf("HOST KEY MISMATCH for %s (%s): the server offered %s, the pin is %s. "+
		"Refusing to connect: this may be an attacker, or a rebuild that did not carry the kept host key. "+
		"If the key changed on purpose, check the new fingerprint on the server's console, then update the pin: "+
		"`ssh-keygen -R '%s' -f %s` and `haul hostkey pin --host %s` (or ssh-keyscan)",
		e.Host, e.Address, got, strings.Join(pinned, ", "), norm, e.KnownHosts, e.Host)
}

func (s *SSH) clientConfig() (*ssh.ClientConfig, error) {
	keyBytes, err := os.ReadFile(s.IdentityFile)
	if err != nil {
		return nil, fmt.Errorf("host %s: read identity_file: %w", s.Host, err)
	}
	signer, err := ssh.ParsePrivateKey(keyBytes)
	if err != nil {
		return nil, fmt.Errorf("host %s: parse identity_file %s: %w (haul needs an unencrypted OpenSSH key)", s.Host, s.IdentityFile, err)
	}
	if _, err := os.Stat(s.KnownHosts); err != nil {
		return nil, fmt.Errorf("host %s: known_hosts %s: %w; pin the VPS's host key first (haul hostkey pin)", s.Host, s.KnownHosts, err)
	}
	check, err := knownhosts.New(s.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("host %s: read known_hosts %s: %w", s.Host, s.KnownHosts, err)
	}
	callback := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			return &HostKeyError{Host: s.Host, Address: s.Address, KnownHosts: s.KnownHosts, Got: key, Pinned: ke.Want}
		}
		return err
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &ssh.ClientConfig{
		User:              s.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   callback,
		HostKeyAlgorithms: pinnedAlgorithms(s.KnownHosts, s.Address),
		Timeout:           timeout,
	}, nil
}

// pinnedAlgorithms lists the host key algorithms of the keys pinned for
// address, so the server is asked for the pinned kind of key rather than
// one the pin cannot match.
func pinnedAlgorithms(file, address string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	want := knownhosts.Normalize(address)
	var algos []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		marker, hosts, key, _, _, err := ssh.ParseKnownHosts(line)
		if err != nil || marker == "revoked" {
			continue
		}
		for _, h := range hosts {
			if h == want {
				switch key.Type() {
				case ssh.KeyAlgoRSA:
					algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
				default:
					algos = append(algos, key.Type())
				}
			}
		}
	}
	return algos
}

// Connect dials, checks the pin, authenticates and requests the verb as
// the session's command.
func (s *SSH) Connect(ctx context.Context, verb string) (Wire, error) {
	cfg, err := s.clientConfig()
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", s.Address)
	if err != nil {
		return nil, fmt.Errorf("host %s: connect to %s: %w", s.Host, s.Address, err)
	}
	w := &sshWire{stderr: &tail{}}
	conn := &countingConn{Conn: raw, c: &w.c}
	_ = raw.SetDeadline(time.Now().Add(cfg.Timeout))
	cc, chans, reqs, err := ssh.NewClientConn(conn, s.Address, cfg)
	if err != nil {
		raw.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("host %s: %s refused key %s for user %s: is its public half in authorized_keys with the haul-agent forced command? (%w)", s.Host, s.Address, s.IdentityFile, s.User, err)
		}
		return nil, fmt.Errorf("host %s: SSH handshake with %s: %w", s.Host, s.Address, err)
	}
	_ = raw.SetDeadline(time.Time{})
	w.client = ssh.NewClient(cc, chans, reqs)
	sess, err := w.client.NewSession()
	if err != nil {
		w.client.Close()
		return nil, fmt.Errorf("host %s: open session: %w", s.Host, err)
	}
	w.sess = sess
	sess.Stderr = w.stderr
	if w.stdin, err = sess.StdinPipe(); err != nil {
		w.client.Close()
		return nil, err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		w.client.Close()
		return nil, err
	}
	w.stdout = stdout
	if err := sess.Start(verb); err != nil {
		w.client.Close()
		return nil, fmt.Errorf("host %s: start %q: %w", s.Host, verb, err)
	}
	go func() {
		<-ctx.Done()
		w.client.Close()
	}()
	return w, nil
}

type countingConn struct {
	net.Conn
	c *counter
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.out.Add(int64(n))
	return n, err
}

type sshWire struct {
	client *ssh.Client
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *tail
	c      counter
}

func (w *sshWire) Read(p []byte) (int, error)  { return w.stdout.Read(p) }
func (w *sshWire) Write(p []byte) (int, error) { return w.stdin.Write(p) }
func (w *sshWire) CloseWrite() error           { return w.stdin.Close() }
func (w *sshWire) Stats() Stats                { return w.c.stats() }
func (w *sshWire) Stderr() string              { return w.stderr.String() }

func (w *sshWire) Close() error {
	_ = w.stdin.Close()
	// Drain what the agent still writes so it can reach its exit.
	go func() { _, _ = io.Copy(io.Discard, w.stdout) }()
	done := make(chan error, 1)
	go func() { done <- w.sess.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		err = fmt.Errorf("agent did not exit within 30s after the session ended")
	}
	w.client.Close()
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("agent exited with status %d: %s", ee.ExitStatus(), w.stderr.String())
	}
	return err
}
