package rebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/transport"
	"golang.org/x/crypto/ssh"
)

// fakeAgent answers a hello with reply, or fails to connect with err. As
// a real agent does, the reply names the verb and the newest version the
// hello offered.
type fakeAgent struct {
	reply proto.HelloReply
	err   error
}

func (f fakeAgent) Connect(ctx context.Context, verb string) (transport.Wire, error) {
	if f.err != nil {
		return nil, f.err
	}
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		c := proto.NewConn(b, b)
		var h proto.Hello
		if err := c.Expect(proto.THello, &h); err != nil {
			return
		}
		reply := f.reply
		reply.Verb = verb
		if len(h.Versions) > 0 {
			reply.Version = h.Versions[len(h.Versions)-1]
		}
		_ = c.Send(proto.THelloReply, &reply)
		_, _ = io.Copy(io.Discard, b)
	}()
	return pipeWire{a}, nil
}

type pipeWire struct{ net.Conn }

func (p pipeWire) CloseWrite() error      { return p.Conn.Close() }
func (p pipeWire) Stats() transport.Stats { return transport.Stats{} }
func (p pipeWire) Stderr() string         { return "" }

// TestFinalBackupDecides: the last backup is taken only from the old
// server with its data; a server that does not answer is skipped, one that
// answers wrongly stops the rebuild, and a fresh (not ready) one is never
// backed up, since restoring its empty snapshot would lose the data.
func TestFinalBackupDecides(t *testing.T) {
	keyErr := &transport.HostKeyError{Host: "vps", Address: "192.0.2.1:22", KnownHosts: "kh", Got: testKey(t)}
	cases := []struct {
		name    string
		agent   fakeAgent
		skip    bool // --skip-final-backup
		backup  bool // FinalBackup is called
		skipped bool
		errText string
	}{
		{name: "ready old server", agent: fakeAgent{reply: proto.HelloReply{Host: "vps", Ready: true}}, backup: true},
		{name: "fresh server", agent: fakeAgent{reply: proto.HelloReply{Host: "vps"}}, skipped: true},
		{name: "refused", agent: fakeAgent{err: fmt.Errorf("host vps: connect to 192.0.2.1:22: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")})}, skipped: true},
		{name: "closed before handshake", agent: fakeAgent{err: fmt.Errorf("host vps: SSH handshake with 192.0.2.1:22: %w", fmt.Errorf("ssh: handshake failed: %w", io.EOF))}, skipped: true},
		{name: "another host key", agent: fakeAgent{err: keyErr}, errText: "--skip-final-backup"},
		{name: "key refused", agent: fakeAgent{err: errors.New("host vps: 192.0.2.1:22 refused key k for user root")}, errText: "the old server answers, but"},
		{name: "--skip-final-backup", agent: fakeAgent{err: errors.New("must not be asked")}, skip: true, skipped: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			called := false
			rb := &rebuilder{
				opts: Options{
					Host:            &config.Host{Name: "vps", Address: "192.0.2.1:22"},
					Probe:           c.agent,
					SkipFinalBackup: c.skip,
					FinalBackup: func(context.Context) (*SnapshotInfo, error) {
						called = true
						return &SnapshotInfo{ID: strings.Repeat("b", 64), Time: time.Now()}, nil
					},
				},
				res: &Result{
					Snapshot:  &SnapshotInfo{ID: strings.Repeat("a", 64), Time: time.Now(), Source: "preflight"},
					Preflight: &Preflight{Server: &ServerInfo{ID: 42}},
				},
				logf: func(string, ...any) {},
				now:  time.Now,
			}
			detail, skipped, err := rb.phaseFinalBackup(context.Background())
			if c.errText != "" {
				if err == nil || !strings.Contains(err.Error(), c.errText) {
					t.Fatalf("err %v, want one saying %q", err, c.errText)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if called != c.backup || skipped != c.skipped {
				t.Fatalf("backup called %v, skipped %v (%s)", called, skipped, detail)
			}
			wantSource := "preflight"
			if c.backup {
				wantSource = "final-backup"
			}
			if rb.res.Snapshot.Source != wantSource {
				t.Fatalf("restore would use the %s snapshot", rb.res.Snapshot.Source)
			}
			if skipped && !strings.Contains(detail, "aaaaaaaa") {
				t.Fatalf("a skip must say which snapshot is restored: %s", detail)
			}
		})
	}
}

func TestTofuArgs(t *testing.T) {
	rb := &rebuilder{
		settings: &config.Rebuild{TofuResource: "hcloud_server.vps", TofuArgs: []string{"-var-file=prod.tfvars"}},
		res:      &Result{Preflight: &Preflight{Server: &ServerInfo{ID: 42}}},
		opts:     Options{Token: "secret", Config: &config.Config{Path: "/etc/haul/haul.toml"}, Host: &config.Host{Name: "vps"}, HaulBin: "/usr/bin/haul"},
	}
	if got := strings.Join(rb.tofuArgs(), " "); got != "apply -input=false -auto-approve -no-color -replace=hcloud_server.vps -var-file=prod.tfvars" {
		t.Fatalf("args %q", got)
	}
	rb.res.Preflight.Server = nil
	if got := strings.Join(rb.tofuArgs(), " "); strings.Contains(got, "-replace") {
		t.Fatalf("a missing server is created, not replaced: %q", got)
	}
	// The API endpoint preflight uses is the provider's; an inherited one
	// never overrides it, and without hcloud_endpoint neither sets one.
	t.Setenv("HCLOUD_ENDPOINT", "http://elsewhere.invalid/v1")
	t.Setenv("HCLOUD_TOKEN", "inherited")
	rb.settings.HcloudEndpoint = "http://127.0.0.1:9/v1"
	envList, err := rb.tofuEnv()
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(envList, "\n")
	for _, want := range []string{"TF_VAR_hcloud_token=secret", "TF_VAR_haul_config=/etc/haul/haul.toml", "TF_VAR_haul_host=vps", "TF_VAR_haul_bin=/usr/bin/haul",
		"HCLOUD_ENDPOINT=http://127.0.0.1:9/v1"} {
		if !strings.Contains(env, want) {
			t.Errorf("tofu's environment lacks %s", want)
		}
	}
	for _, bad := range []string{"elsewhere.invalid", "HCLOUD_TOKEN=inherited", "TF_VAR_install_ssh_key"} {
		if strings.Contains(env, bad) {
			t.Errorf("tofu's environment has %s", bad)
		}
	}
	rb.settings.HcloudEndpoint = ""
	envList, _ = rb.tofuEnv()
	if env := strings.Join(envList, "\n"); strings.Contains(env, "HCLOUD_ENDPOINT") {
		t.Errorf("without hcloud_endpoint tofu must use Hetzner's API, as preflight does; env has HCLOUD_ENDPOINT")
	}
	if redact("token=secret!", "secret") != "token=[token]!" {
		t.Error("redact")
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		have string
		ok   bool
	}{{"1.10.0", true}, {"1.12.6", true}, {"v1.12.6", true}, {"2.0.0", true}, {"1.9.9", false}, {"1.6.2", false}, {"1.10.0-rc1", true}, {"0.15.0", false}} {
		if got := versionAtLeast(c.have, MinTofuVersion); got != c.ok {
			t.Errorf("versionAtLeast(%q, %q) = %v", c.have, MinTofuVersion, got)
		}
	}
}

func testKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHEzHvYUvS7VWeolMNMsZWneZ9vvcxip9hcqzU9RUj2n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
