package quiesce_test

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
)

// TestCheckConfig runs `haul-agent check-config` against a real dockerd
// running a Compose-labelled stack: a host ready for its first backup
// passes and says how much room the mirror needs; a missing data path, a
// dead Docker socket and an unknown compose project each fail with a
// message that names the cause and the fix.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	d := testenv.SharedDockerd(t)
	project := "chk" + strings.ToLower(t.Name()[len(t.Name())-6:])
	s := newStack(t, d, project, "", "pangolin")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(s.data, "config", "key"), make([]byte, 1<<20), 0o600))
	agent := filepath.Join(testenv.Binaries(t), "haul-agent")
	run := func(cfg map[string]any) (string, string, error) {
		t.Helper()
		b, err := json.Marshal(cfg)
		must(err)
		p := filepath.Join(t.TempDir(), "agent.json")
		must(os.WriteFile(p, b, 0o600))
		cmd := exec.Command(agent, "check-config", "--config", p)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}
	base := func() map[string]any {
		return map[string]any{
			"host": "handbuilt", "data_paths": []string{s.data + "/config"}, "state_dir": filepath.Join(t.TempDir(), "state"),
			"quiesce": map[string]any{"mode": "stop", "compose_project": project, "docker_host": d.Host},
		}
	}

	out, errOut, err := run(base())
	if err != nil {
		t.Fatalf("check-config on a ready host: %v\n%s", err, errOut)
	}
	var printed map[string]any
	if err := json.Unmarshal([]byte(out), &printed); err != nil {
		t.Errorf("stdout is not the config: %v\n%s", err, out)
	}
	for _, want := range []string{"ok   data path " + s.data + "/config: directory", "ok   docker " + d.Host + ": answers",
		"ok   compose project " + project + ": containers " + project + "-pangolin", "the mirror needs ", " free on the file system of "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, errOut)
		}
	}

	cases := []struct {
		name  string
		edit  func(map[string]any)
		wants []string
	}{
		{"missing data path", func(c map[string]any) { c["data_paths"] = []string{s.data + "/nope"} },
			[]string{"FAIL data path " + s.data + "/nope: " + s.data + "/nope does not exist: create it, or fix data_paths"}},
		{"data path is a file", func(c map[string]any) { c["data_paths"] = []string{s.data + "/config/key"} },
			[]string{"is a file, not a directory"}},
		{"dead docker socket", func(c map[string]any) {
			sock := filepath.Join(t.TempDir(), "docker.sock")
			l, err := net.Listen("unix", sock)
			must(err)
			l.Close() // the socket file stays, nothing answers: a stopped dockerd
			c["quiesce"].(map[string]any)["docker_host"] = "unix://" + sock
		}, []string{"FAIL docker unix://", "the Docker socket does not answer", "systemctl status docker"}},
		{"unknown compose project", func(c map[string]any) { c["quiesce"].(map[string]any)["compose_project"] = "pangolin-typo" },
			[]string{"FAIL compose project pangolin-typo: no container", "com.docker.compose.project=pangolin-typo", "docker compose ls -a"}},
		{"unknown container", func(c map[string]any) {
			q := c["quiesce"].(map[string]any)
			delete(q, "compose_project")
			q["containers"] = []string{"traefik-typo"}
		}, []string{"FAIL container traefik-typo"}},
	}
	for _, tc := range cases {
		cfg := base()
		tc.edit(cfg)
		_, errOut, err := run(cfg)
		if err == nil {
			t.Errorf("%s: check-config passed:\n%s", tc.name, errOut)
			continue
		}
		for _, want := range append(tc.wants, "is not ready for a first backup") {
			if !strings.Contains(errOut, want) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, want, errOut)
			}
		}
	}

	// The room check fails when it should: a state dir on a 1 MiB tmpfs.
	if os.Geteuid() == 0 {
		small := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", small).Run() })
		cfg := base()
		cfg["state_dir"] = filepath.Join(small, "state")
		_, errOut, err := run(cfg)
		if err == nil || !strings.Contains(errOut, "FAIL state dir "+small+"/state: the mirror needs") || !strings.Contains(errOut, "free space, grow the disk, or move state_dir") {
			t.Errorf("state dir without room: %v\n%s", err, errOut)
		}
	}

	// --offline validates the file only, as a Nix build does.
	cfg := base()
	cfg["data_paths"] = []string{"/nonexistent/pangolin"}
	b, _ := json.Marshal(cfg)
	p := filepath.Join(t.TempDir(), "agent.json")
	must(os.WriteFile(p, b, 0o600))
	if out, err := exec.Command(agent, "check-config", "--offline", "--config", p).CombinedOutput(); err != nil {
		t.Errorf("check-config --offline: %v\n%s", err, out)
	}
}
