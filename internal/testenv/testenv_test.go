package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// runSSH runs the OpenSSH client and returns stdout and stderr.
func runSSH(t *testing.T, args []string) (stdout, stderr string, err error) {
	t.Helper()
	Require(t, "ssh", "apt-get install openssh-client")
	cmd := exec.Command(args[0], args[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func TestNewKeyPair(t *testing.T) {
	t.Parallel()
	k := NewKeyPair(t, t.TempDir(), "id")
	fi, err := os.Stat(k.PrivatePath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.HasPrefix(k.AuthorizedLine, "ssh-ed25519 AAAA") || strings.ContainsAny(k.AuthorizedLine, " \n") && len(strings.Fields(k.AuthorizedLine)) != 2 {
		t.Errorf("AuthorizedLine = %q", k.AuthorizedLine)
	}
	if !bytes.Equal(k.Signer(t).PublicKey().Marshal(), k.PublicKey(t).Marshal()) {
		t.Error("private and public key do not match")
	}
	pub, err := os.ReadFile(k.PublicPath)
	if err != nil || !strings.HasPrefix(string(pub), k.AuthorizedLine) {
		t.Errorf("public key file %q, %v", pub, err)
	}
}

func TestSSHDForcedCommand(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	k := NewKeyPair(t, keys, "client")
	stranger := NewKeyPair(t, keys, "stranger")
	s := StartSSHD(t, SSHDOptions{Keys: []AuthorizedKey{{Key: k, Options: `command="/usr/bin/env",restrict`}}})

	out, errOut, err := runSSH(t, append(s.SSHArgs(k), "hello world"))
	if err != nil {
		t.Fatalf("ssh: %v\n%s\nsshd log:\n%s", err, errOut, s.LogTail())
	}
	if !strings.Contains(out, "SSH_ORIGINAL_COMMAND=hello world\n") {
		t.Errorf("forced command output lacks SSH_ORIGINAL_COMMAND=hello world:\n%s", out)
	}

	// A subsystem request reaches the forced command too.
	args := s.SSHArgs(k)
	dest := args[len(args)-1]
	args = append(args[:len(args)-1:len(args)-1], "-s", dest, "sftp")
	out, errOut, err = runSSH(t, args)
	if err != nil {
		t.Fatalf("ssh -s sftp: %v\n%s\nsshd log:\n%s", err, errOut, s.LogTail())
	}
	if !strings.Contains(out, "SSH_ORIGINAL_COMMAND=/usr/lib/openssh/sftp-server\n") {
		t.Errorf("sftp subsystem: forced command output lacks SSH_ORIGINAL_COMMAND=/usr/lib/openssh/sftp-server:\n%s", out)
	}

	// A key that is not authorized is refused.
	if out, errOut, err := runSSH(t, append(s.SSHArgs(stranger), "x")); err == nil {
		t.Errorf("unauthorized key logged in: %s", out)
	} else if !strings.Contains(errOut, "Permission denied") {
		t.Errorf("unauthorized key: want Permission denied, got %v: %s", err, errOut)
	}
}

func TestSSHDWrongHostKeyPin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k := NewKeyPair(t, dir, "client")
	s := StartSSHD(t, SSHDOptions{Keys: []AuthorizedKey{{Key: k, Options: `command="/usr/bin/env",restrict`}}})

	other := NewKeyPair(t, dir, "other_host_key")
	wrong := filepath.Join(dir, "known_hosts_wrong")
	if err := os.WriteFile(wrong, []byte(fmt.Sprintf("[%s]:%d %s\n", s.Host, s.Port, other.AuthorizedLine)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := s.SSHArgs(k)
	for i, a := range args {
		if strings.HasPrefix(a, "UserKnownHostsFile=") {
			args[i] = "UserKnownHostsFile=" + wrong
		}
	}
	out, errOut, err := runSSH(t, append(args, "hello"))
	if err == nil {
		t.Fatalf("ssh accepted a host key that does not match the pin; output:\n%s", out)
	}
	if !strings.Contains(errOut, "Host key verification failed") {
		t.Errorf("want a host key verification failure, got %v:\n%s", err, errOut)
	}
	if strings.Contains(out, "SSH_ORIGINAL_COMMAND") {
		t.Errorf("the forced command ran despite the wrong pin")
	}
}

func TestSSHDRestartAndHostKeyReuse(t *testing.T) {
	t.Parallel()
	k := NewKeyPair(t, t.TempDir(), "client")
	opts := SSHDOptions{Keys: []AuthorizedKey{{Key: k, Options: `command="/bin/cat",restrict`}}}
	s := StartSSHD(t, opts)

	// A long-lived session: cat echoes what we send.
	args := s.SSHArgs(k)
	cmd := exec.Command(args[0], append(args[1:], "session")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	fmt.Fprintln(stdin, "ping")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("echo through the session: %q, %v\n%s\nsshd log:\n%s", line, err, errOut.String(), s.LogTail())
	}

	port := s.Port
	s.Restart(t)
	if s.Port != port {
		t.Errorf("port changed across Restart: %d -> %d", port, s.Port)
	}
	exited := make(chan error, 1)
	go func() { _, _ = io.Copy(io.Discard, stdout); exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the ssh session survived Restart")
	}
	if out, e, err := runSSH(t, append(s.SSHArgs(k), "again")); err != nil {
		t.Fatalf("ssh after Restart: %v\n%s\nsshd log:\n%s", err, e, s.LogTail())
	} else if out != "" {
		t.Errorf("cat with empty stdin printed %q", out)
	}

	// A new server carrying the same host key is accepted under the same pin.
	opts.HostKey = &s.HostKey
	s2 := StartSSHD(t, opts)
	if s2.HostKey.AuthorizedLine != s.HostKey.AuthorizedLine {
		t.Fatalf("host key not reused")
	}
	pinned := filepath.Join(t.TempDir(), "known_hosts")
	line2 := strings.Replace(s.KnownHostsLine, fmt.Sprintf("]:%d ", s.Port), fmt.Sprintf("]:%d ", s2.Port), 1)
	if err := os.WriteFile(pinned, []byte(line2+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args2 := s2.SSHArgs(k)
	for i, a := range args2 {
		if strings.HasPrefix(a, "UserKnownHostsFile=") {
			args2[i] = "UserKnownHostsFile=" + pinned
		}
	}
	if _, e, err := runSSH(t, append(args2, "x")); err != nil {
		t.Fatalf("ssh to the rebuilt server with the old pin: %v\n%s", err, e)
	}
}

func TestDockerdImportImage(t *testing.T) {
	t.Parallel()
	d := StartDockerd(t)
	if len(d.Socket) >= 100 {
		t.Errorf("socket path too long for a unix socket: %q", d.Socket)
	}
	img := d.ImportImage(t, "testdata/hello", "haul-testenv-hello:test")
	if again := d.ImportImage(t, "testdata/hello", "haul-testenv-hello:test"); again != img {
		t.Errorf("second ImportImage returned %q, want %q", again, img)
	}
	if out := d.Docker(t, "run", "--rm", "--network", "none", img); out != "hello" {
		t.Errorf("docker run printed %q, want hello\ndockerd log:\n%s", out, d.LogTail())
	}
}

func TestRestic(t *testing.T) {
	t.Parallel()
	ResticBin(t)
	dir := t.TempDir()
	repo, pw, data := filepath.Join(dir, "repo"), filepath.Join(dir, "pw"), filepath.Join(dir, "data")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	Restic(t, repo, pw, "init")
	Restic(t, repo, pw, "backup", "--host", "h", data)
	var snaps []struct{ Hostname string }
	if err := json.Unmarshal(Restic(t, repo, pw, "snapshots", "--json"), &snaps); err != nil || len(snaps) != 1 || snaps[0].Hostname != "h" {
		t.Fatalf("snapshots: %+v, %v", snaps, err)
	}
	if _, stderr, err := ResticErr(t, repo, pw, "cat", "snapshot", "0000000000000000000000000000000000000000000000000000000000000000"); err == nil {
		t.Errorf("restic cat of a missing snapshot succeeded")
	} else if len(stderr) == 0 {
		t.Errorf("ResticErr returned no stderr")
	}
}

func TestPasswordLocked(t *testing.T) {
	t.Parallel()
	shadow := filepath.Join(t.TempDir(), "shadow")
	content := "root:!:20228:0:99999:7:::\nalice:*:20228:0:99999:7:::\nbob:!$y$j9T$abc:20228::::::\ncarol:$y$j9T$x:20228::::::\n"
	if err := os.WriteFile(shadow, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string]bool{"root": true, "alice": false, "bob": true, "carol": false, "nobody": false} {
		if got := passwordLocked(shadow, user); got != want {
			t.Errorf("passwordLocked(%q) = %v, want %v", user, got, want)
		}
	}
	if passwordLocked(filepath.Join(t.TempDir(), "missing"), "root") {
		t.Error("an unreadable shadow file reports a locked password")
	}
}

// recorder catches Fatalf and Skipf instead of stopping the goroutine.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }

func TestRequire(t *testing.T) {
	const tool, hint = "haul-no-such-tool", "apt-get install haul-no-such-tool"
	// The skip below is this test's own, not a missing tool of the run's:
	// keep it out of the report `make test` prints.
	t.Setenv("HAUL_SKIP_REPORT", "")
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		Require(r, tool, hint)
		got := r.skip
		if ci != "" {
			got = r.fatal
			if r.skip != "" {
				t.Errorf("CI=%s: skipped: %s", ci, r.skip)
			}
		} else if r.fatal != "" {
			t.Errorf("CI unset: failed: %s", r.fatal)
		}
		if !strings.Contains(got, tool) || !strings.Contains(got, hint) {
			t.Errorf("CI=%q: message %q does not name the tool and the install hint", ci, got)
		}
		r = &recorder{TB: t}
		Require(r, "sh", "apt-get install dash")
		Require(r, "/bin/sh", "apt-get install dash")
		if r.fatal != "" || r.skip != "" {
			t.Errorf("CI=%q: Require reported an installed tool: %s%s", ci, r.fatal, r.skip)
		}
	}
}

func TestSharedDockerd(t *testing.T) {
	t.Parallel()
	d := SharedDockerd(t)
	if again := SharedDockerd(t); again != d {
		t.Fatal("SharedDockerd started a second daemon")
	}
	if v := d.Docker(t, "version", "--format", "{{.Server.Version}}"); v == "" {
		t.Error("empty server version")
	}
	if _, err := os.Stat(d.Socket); err != nil {
		t.Error(err)
	}
}
