package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const sshdPath = "/usr/sbin/sshd"

// AuthorizedKey is one authorized_keys entry.
type AuthorizedKey struct {
	Key KeyPair
	// Options is written verbatim before the key, for example
	// `command="/path/haul-agent serve --config /x.json",restrict`.
	Options string
}

// SSHDOptions configures StartSSHD.
type SSHDOptions struct {
	Keys []AuthorizedKey
	// HostKey reuses a host key (rebuild tests carry the same host key to a
	// new "VPS"); nil generates one. The key files are copied into the
	// server's directory.
	HostKey *KeyPair
	// Env holds extra sshd_config lines. They are placed before the
	// defaults (sshd keeps the first value it reads for a keyword, so they
	// override them); a "Match" line and everything after it go last.
	Env []string
}

// SSHD is a running OpenSSH server on 127.0.0.1.
type SSHD struct {
	Addr           string // "127.0.0.1:PORT"
	Host           string // "127.0.0.1"
	Port           int
	User           string // the user tests log in as: the current user
	HostKey        KeyPair
	KnownHosts     string // known_hosts file pinning HostKey for "[127.0.0.1]:PORT"
	KnownHostsLine string
	Dir            string
	LogPath        string // sshd's log; put LogTail() in failure messages

	config string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	orphans []proc // forced commands left running by Stop
}

// StartSSHD starts /usr/sbin/sshd on 127.0.0.1 on a free port with its own
// host key and an AuthorizedKeysFile holding opts.Keys, waits until it
// listens, and stops it (and every session it started) at cleanup.
//
// It needs root or to run as the login user; as root it creates /run/sshd.
// The login user's password must not be locked ('!' in /etc/shadow): with
// UsePAM no, sshd refuses such users even for key logins.
func StartSSHD(t testing.TB, opts SSHDOptions) *SSHD {
	t.Helper()
	if _, ok := lookTool(sshdPath); !ok {
		missing(t, "sshd", "apt-get install openssh-server")
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("testenv: current user: %v", err)
	}
	checkLoginable(t, u.Username)
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("testenv: create sshd's privilege separation dir: %v", err)
		}
	}

	dir := t.TempDir()
	s := &SSHD{
		Host:    "127.0.0.1",
		User:    u.Username,
		Dir:     dir,
		LogPath: filepath.Join(dir, "sshd.log"),
		config:  filepath.Join(dir, "sshd_config"),
	}
	if opts.HostKey != nil {
		s.HostKey = copyKeyPair(t, *opts.HostKey, dir)
	} else {
		s.HostKey = NewKeyPair(t, dir, "ssh_host_ed25519_key")
	}
	var ak strings.Builder
	for _, k := range opts.Keys {
		if k.Options != "" {
			ak.WriteString(k.Options)
			ak.WriteByte(' ')
		}
		ak.WriteString(k.Key.AuthorizedLine)
		ak.WriteByte('\n')
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, []byte(ak.String()), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(s.cleanup)

	for attempt := 1; ; attempt++ {
		s.Port = freePort(t)
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		s.writeConfig(t, opts, authKeys)
		err := s.start()
		if err == nil {
			break
		}
		// Another process may have taken the port between freePort and
		// sshd's bind; try another one.
		if attempt < 3 && strings.Contains(tail(s.LogPath, 4096), "Address already in use") {
			continue
		}
		t.Fatalf("testenv: sshd: %v\nsshd log:\n%s", err, s.LogTail())
	}

	s.KnownHostsLine = fmt.Sprintf("[%s]:%d %s", s.Host, s.Port, s.HostKey.AuthorizedLine)
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(s.KnownHosts, []byte(s.KnownHostsLine+"\n"), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return s
}

// checkLoginable fails the test if sshd (UsePAM no) would refuse user because
// its password is locked. It never changes /etc/shadow.
func checkLoginable(t testing.TB, username string) {
	t.Helper()
	if passwordLocked("/etc/shadow", username) {
		t.Fatalf("testenv: the password of user %q is locked ('!' in /etc/shadow), so sshd with UsePAM no refuses every login as %s, key logins included.\n"+
			"Fix it once with:  usermod -p '*' %s   (.ci/run does this)", username, username, username)
	}
}

// passwordLocked reports whether username's password field in the shadow
// file starts with '!'. An unreadable file (not root) reports false: sshd
// will tell.
func passwordLocked(shadow, username string) bool {
	f, err := os.Open(shadow)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 2 && fields[0] == username {
			return strings.HasPrefix(fields[1], "!")
		}
	}
	return false
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *SSHD) writeConfig(t testing.TB, opts SSHDOptions, authKeys string) {
	t.Helper()
	var head, match []string
	for i, l := range opts.Env {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "Match") {
			match = opts.Env[i:]
			break
		}
		head = append(head, l)
	}
	lines := []string{"# written by internal/testenv for one test"}
	lines = append(lines, head...)
	lines = append(lines,
		"ListenAddress "+s.Addr,
		"HostKey "+s.HostKey.PrivatePath,
		"PidFile "+filepath.Join(s.Dir, "sshd.pid"),
		"AuthorizedKeysFile "+authKeys,
		"UsePAM no",
		"StrictModes no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"LogLevel VERBOSE",
		"PrintMotd no",
		"PrintLastLog no",
		"UseDNS no",
		"X11Forwarding no",
		// Tests open connections in parallel; the default (10:30:100)
		// randomly drops unauthenticated ones.
		"MaxStartups 200",
		"MaxSessions 50",
		// The forced command handles sftp: the subsystem request reaches it
		// as SSH_ORIGINAL_COMMAND=/usr/lib/openssh/sftp-server.
		"Subsystem sftp /usr/lib/openssh/sftp-server",
	)
	write := func(extra []string) error {
		all := append(append(append([]string{}, lines...), extra...), match...)
		return os.WriteFile(s.config, []byte(strings.Join(all, "\n")+"\n"), 0o600)
	}
	// OpenSSH >= 9.8 penalises source addresses that fail or drop
	// connections — all tests come from 127.0.0.1. Older versions reject the
	// keyword, so probe for it.
	if err := write([]string{"PerSourcePenalties no"}); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	out, err := exec.Command(sshdPath, "-t", "-f", s.config).CombinedOutput()
	if err != nil && strings.Contains(string(out), "PerSourcePenalties") {
		if err := write(nil); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		out, err = exec.Command(sshdPath, "-t", "-f", s.config).CombinedOutput()
	}
	if err != nil {
		cfg, _ := os.ReadFile(s.config)
		t.Fatalf("testenv: sshd -t rejects the config: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
}

// start runs sshd and waits until it listens on s.Port.
func (s *SSHD) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logf, err := os.OpenFile(s.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- testenv: starting sshd on %s at %s\n", s.Addr, time.Now().Format(time.RFC3339Nano))
	startOff, _ := logf.Seek(0, 2)
	cmd := exec.Command(sshdPath, "-D", "-e", "-E", s.LogPath, "-f", s.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	setDeathSignal(cmd, syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	want := fmt.Sprintf("Server listening on %s port %d", s.Host, s.Port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("sshd exited during startup: %v", cmd.ProcessState)
		default:
		}
		b, _ := os.ReadFile(s.LogPath)
		if int64(len(b)) > startOff && strings.Contains(string(b[startOff:]), want) {
			c, err := net.DialTimeout("tcp", s.Addr, time.Second)
			if err == nil {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("sshd did not listen on %s within 10s", s.Addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills sshd and every sshd process serving a connection, which cuts all
// connections. Forced commands are not killed: like after a network cut, they
// see EOF on stdin and EPIPE on stdout (the cleanup kills those still running).
func (s *SSHD) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func isSSHD(p proc) bool { return strings.HasPrefix(p.comm, "sshd") }

func (s *SSHD) stopLocked() {
	if s.cmd == nil {
		return
	}
	listener, ok := readProc(s.cmd.Process.Pid)
	if ok {
		// Freeze the sshd tree so that nothing forks while it is collected:
		// once a parent dies its children are re-parented and lost.
		listener.signal(syscall.SIGSTOP)
		stopped := map[int]proc{listener.pid: listener}
		for {
			grew := false
			for _, d := range descendants(listener.pid) {
				if _, seen := stopped[d.pid]; seen || !isSSHD(d) {
					continue
				}
				d.signal(syscall.SIGSTOP)
				stopped[d.pid] = d
				grew = true
			}
			if !grew {
				break
			}
		}
		for _, d := range descendants(listener.pid) {
			if !isSSHD(d) {
				s.orphans = append(s.orphans, d)
			}
		}
		var killed []proc
		for _, p := range stopped {
			p.signal(syscall.SIGKILL)
			killed = append(killed, p)
		}
		waitGone(killed, 5*time.Second)
	} else {
		_ = s.cmd.Process.Kill()
	}
	<-s.done
	s.cmd = nil
}

// Restart stops sshd (cutting every connection) and starts it again on the
// same port with the same host key and keys.
func (s *SSHD) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("testenv: restart sshd: %v\nsshd log:\n%s", err, s.LogTail())
	}
}

func (s *SSHD) cleanup() {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Forced commands get a moment to notice the closed connection, then
	// they and whatever they started are killed.
	if !waitGone(s.orphans, 2*time.Second) {
		var all []proc
		for _, o := range s.orphans {
			if o.alive() {
				all = append(all, o)
				all = append(all, descendants(o.pid)...)
			}
		}
		for _, p := range all {
			p.signal(syscall.SIGKILL)
		}
		waitGone(all, 5*time.Second)
	}
	s.orphans = nil
}

// LogTail returns the end of sshd's log.
func (s *SSHD) LogTail() string { return tail(s.LogPath, 8<<10) }

// SSHArgs returns the argv of OpenSSH's ssh client logging in as s.User with
// key and the pinned known_hosts file; append a remote command to it. It
// reads no ssh_config (-F /dev/null).
func (s *SSHD) SSHArgs(key KeyPair) []string {
	return []string{
		"ssh", "-F", "/dev/null",
		"-i", key.PrivatePath,
		"-p", strconv.Itoa(s.Port),
		"-o", "UserKnownHostsFile=" + s.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10",
		s.User + "@" + s.Host,
	}
}

// AgentKeys are a haul-agent host's authorized_keys entries as the NixOS
// module writes them: the backup key runs `AGENT serve --config CFG`, the
// restore key the same with --allow-restore, both restricted. wrap, if not
// nil, turns each command into the one sshd runs (inside unshare, say).
func AgentKeys(agent, agentCfg string, backup, restore KeyPair, wrap func(cmd string) string) []AuthorizedKey {
	if wrap == nil {
		wrap = func(cmd string) string { return cmd }
	}
	serve := agent + " serve --config " + agentCfg
	return []AuthorizedKey{
		{Key: backup, Options: fmt.Sprintf(`command="%s",restrict`, wrap(serve))},
		{Key: restore, Options: fmt.Sprintf(`command="%s",restrict`, wrap(serve+" --allow-restore"))},
	}
}
