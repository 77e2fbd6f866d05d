package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haulproject/haul/bench/rusage"
	"github.com/haulproject/haul/internal/testenv"
)

// Env is one "VPS" and one "NAS" on this machine, joined by one sshd on
// 127.0.0.1 behind a byte-counting forwarder. Each tool has its own key whose
// forced command runs its server side under the rusage recorder: haul-agent
// and rsync's sender on the VPS side (pull), sftp-server and `borg serve` on
// the NAS side (push).
type Env struct {
	Root string
	VPS  string // the VPS's directory: data, agent state, push tools' caches
	NAS  string // the NAS's directory: repositories and rsync snapshots
	Data string // the tree being backed up (Data/config/…), as on the VPS

	Bins       string // haul, haul-agent
	ModuleRoot string
	Restic     string
	Borg       string
	Rsync      string

	SSHD       *testenv.SSHD
	Fwd        *Forwarder
	Link       Link      // the path every connection takes
	LinkCheck  LinkCheck // what the link measured at set-up (shaped links)
	KnownHosts string    // pins sshd's host key at the forwarder's port
	User       string

	keys    map[string]testenv.KeyPair
	rec     string // haul-bench-rusage
	records string // its usage records
	haulCfg string
	pwFile  string
}

// Key names, one per tool's forced command.
const (
	keyHaul   = "haul"
	keyRsync  = "rsync"
	keyRestic = "restic"
	keyBorg   = "borg"
)

// buildRecorder builds haul-bench-rusage (kept apart from haul-bench so that
// its own small resident set is the floor of what it can measure).
func buildRecorder(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir, "./bench/cmd/haul-bench-rusage")
	cmd.Dir = testenv.ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bench: go build ./bench/cmd/haul-bench-rusage: %v\n%s", err, out)
	}
	return filepath.Join(dir, "haul-bench-rusage")
}

// NewEnv sets up the machines under t's temporary directory, checks that
// rsync, borg, ssh and sftp-server are installed (testenv.Require: fatal with CI set), and
// starts sshd and the forwarder. The returned Env is closed by t's cleanup.
func NewEnv(t testing.TB) *Env { return NewEnvLink(t, Link{}) }

// NewEnvLink is NewEnv with every connection crossing link (see Link).
func NewEnvLink(t testing.TB, link Link) *Env {
	t.Helper()
	testenv.Require(t, "rsync", "apt-get install rsync")
	testenv.Require(t, "borg", "apt-get install borgbackup")
	testenv.Require(t, "ssh", "apt-get install openssh-client")
	testenv.Require(t, "/usr/lib/openssh/sftp-server", "apt-get install openssh-sftp-server")
	root := t.TempDir()
	e := &Env{
		Root:       root,
		VPS:        filepath.Join(root, "vps"),
		NAS:        filepath.Join(root, "nas"),
		Bins:       testenv.Binaries(t),
		ModuleRoot: testenv.ModuleRoot(t),
		Restic:     testenv.ResticBin(t),
		rec:        buildRecorder(t),
		keys:       map[string]testenv.KeyPair{},
		records:    filepath.Join(root, "usage"),
	}
	e.Data = filepath.Join(e.VPS, "srv")
	e.Borg, _ = exec.LookPath("borg")
	e.Rsync, _ = exec.LookPath("rsync")
	for _, d := range []string{e.VPS, e.NAS, e.Data, e.records} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("bench: %v", err)
		}
	}
	keys := filepath.Join(root, "keys")
	for _, k := range []string{keyHaul, keyRsync, keyRestic, keyBorg} {
		e.keys[k] = testenv.NewKeyPair(t, keys, k)
	}

	agentCfg := filepath.Join(e.VPS, "agent.json")
	writeFile(t, agentCfg, fmt.Sprintf(`{"host":"vps","data_paths":[%q],"state_dir":%q,"quiesce":{"mode":"none"}}`,
		e.Data, filepath.Join(e.VPS, "agent-state")))
	rec := func(side string) string {
		return fmt.Sprintf("%s -dir %s -side %s", e.rec, e.records, side)
	}
	borgServeHome := filepath.Join(e.NAS, "borg-serve-home")
	e.SSHD = testenv.StartSSHD(t, testenv.SSHDOptions{Env: []string{
		// sshd runs forced commands through the login shell; Debian's
		// bash then sources ~/.bashrc (it sees SSH_CLIENT and SHLVL < 2),
		// which on a developer's machine may run anything (pyenv init
		// costs ~0.3-1 s here). SHLVL=1 makes bash skip it, as it would
		// for a service account, so that no tool pays for it.
		"SetEnv SHLVL=1",
	}, Keys: []testenv.AuthorizedKey{
		{Key: e.keys[keyHaul], Options: fmt.Sprintf(`command="%s -- %s serve --config %s",restrict`,
			rec("vps"), filepath.Join(e.Bins, "haul-agent"), agentCfg)},
		// rsnapshot's pull: the NAS runs rsync, which asks the VPS for
		// `rsync --server --sender …`.
		{Key: e.keys[keyRsync], Options: fmt.Sprintf(`command="%s -original",restrict`, rec("vps"))},
		{Key: e.keys[keyRestic], Options: fmt.Sprintf(`command="%s -- /usr/lib/openssh/sftp-server",restrict`, rec("nas"))},
		{Key: e.keys[keyBorg], Options: fmt.Sprintf(`command="BORG_BASE_DIR=%s %s -- %s serve --restrict-to-path %s",restrict`,
			borgServeHome, rec("nas"), e.Borg, filepath.Join(e.NAS, "borg"))},
	}})
	e.User = e.SSHD.User
	target := e.SSHD.Addr
	e.Link = link
	if !link.Loopback() {
		lc, err := MeasureLink(link)
		if err != nil {
			t.Fatalf("bench: check link %s: %v", link.Name(), err)
		}
		e.LinkCheck = lc
		target = startLink(t, link, target)
	}
	var err error
	e.Fwd, err = StartForwarderLink(target, link)
	if err != nil {
		t.Fatalf("bench: forwarder: %v", err)
	}
	t.Cleanup(e.Fwd.Close)
	e.KnownHosts = filepath.Join(root, "known_hosts")
	writeFile(t, e.KnownHosts, fmt.Sprintf("[127.0.0.1]:%d %s\n", e.Fwd.Port(), e.SSHD.HostKey.AuthorizedLine))

	// restic's password; haul's is made by `haul init --create-password`,
	// as docs/cli.md sets a NAS up (and so has the low-cost key it gets).
	e.pwFile = filepath.Join(root, "password")
	writeFile(t, e.pwFile, "correct horse battery staple\n")
	e.haulCfg = filepath.Join(e.NAS, "haul.toml")
	writeFile(t, e.haulCfg, fmt.Sprintf(`repository = %q
password_file = %q
cache_dir = %q

[[hosts]]
name = "vps"
address = %q
user = %q
identity_file = %q
known_hosts = %q
`, filepath.Join(e.NAS, "haul-repo"), filepath.Join(e.NAS, "haul-password"), filepath.Join(e.NAS, "haul-cache"),
		e.Fwd.Addr(), e.User, e.keys[keyHaul].PrivatePath, e.KnownHosts))
	return e
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatalf("bench: %v", err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("bench: %v", err)
	}
}

// sshCommand is OpenSSH's client argv for key, through the forwarder, pinned
// to sshd's host key. withPort adds -p (borg puts the port in its URL).
func (e *Env) sshCommand(key string, withPort bool) []string {
	args := []string{"ssh", "-F", "/dev/null", "-i", e.keys[key].PrivatePath}
	if withPort {
		args = append(args, "-p", strconv.Itoa(e.Fwd.Port()))
	}
	return append(args,
		"-o", "UserKnownHostsFile="+e.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "LogLevel=ERROR",
	)
}

// baseEnv is the environment of every client: this process's, minus the
// variables that would point a tool at the user's own repositories.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RESTIC_") || strings.HasPrefix(k, "BORG_") || k == "SSH_AUTH_SOCK" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Run is one measured client run and what its server side cost.
type Run struct {
	WireUp   int64 // client → server
	WireDown int64 // server → client
	Client   rusage.Usage
	Servers  []rusage.Usage
	Stdout   []byte
}

// Side sums CPU and takes the largest peak RSS of the processes on side
// ("vps" or "nas").
func (r Run) Side(side string) (cpu time.Duration, maxRSS int64) {
	for _, u := range append([]rusage.Usage{r.Client}, r.Servers...) {
		if u.Side != side {
			continue
		}
		cpu += u.CPU()
		maxRSS = max(maxRSS, u.MaxRSS)
	}
	return cpu, maxRSS
}

// measure runs cmd as a client on side under the recorder, then waits for
// its connections to close and its server-side commands to finish, and
// returns what it cost.
func (e *Env) measure(ctx context.Context, side string, cmd *exec.Cmd) (Run, error) {
	// Let the previous command's connections (a set-up step's) wind down.
	if !e.Fwd.waitIdle(30 * time.Second) {
		return Run{}, fmt.Errorf("bench: %d connections still open before %s", e.Fwd.Open(), cmd.Args[0])
	}
	if _, err := rusage.Collect(e.records, 30*time.Second); err != nil { // drop strays
		return Run{}, err
	}
	// Write back what earlier runs left dirty (rsync's copies, the
	// repositories), so that no tool's fsyncs wait for another tool's data.
	if f, err := os.Open(e.Root); err == nil {
		_ = unix.Syncfs(int(f.Fd()))
		f.Close()
	}
	wrapped := exec.CommandContext(ctx, e.rec, append([]string{"-dir", e.records, "-side", side, "-role", "client", "--", cmd.Path}, cmd.Args[1:]...)...)
	wrapped.Env, wrapped.Dir = cmd.Env, cmd.Dir
	var stdout, stderr bytes.Buffer
	wrapped.Stdout, wrapped.Stderr = &stdout, &stderr
	up0, down0 := e.Fwd.Bytes()
	err := wrapped.Run()
	e.Fwd.waitIdle(30 * time.Second)
	recs, cerr := rusage.Collect(e.records, 30*time.Second)
	up1, down1 := e.Fwd.Bytes()
	r := Run{WireUp: up1 - up0, WireDown: down1 - down0, Stdout: stdout.Bytes()}
	for _, u := range recs {
		if u.Role == "client" {
			r.Client = u
		} else {
			r.Servers = append(r.Servers, u)
		}
	}
	if err != nil {
		return r, fmt.Errorf("bench: %s: %w\nstderr:\n%s\nstdout:\n%s", strings.Join(cmd.Args, " "), err, tailBytes(stderr.Bytes(), 4096), tailBytes(stdout.Bytes(), 2048))
	}
	if cerr != nil {
		return r, cerr
	}
	if r.Client.Role == "" {
		return r, fmt.Errorf("bench: no usage record from %s", cmd.Args[0])
	}
	for _, s := range r.Servers {
		if s.Exit != 0 {
			return r, fmt.Errorf("bench: %s: server side %s exited %d; sshd log:\n%s", cmd.Args[0], s.Argv0, s.Exit, e.SSHD.LogTail())
		}
	}
	return r, nil
}

// run runs a set-up command (not measured) and fails with its output.
func run(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("bench: %s: %w\n%s", strings.Join(cmd.Args, " "), err, tailBytes(out.Bytes(), 4096))
	}
	return out.Bytes(), ctx.Err()
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Describe prints how to run each tool's backup by hand in this
// environment, for diagnosis (haul-bench -hold).
func (e *Env) Describe() string {
	var b strings.Builder
	for _, name := range AllTools {
		tool, _ := LookupTool(name)
		cmd := tool.backup(e, "manual", "")
		var env []string
		for _, kv := range cmd.Env {
			if strings.HasPrefix(kv, "RESTIC_") || strings.HasPrefix(kv, "BORG_") {
				env = append(env, fmt.Sprintf("%q", kv))
			}
		}
		fmt.Fprintf(&b, "%s:\n  %s %q\n", name, strings.Join(env, " "), cmd.Args)
	}
	fmt.Fprintf(&b, "data: %s\nusage records: %s\nsshd log: %s\n", e.Data, e.records, e.SSHD.LogPath)
	return b.String()
}
