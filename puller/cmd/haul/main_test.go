package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/repo"
	"golang.org/x/crypto/ssh"
)

// haulRun runs haul in-process and returns stdout, stderr and the exit code.
func haulRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var o, e bytes.Buffer
	code := run(context.Background(), append([]string{"haul"}, args...), &o, &e)
	return o.String(), e.String(), code
}

// newSetup writes a config naming a repository and a password file that do
// not exist yet, in a fresh directory.
func newSetup(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "haul.toml")
	body := "repository = \"repo\"\npassword_file = \"password\"\ncache_dir = \"cache\"\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func TestInitCreatesPasswordAndKey(t *testing.T) {
	dir, cfg := newSetup(t)
	key := filepath.Join(dir, "keys", "vps-backup")
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := haulRun(t, "init", "--config", cfg, "--create-password", "--create-key", key)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	pw := filepath.Join(dir, "password")
	fi, err := os.Stat(pw)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v mode %v, want 0600", err, fi.Mode())
	}
	first, _ := os.ReadFile(pw)
	if len(strings.TrimSpace(string(first))) < 40 {
		t.Errorf("password %q is too short for 256 random bits", first)
	}
	fi, err = os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v mode %v, want 0600", err, fi.Mode())
	}
	priv, _ := os.ReadFile(key)
	signer, err := ssh.ParsePrivateKey(priv)
	if err != nil || signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Fatalf("private key does not parse as ed25519: %v", err)
	}
	pubLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	wantEntry := `command="/usr/local/bin/haul-agent serve --config /etc/haul-agent.json",restrict ` + pubLine
	if !strings.Contains(out, wantEntry) {
		t.Errorf("init output lacks the authorized_keys entry %q:\n%s", wantEntry, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	if !strings.HasPrefix(string(pub), pubLine) {
		t.Errorf("%s.pub = %q, want %q…", key, pub, pubLine)
	}
	if _, err := os.Stat(filepath.Join(dir, "repo", "config")); err != nil {
		t.Errorf("repository not created: %v", err)
	}
	// The generated password's key is the repository's only one, at the
	// low cost, and the stock restic CLI opens it.
	keys, _ := filepath.Glob(filepath.Join(dir, "repo", "keys", "*"))
	if len(keys) != 1 {
		t.Fatalf("keys %v, want exactly one (the calibrated key replaced)", keys)
	}
	var kf struct{ N, R, P int }
	if b, err := os.ReadFile(keys[0]); err != nil || json.Unmarshal(b, &kf) != nil {
		t.Fatalf("key file %s: %v", keys[0], err)
	}
	if kf.N != repo.MachineKeyKDF.N || kf.R != repo.MachineKeyKDF.R || kf.P != repo.MachineKeyKDF.P {
		t.Errorf("key's scrypt cost N=%d r=%d p=%d, want %+v", kf.N, kf.R, kf.P, repo.MachineKeyKDF)
	}
	var listed []struct {
		ID      string `json:"id"`
		Current bool   `json:"current"`
	}
	if err := json.Unmarshal(testenv.Restic(t, filepath.Join(dir, "repo"), pw, "key", "list", "--json"), &listed); err != nil || len(listed) != 1 || !listed[0].Current || filepath.Base(keys[0]) != listed[0].ID {
		t.Errorf("restic key list: %+v (%v), want the one key %s", listed, err, filepath.Base(keys[0]))
	}

	// Neither secret is ever overwritten: exit 2, contents unchanged.
	for _, args := range [][]string{{"--create-password"}, {"--create-key", key}} {
		_, errOut, code := haulRun(t, append([]string{"init", "--config", cfg}, args...)...)
		if code != exitConfig || !strings.Contains(errOut, "already exists") {
			t.Errorf("init %v again: exit %d %q, want 2 and 'already exists'", args, code, errOut)
		}
	}
	if now, _ := os.ReadFile(pw); !bytes.Equal(now, first) {
		t.Error("the password file was changed")
	}
	if now, _ := os.ReadFile(key); !bytes.Equal(now, priv) {
		t.Error("the private key was changed")
	}
}

// TestGlobalFlagsAnywhere: --config, --repo and --password-file work before
// and after the command, and from HAUL_CONFIG, HAUL_REPOSITORY and
// HAUL_PASSWORD_FILE.
func TestGlobalFlagsAnywhere(t *testing.T) {
	dir, cfg := newSetup(t)
	if _, e, c := haulRun(t, "--config", cfg, "init", "--create-password"); c != 0 {
		t.Fatalf("init: %d %s", c, e)
	}
	for _, args := range [][]string{
		{"--config", cfg, "snapshots", "--json"},
		{"snapshots", "--config", cfg, "--json"},
		{"snapshots", "-c", cfg, "--json"},
		{"--config", "/nonexistent.toml", "snapshots", "--config", cfg, "--json"}, // innermost wins
	} {
		out, e, c := haulRun(t, args...)
		if c != 0 || strings.TrimSpace(out) != "[]" {
			t.Errorf("haul %v: exit %d out %q err %q; want 0 and []", args, c, out, e)
		}
	}
	if _, e, c := haulRun(t, "snapshots", "--config", "/nonexistent.toml"); c != exitConfig || !strings.Contains(e, "/nonexistent.toml") {
		t.Errorf("missing config: exit %d %q, want 2 naming the file", c, e)
	}

	// A second repository through the environment and through flags.
	if _, e, c := haulRun(t, "init", "--config", cfg, "--repo", filepath.Join(dir, "repo2")); c != 0 {
		t.Fatalf("init --repo: %d %s", c, e)
	}
	t.Setenv("HAUL_CONFIG", cfg)
	t.Setenv("HAUL_REPOSITORY", filepath.Join(dir, "repo2"))
	if out, e, c := haulRun(t, "snapshots", "--json"); c != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("env: exit %d %q %q", c, out, e)
	}
	t.Setenv("HAUL_REPOSITORY", filepath.Join(dir, "missing"))
	if _, e, c := haulRun(t, "snapshots"); c != exitConfig || !strings.Contains(e, "missing") {
		t.Errorf("HAUL_REPOSITORY to a missing repository: exit %d %q, want 2 naming it", c, e)
	}
	t.Setenv("HAUL_REPOSITORY", "")
	wrong := filepath.Join(dir, "wrong-password")
	if err := os.WriteFile(wrong, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HAUL_PASSWORD_FILE", wrong)
	if _, _, c := haulRun(t, "snapshots"); c != exitConfig {
		t.Errorf("HAUL_PASSWORD_FILE with a wrong password: exit %d, want 2", c)
	}
	if _, e, c := haulRun(t, "snapshots", "--password-file", filepath.Join(dir, "password")); c != 0 {
		t.Errorf("--password-file after the command beats HAUL_PASSWORD_FILE: exit %d %s", c, e)
	}
}

// TestConfigExampleIsAccepted: what `haul config example` prints passes
// `haul check-config`, and check-config's --json has a fixed shape.
func TestConfigExampleIsAccepted(t *testing.T) {
	out, _, c := haulRun(t, "config", "example")
	if c != 0 || !strings.Contains(out, "exclude = ") || !strings.Contains(out, "[[hosts]]") {
		t.Fatalf("config example: exit %d\n%s", c, out)
	}
	f := filepath.Join(t.TempDir(), "haul.toml")
	if err := os.WriteFile(f, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, c := haulRun(t, "check-config", "--config", f); c != 0 || !strings.Contains(e, "warning: password_file") {
		t.Errorf("check-config on the example: exit %d, stderr %q; want 0 and warnings for the files it names", c, e)
	}
	js, _, c := haulRun(t, "check-config", "--config", f, "--json")
	var res checkConfigResult
	if err := json.Unmarshal([]byte(js), &res); err != nil || c != 0 || !res.OK || len(res.Hosts) != 1 || res.Hosts[0] != "vps" || len(res.Warnings) == 0 {
		t.Errorf("check-config --json: exit %d %v %+v\n%s", c, err, res, js)
	}

	bad := strings.Replace(out, `exclude = [`, `exclude = ["[oops", `, 1)
	if err := os.WriteFile(f, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	js, _, c = haulRun(t, "check-config", "--config", f, "--json")
	res = checkConfigResult{}
	if err := json.Unmarshal([]byte(js), &res); err != nil || c != exitConfig || res.OK || !strings.Contains(res.Error, "[oops") {
		t.Errorf("check-config --json on a bad pattern: exit %d %v %+v", c, err, res)
	}
	if _, e, c := haulRun(t, "check-config", "--config", f); c != exitConfig || !strings.Contains(e, `host "vps": exclude`) {
		t.Errorf("check-config on a bad pattern: exit %d %q", c, e)
	}
}

func TestCompletionAndMan(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "complete -F _haul_complete haul",
		"zsh":  "#compdef haul",
		"fish": "complete -c haul",
	} {
		out, e, c := haulRun(t, "completion", shell)
		if c != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d %q, lacks %q", shell, c, e, want)
		}
	}
	if _, e, c := haulRun(t, "completion", "tcsh"); c != exitConfig || !strings.Contains(e, "bash, zsh, fish") {
		t.Errorf("completion tcsh: exit %d %q", c, e)
	}
	out, _, c := haulRun(t, "man")
	for _, want := range []string{".TH haul 1", "check-config", "--password-file", "--repo"} {
		if c != 0 || !strings.Contains(out, want) {
			t.Errorf("man lacks %q", want)
		}
	}
	// The words the shell scripts ask for: commands, then a command's flags
	// including the global ones. urfave/cli v2 reads the word being
	// completed from os.Args, so the test sets it as the shell would.
	saved := os.Args
	t.Cleanup(func() { os.Args = saved })
	os.Args = []string{"haul", "--generate-bash-completion"}
	out, _, _ = haulRun(t, "--generate-bash-completion")
	if !strings.Contains(out, "snapshots\n") || !strings.Contains(out, "check-config\n") {
		t.Errorf("command completion:\n%s", out)
	}
	os.Args = []string{"haul", "snapshots", "-", "--generate-bash-completion"}
	out, _, _ = haulRun(t, "snapshots", "-", "--generate-bash-completion")
	for _, want := range []string{"--host", "--config", "--repo", "--password-file"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("flag completion for snapshots lacks %s:\n%s", want, out)
		}
	}
}

// TestKeyMachine: `haul key machine` gives a repository whose password haul
// generated the low-cost key (and says so the second time), and refuses a
// passphrase, leaving its key as it was.
func TestKeyMachine(t *testing.T) {
	keyOf := func(t *testing.T, repoDir string) (string, int) {
		t.Helper()
		keys, _ := filepath.Glob(filepath.Join(repoDir, "keys", "*"))
		if len(keys) != 1 {
			t.Fatalf("keys %v, want exactly one", keys)
		}
		var kf struct{ N int }
		b, _ := os.ReadFile(keys[0])
		if err := json.Unmarshal(b, &kf); err != nil {
			t.Fatal(err)
		}
		return filepath.Base(keys[0]), kf.N
	}

	dir, cfg := newSetup(t)
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("Jx3_uQ9vLm2Pz8Rk4Tn6Wb1Yc5Hd7Fg0Se2Aq4Vo6Xi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, c := haulRun(t, "init", "--config", cfg); c != 0 {
		t.Fatalf("init: exit %d: %s", c, e)
	}
	before, n := keyOf(t, filepath.Join(dir, "repo"))
	if n == repo.MachineKeyKDF.N {
		t.Fatalf("init without --create-password made a key at the machine cost already")
	}
	out, e, c := haulRun(t, "key", "machine", "--config", cfg, "--json")
	if c != 0 {
		t.Fatalf("key machine: exit %d: %s", c, e)
	}
	var res keyMachineResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Replaced != before || res.Already {
		t.Fatalf("key machine --json: %s (%v), want the key %s replaced", out, err, before)
	}
	after, n := keyOf(t, filepath.Join(dir, "repo"))
	if after != res.Key || n != repo.MachineKeyKDF.N {
		t.Errorf("key %s with N=%d, want %s with N=%d", after, n, res.Key, repo.MachineKeyKDF.N)
	}
	testenv.Restic(t, filepath.Join(dir, "repo"), pw, "cat", "config")
	if out, _, c := haulRun(t, "key", "machine", "--config", cfg); c != 0 || !strings.Contains(out, "already has the low scrypt cost") {
		t.Errorf("second key machine: exit %d: %s", c, out)
	}

	// A passphrase keeps restic's cost: exit 2, the key untouched.
	dir, cfg = newSetup(t)
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, c := haulRun(t, "init", "--config", cfg); c != 0 {
		t.Fatalf("init: exit %d: %s", c, e)
	}
	before, _ = keyOf(t, filepath.Join(dir, "repo"))
	_, e, c = haulRun(t, "key", "machine", "--config", cfg)
	if c != exitConfig || !strings.Contains(e, "not one haul generated") {
		t.Errorf("key machine on a passphrase: exit %d: %s; want %d naming the cause", c, e, exitConfig)
	}
	if k, _ := keyOf(t, filepath.Join(dir, "repo")); k != before {
		t.Errorf("key changed from %s to %s on a refused run", before, k)
	}
}
