// Package nixos_test checks the NixOS side of haul with Debian's nix-bin and
// no nixpkgs: every .nix file parses; the modules and the VPS host evaluate
// with nixos/tests/eval (a module system following nixpkgs' lib, against
// typed declarations of the nixpkgs options they set) without colliding
// with nixpkgs' own options; the rendered units pass systemd-analyze verify
// and the compose file docker compose config; a switch recreates only the
// containers whose files changed (real dockerd); the start script keeps
// Pangolin's secret and settings; vendorHash matches go.sum; and the pure
// renderer behind services.haul-agent (nixos/lib/agent-config.nix) produces
// configs that haul-agent accepts and authorized_keys lines that grant
// exactly what they should, through the real agent and a real sshd.
//
// The system build and the VM test need nixpkgs and network access; they
// run with `nix flake check` elsewhere (docs/nixos.md).
package nixos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/nixos/nixeval"
	"golang.org/x/crypto/ssh"
)

// nixCmd runs nix-instantiate without a daemon (nixeval.Cmd).
func nixCmd(t *testing.T, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	return nixeval.Cmd(t, ctx, args...)
}

// TestEveryNixFileParses runs `nix-instantiate --parse` on every .nix file
// in the repository.
func TestEveryNixFileParses(t *testing.T) {
	root := testenv.ModuleRoot(t)
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == ".git" || rel == "bin" || rel == filepath.Join("puller", "internal", "restic")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".nix") {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A broken walk must not pass as "nothing to parse".
	for _, want := range []string{
		"flake.nix",
		"nixos/lib/agent-config.nix",
		"nixos/modules/haul-agent.nix",
		"nixos/modules/pangolin-compose.nix",
		"nixos/lib/pangolin-compose-prepare.nix",
		"nixos/tests/eval/default.nix",
		"nixos/hosts/hetzner/default.nix",
		"nixos/hosts/hetzner/disko.nix",
		"nixos/tests/backup-restore.nix",
	} {
		if !slices.Contains(files, filepath.FromSlash(want)) {
			t.Errorf("%s was not found among the .nix files (%v)", want, files)
		}
	}
	for _, f := range files {
		t.Run(filepath.ToSlash(f), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := nixCmd(t, ctx, "--parse", filepath.Join(root, f))
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = nil, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("nix-instantiate --parse %s: %v\n%s", f, err, stderr.String())
			}
		})
	}
}

// rendered is what nixos/lib/agent-config.nix returns (the parts tested).
type rendered struct {
	Config           json.RawMessage `json:"config"`
	ConfigJSON       string          `json:"configJSON"`
	AuthorizedKeys   []string        `json:"authorizedKeys"`
	ReadyMarker      string          `json:"readyMarker"`
	FailedAssertions []string        `json:"failedAssertions"`
}

// render evaluates the renderer on args, a Nix attrset expression, with
// `nix-instantiate --eval --strict --json`: no nixpkgs, no network.
func render(t *testing.T, args string) rendered {
	t.Helper()
	lib := filepath.Join(testenv.ModuleRoot(t), "nixos", "lib", "agent-config.nix")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expr := fmt.Sprintf("import %s (%s)", lib, args)
	cmd := nixCmd(t, ctx, "--eval", "--strict", "--json", "--expr", expr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nix-instantiate --eval %s: %v\n%s", expr, err, stderr.String())
	}
	var r rendered
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("renderer output is not the expected JSON: %v\n%s", err, stdout.String())
	}
	return r
}

// nixString quotes s as a Nix string literal.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `${`, `\${`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func nixList(items ...string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = nixString(s)
	}
	return "[ " + strings.Join(q, " ") + " ]"
}

// agentConfig is the subset of check-config's output the tests compare.
type agentConfig struct {
	Host      string   `json:"host"`
	DataPaths []string `json:"data_paths"`
	StateDir  string   `json:"state_dir"`
	Quiesce   struct {
		Mode           string   `json:"mode"`
		Containers     []string `json:"containers"`
		ComposeProject string   `json:"compose_project"`
		Units          []string `json:"units"`
		DockerHost     string   `json:"docker_host"`
	} `json:"quiesce"`
	ReadyMarker         string `json:"ready_marker"`
	AllowInplaceRestore bool   `json:"allow_inplace_restore"`
	AllowSpecialFiles   bool   `json:"allow_special_files"`
	ChunkWorkers        int    `json:"chunk_workers"`
}

// checkConfig runs `haul-agent check-config` on path and returns its exit
// error, stdout and stderr.
func checkConfig(t *testing.T, agent, path string) (agentConfig, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agent, "check-config", "--offline", "--config", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var c agentConfig
	if err == nil {
		if jerr := json.Unmarshal(stdout.Bytes(), &c); jerr != nil {
			t.Fatalf("check-config printed something that is not its config: %v\n%s", jerr, stdout.String())
		}
	}
	return c, stderr.String(), err
}

// safeTempDir is a temp dir whose path a shell reads as one word: the
// renderer refuses forced commands with anything else, and t.TempDir()
// names carry the test name's punctuation.
func safeTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "haul-nixos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// keyLine is the shape every rendered authorized_keys line must have.
var keyLine = regexp.MustCompile(`^command="([^"]+)",restrict (ssh-ed25519 [A-Za-z0-9+/]+=* ?.*)$`)

// runForced runs a forced command the way sshd does (the login shell's -c,
// the client's command in SSH_ORIGINAL_COMMAND), with stdin closed.
func runForced(t *testing.T, command, verb string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "SSH_ORIGINAL_COMMAND="+verb)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s with verb %q did not finish: %v", command, verb, ctx.Err())
	}
	return string(out), err
}

// TestAgentConfigRenders evaluates the renderer on option sets like the
// module's, has haul-agent check what it rendered, and runs each rendered
// forced command to see what the key may do.
func TestAgentConfigRenders(t *testing.T) {
	agent := filepath.Join(testenv.Binaries(t), "haul-agent")
	keys := t.TempDir()
	backup := testenv.NewKeyPair(t, keys, "backup").AuthorizedLine
	backup2 := testenv.NewKeyPair(t, keys, "backup2").AuthorizedLine + " second-nas"
	restore := testenv.NewKeyPair(t, keys, "restore").AuthorizedLine + " nas-restore"

	type want struct {
		mode, composeProject string
		containers, units    []string
		readyMarker          string // "" means <state>/ready
		inplace, special     bool
		chunkWorkers         int // 0: unset
	}
	cases := []struct {
		name          string
		opts          func(data, state string) string // Nix attrs, without braces
		backup, rstor []string
		want          want
	}{
		{
			name: "backup key only, no quiesce",
			opts: func(data, state string) string {
				return fmt.Sprintf(`dataPaths = %s; stateDir = %s;`, nixList(data), nixString(state))
			},
			backup: []string{backup},
			want:   want{mode: "none"},
		},
		{
			name: "backup and restore keys, stop the compose project in order",
			opts: func(data, state string) string {
				return fmt.Sprintf(`dataPaths = %s; stateDir = %s; host = "vps";
					quiesce = { mode = "stop"; composeProject = "pangolin"; containers = [ "pangolin" "gerbil" "traefik" ];
					            dockerHost = "unix:///run/docker.sock"; timeout = "45s"; guardTimeout = "1m30s"; };
					keepPrevious = 3; lockTimeout = "10m"; chunkWorkers = 2;`, nixList(data), nixString(state))
			},
			backup: []string{backup, backup2},
			rstor:  []string{restore},
			want:   want{mode: "stop", composeProject: "pangolin", containers: []string{"pangolin", "gerbil", "traefik"}, chunkWorkers: 2},
		},
		{
			name: "pause the compose project (the Pangolin default)",
			opts: func(data, state string) string {
				return fmt.Sprintf(`dataPaths = %s; stateDir = %s; quiesce = { mode = "pause"; composeProject = "pangolin"; };`,
					nixList(data, data+"-2"), nixString(state))
			},
			backup: []string{backup},
			rstor:  []string{restore},
			want:   want{mode: "pause", composeProject: "pangolin"},
		},
		{
			name: "stop systemd units, custom ready marker, in-place restores allowed",
			opts: func(data, state string) string {
				return fmt.Sprintf(`dataPaths = %s; stateDir = %s; readyMarker = %s; allowInplaceRestore = true; allowSpecialFiles = true; keepPrevious = 0;
					quiesce = { mode = "stop"; units = [ "docker-pangolin.service" "docker-gerbil.service" ]; };`,
					nixList(data), nixString(state), nixString(state+"-marker/ready"))
			},
			rstor: []string{restore},
			want:  want{mode: "stop", units: []string{"docker-pangolin.service", "docker-gerbil.service"}, readyMarker: "-marker/ready", inplace: true, special: true},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := safeTempDir(t)
			data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
			configPath := filepath.Join(dir, "etc", "config.json")
			args := fmt.Sprintf(`{ agentBin = %s; configPath = %s; %s backupKeys = %s; restoreKeys = %s; }`,
				nixString(agent), nixString(configPath), tc.opts(data, state), nixList(tc.backup...), nixList(tc.rstor...))
			r := render(t, args)
			if len(r.FailedAssertions) > 0 {
				t.Fatalf("the renderer refused a valid configuration:\n%s", strings.Join(r.FailedAssertions, "\n"))
			}

			// haul-agent must accept exactly what the module installs.
			if err := os.MkdirAll(filepath.Dir(configPath), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(configPath, []byte(r.ConfigJSON), 0o644); err != nil {
				t.Fatal(err)
			}
			got, stderr, err := checkConfig(t, agent, configPath)
			if err != nil {
				t.Fatalf("haul-agent check-config rejected the rendered config: %v\n%s\nconfig: %s", err, stderr, r.ConfigJSON)
			}
			wantMarker := filepath.Join(state, "ready")
			if tc.want.readyMarker != "" {
				wantMarker = state + tc.want.readyMarker
			}
			if got.ReadyMarker != wantMarker || r.ReadyMarker != wantMarker {
				t.Errorf("ready marker: agent uses %q, renderer reports %q, want %q (the stack's gate must watch the file the agent writes)",
					got.ReadyMarker, r.ReadyMarker, wantMarker)
			}
			if got.AllowInplaceRestore != tc.want.inplace || got.AllowSpecialFiles != tc.want.special {
				t.Errorf("agent has allow_inplace_restore %v, allow_special_files %v; want %v and %v (config: %s)",
					got.AllowInplaceRestore, got.AllowSpecialFiles, tc.want.inplace, tc.want.special, r.ConfigJSON)
			}
			if got.ChunkWorkers != tc.want.chunkWorkers {
				t.Errorf("agent has chunk_workers %d, want %d (config: %s)", got.ChunkWorkers, tc.want.chunkWorkers, r.ConfigJSON)
			}
			if got.StateDir != state || !slices.Contains(got.DataPaths, data) {
				t.Errorf("paths: agent has state_dir %q, data_paths %v; want %q and %q", got.StateDir, got.DataPaths, state, data)
			}
			if got.Quiesce.Mode != tc.want.mode || got.Quiesce.ComposeProject != tc.want.composeProject ||
				!slices.Equal(got.Quiesce.Containers, tc.want.containers) || !slices.Equal(got.Quiesce.Units, tc.want.units) {
				t.Errorf("quiesce: agent has %+v, want %+v", got.Quiesce, tc.want)
			}

			// One line per key, backup keys first, each with the forced
			// command and restrict, and only restore keys allowed to restore.
			if len(r.AuthorizedKeys) != len(tc.backup)+len(tc.rstor) {
				t.Fatalf("%d authorized_keys lines for %d keys: %q", len(r.AuthorizedKeys), len(tc.backup)+len(tc.rstor), r.AuthorizedKeys)
			}
			serve := agent + " serve --config " + configPath
			for i, line := range r.AuthorizedKeys {
				isRestore := i >= len(tc.backup)
				key := tc.rstor
				if !isRestore {
					key = tc.backup
				} else {
					i -= len(tc.backup)
				}
				m := keyLine.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("line %q does not start with command=\"...\",restrict followed by the key", line)
				}
				if m[2] != key[i] {
					t.Errorf("line %q carries key %q, want %q", line, m[2], key[i])
				}
				wantCmd := serve
				if isRestore {
					wantCmd += " --allow-restore"
				}
				if m[1] != wantCmd {
					t.Errorf("forced command %q, want %q", m[1], wantCmd)
				}
				if !isRestore && strings.Contains(line, "allow-restore") {
					t.Errorf("a backup key's line allows restore: %q", line)
				}

				// The command as sshd would run it: it must start the agent
				// with this config, and the agent must refuse restore
				// unless the line allows it.
				out, err := runForced(t, m[1], "version")
				if err != nil || !strings.HasPrefix(out, "haul-agent ") {
					t.Errorf("forced command %q with verb version: %v\n%s", m[1], err, out)
				}
				out, err = runForced(t, m[1], "restore")
				refused := strings.Contains(out, "restore refused")
				if !isRestore && (err == nil || !refused) {
					t.Errorf("a backup key's command was not refused a restore (err %v):\n%s", err, out)
				}
				if isRestore && refused {
					t.Errorf("a restore key's command was refused a restore:\n%s", out)
				}
				out, err = runForced(t, m[1], "sh -c id")
				if err == nil || !strings.Contains(out, "refused") {
					t.Errorf("a key's command ran something other than an agent verb (err %v):\n%s", err, out)
				}
			}
		})
	}
}

// TestRenderedKeysThroughSSHD puts rendered lines into a real sshd's
// authorized_keys and logs in with each key: sshd must parse the line, run
// the forced command whatever the client asks, and the backup key must not
// restore.
func TestRenderedKeysThroughSSHD(t *testing.T) {
	agent := filepath.Join(testenv.Binaries(t), "haul-agent")
	dir := safeTempDir(t)
	backup := testenv.NewKeyPair(t, dir, "backup")
	restore := testenv.NewKeyPair(t, dir, "restore")
	configPath := filepath.Join(dir, "config.json")
	r := render(t, fmt.Sprintf(`{ agentBin = %s; configPath = %s; dataPaths = %s; stateDir = %s; backupKeys = %s; restoreKeys = %s; }`,
		nixString(agent), nixString(configPath), nixList(filepath.Join(dir, "data")), nixString(filepath.Join(dir, "state")),
		nixList(backup.AuthorizedLine), nixList(restore.AuthorizedLine)))
	if len(r.FailedAssertions) > 0 || len(r.AuthorizedKeys) != 2 {
		t.Fatalf("render: %d lines, failed assertions %q", len(r.AuthorizedKeys), r.FailedAssertions)
	}
	if err := os.WriteFile(configPath, []byte(r.ConfigJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}

	// testenv writes "<options> <key>"; split the rendered lines so that
	// sshd reads them byte for byte.
	var authorized []testenv.AuthorizedKey
	for i, kp := range []testenv.KeyPair{backup, restore} {
		opts, ok := strings.CutSuffix(r.AuthorizedKeys[i], " "+kp.AuthorizedLine)
		if !ok {
			t.Fatalf("line %q does not end with its key %q", r.AuthorizedKeys[i], kp.AuthorizedLine)
		}
		authorized = append(authorized, testenv.AuthorizedKey{Key: kp, Options: opts})
	}
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Keys: authorized})

	run := func(kp testenv.KeyPair, command string) (string, error) {
		t.Helper()
		client, err := ssh.Dial("tcp", sshd.Addr, &ssh.ClientConfig{
			User:            sshd.User,
			Auth:            []ssh.AuthMethod{ssh.PublicKeys(kp.Signer(t))},
			HostKeyCallback: ssh.FixedHostKey(sshd.HostKey.PublicKey(t)),
			Timeout:         10 * time.Second,
		})
		if err != nil {
			t.Fatalf("ssh to %s: %v\nsshd log:\n%s", sshd.Addr, err, sshd.LogTail())
		}
		defer client.Close()
		sess, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		var stdout, stderr bytes.Buffer
		sess.Stdout, sess.Stderr = &stdout, &stderr
		done := make(chan error, 1)
		go func() { done <- sess.Run(command) }()
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%q over ssh did not finish", command)
		}
		return stdout.String() + stderr.String(), err
	}

	if out, err := run(backup, "version"); err != nil || !strings.HasPrefix(out, "haul-agent ") {
		t.Errorf("backup key, version: %v\n%s", err, out)
	}
	if out, err := run(backup, "restore"); err == nil || !strings.Contains(out, "restore refused") {
		t.Errorf("backup key, restore: want refused, got err %v\n%s", err, out)
	}
	if out, err := run(backup, "cat /etc/passwd"); err == nil || !strings.Contains(out, "refused") || strings.Contains(out, "root:") {
		t.Errorf("backup key ran a command of its own choosing: err %v\n%s", err, out)
	}
	if out, _ := run(restore, "restore"); strings.Contains(out, "restore refused") {
		t.Errorf("restore key, restore: refused\n%s", out)
	}
}

// TestAgentConfigRefusesMisconfiguration checks that the renderer turns a
// misconfiguration into an assertion that says what is wrong, and, where
// haul-agent has the same rule, that the agent would refuse the rendered
// file too: the module is never more lenient than the agent.
func TestAgentConfigRefusesMisconfiguration(t *testing.T) {
	agent := filepath.Join(testenv.Binaries(t), "haul-agent")
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJR03TaUKD9OXod4v0Ge1GCXrkXiSb9P37HXnVjP0sse nas"
	const base = `agentBin = "/nix/store/0000-haul-agent/bin/haul-agent"; configPath = "/etc/haul-agent/config.json";`
	cases := []struct {
		name, args, message string
		agentRejects        bool
	}{
		{"relative data path", `dataPaths = [ "var/lib/pangolin" ]; stateDir = "/var/lib/haul-agent";`, "must hold absolute, clean directory paths", true},
		{"no data paths", `dataPaths = [ ]; stateDir = "/var/lib/haul-agent";`, "dataPaths is empty", true},
		{"overlapping data paths", `dataPaths = [ "/srv/a" "/srv/a/b" ]; stateDir = "/var/lib/haul-agent";`, "overlapping directories (/srv/a and /srv/a/b)", true},
		{"state dir inside the data", `dataPaths = [ "/srv" ]; stateDir = "/srv/haul";`, "overlaps the data paths", true},
		{"relative state dir", `dataPaths = [ "/srv" ]; stateDir = "state";`, "stateDir must be an absolute", true},
		{"stop with nothing to stop", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; quiesce.mode = "stop";`, "there is nothing to quiesce", true},
		{"pause systemd units", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; quiesce = { mode = "pause"; units = [ "a.service" ]; };`, "cannot pause systemd units (a.service)", true},
		{"unknown mode", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; quiesce.mode = "freeze";`, `it must be "none", "pause" or "stop"`, true},
		{"bad duration", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; lockTimeout = "ten minutes";`, "must be Go durations", true},
		{"docker host not a socket", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; quiesce.dockerHost = "tcp://10.0.0.1:2375";`, "must be a unix socket URL", false},
		{"ready marker inside the data", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; readyMarker = "/srv/ready";`, "is inside a data path", false},
		{"key with options of its own", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; backupKeys = [ ` + nixString(`from="10.0.0.1" `+key) + ` ];`, "without options of their own", false},
		{"two keys on one line", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; backupKeys = [ ` + nixString(key+"\n"+key) + ` ];`, "on one line", false},
		{"same key for backup and restore", `dataPaths = [ "/srv" ]; stateDir = "/var/lib/haul-agent"; backupKeys = [ "` + key + `" ]; restoreKeys = [ "` + key + ` other-comment" ];`, "listed in both", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, "{ "+base+" "+tc.args+" }")
			found := false
			for _, m := range r.FailedAssertions {
				if strings.Contains(m, tc.message) {
					found = true
				}
			}
			if !found {
				t.Errorf("no failed assertion mentions %q; failed: %q", tc.message, r.FailedAssertions)
			}
			if tc.agentRejects {
				path := filepath.Join(t.TempDir(), "config.json")
				if err := os.WriteFile(path, []byte(r.ConfigJSON), 0o644); err != nil {
					t.Fatal(err)
				}
				if _, stderr, err := checkConfig(t, agent, path); err == nil {
					t.Errorf("haul-agent check-config accepted what the renderer refuses: %s", r.ConfigJSON)
				} else if stderr == "" {
					t.Errorf("haul-agent check-config failed without saying why")
				}
			}
		})
	}
}
