package backup_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/treecmp"
)

// TestBackupOverSSHD is the backup path end to end: haul pulls through a
// real sshd's forced command, and the stock restic CLI lists, checks,
// restores and deduplicates against what haul wrote.
func TestBackupOverSSHD(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.data)

	first := e.backup()
	if first.Hosts[0].ChunksWanted == 0 {
		t.Fatal("first backup asked for no chunks")
	}

	// The reference reader.
	var sns []struct {
		Hostname string   `json:"hostname"`
		Paths    []string `json:"paths"`
	}
	must(t, json.Unmarshal(e.restic("snapshots", "--json"), &sns))
	if len(sns) != 1 || sns[0].Hostname != "vps" || len(sns[0].Paths) != 1 || sns[0].Paths[0] != e.data {
		t.Fatalf("restic snapshots: %+v", sns)
	}
	e.restic("check", "--read-data")
	target := t.TempDir()
	e.restic("restore", "latest", "--target", target)
	diffs, err := treecmp.Compare(e.data, filepath.Join(target, e.data), treecmp.Options{Owner: true, DirMtime: true, Hardlinks: true})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("restic's restore of haul's snapshot differs from the source:\n%s", strings.Join(diffs, "\n"))
	}

	// restic's own dedup for the same change, in a repository with haul's
	// chunker parameters.
	rrepo := filepath.Join(t.TempDir(), "restic-repo")
	testenv.Restic(t, rrepo, e.pwFile, "init", "--copy-chunker-params", "--from-repo", e.repo, "--from-password-file", e.pwFile)
	testenv.Restic(t, rrepo, e.pwFile, "backup", "--no-scan", e.data)
	before := dirSize(t, rrepo)

	// 1 MiB changed inside the 20 MiB file, 100 KiB appended to a log.
	f, err := os.OpenFile(filepath.Join(e.data, "db", "big.bin"), os.O_WRONLY, 0)
	must(t, err)
	patch := make([]byte, 1<<20)
	for i := range patch {
		patch[i] = byte(i * 7)
	}
	_, err = f.WriteAt(patch, 9<<20)
	must(t, err)
	must(t, f.Close())
	lf, err := os.OpenFile(filepath.Join(e.data, "logs", "pangolin.log"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	for n := 0; n < 100<<10; {
		k, _ := fmt.Fprintf(lf, "2026-11-27T09:%02d:%02dZ INFO GET /api/v1/resource/%d 200\n", n%60, n%59, n)
		n += k
	}
	must(t, lf.Close())

	second := e.backup()
	testenv.Restic(t, rrepo, e.pwFile, "backup", "--no-scan", e.data)
	resticAdded := dirSize(t, rrepo) - before
	h := second.Hosts[0]
	wire := h.Wire.BytesIn + h.Wire.BytesOut
	limit := resticAdded + resticAdded/10 + 128<<10
	t.Logf("after the change: haul moved %d bytes over SSH (%d chunks, %d chunk bytes); restic's repository grew %d bytes; limit %d",
		wire, h.ChunksWanted, h.ChunkBytes, resticAdded, limit)
	if wire > limit {
		t.Errorf("haul moved %d bytes over SSH, more than restic's %d + 10%% + 128 KiB", wire, resticAdded)
	}
	if h.ChunksWanted == 0 {
		t.Error("second backup asked for no chunks although data changed")
	}

	third := e.backup()
	h = third.Hosts[0]
	wire = h.Wire.BytesIn + h.Wire.BytesOut
	t.Logf("no change: %d bytes over SSH, %d files re-read", wire, h.Manifest.FilesRead)
	if wire >= 64<<10 {
		t.Errorf("a backup with nothing changed moved %d bytes, want < 64 KiB", wire)
	}
	if h.Manifest.FilesRead != 0 || h.ChunksWanted != 0 {
		t.Errorf("a backup with nothing changed re-read %d files and asked for %d chunks", h.Manifest.FilesRead, h.ChunksWanted)
	}

	// restic backup of the same tree into haul's repository shares its
	// data blobs.
	size := dirSize(t, e.repo)
	e.restic("backup", "--no-scan", "--host", "vps", e.data)
	grew := dirSize(t, e.repo) - size
	t.Logf("restic backup of the same tree grew haul's repository by %d of %d bytes", grew, size)
	if grew*100 >= size {
		t.Errorf("restic backup grew haul's repository by %d bytes (>= 1%% of %d): blobs are not shared", grew, size)
	}
	e.restic("check", "--read-data")
	if n := e.snapshotCount(); n != 4 {
		t.Errorf("want 4 snapshots, have %d", n)
	}
	// haul reads the snapshot restic wrote.
	out := e.haul("snapshots")
	if !strings.Contains(out, "4 snapshots") {
		t.Errorf("haul snapshots does not list restic's snapshot:\n%s", out)
	}
}

// TestForcedCommandRefusals: the backup key can run haul-agent's verbs and
// nothing else.
func TestForcedCommandRefusals(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.data, "f"), "x", 0o644)
	run := func(key testenv.KeyPair, extra []string, remote ...string) (string, error) {
		args := e.sshd.SSHArgs(key)
		args = append(args[:1:1], append(extra, args[1:]...)...)
		args = append(args, remote...)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		name   string
		key    testenv.KeyPair
		remote string
		want   string
	}{
		{"shell", e.backupKey, "sh -c id", "refused"},
		{"injection", e.backupKey, "serve; rm -rf /", "refused"},
		{"unknown verb", e.backupKey, "frobnicate", "refused"},
		{"no command", e.backupKey, "", "no command given"},
		{"restore with backup key", e.backupKey, "restore", "restore refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var remote []string
			if tc.remote != "" {
				remote = []string{tc.remote}
			}
			out, err := run(tc.key, nil, remote...)
			if err == nil {
				t.Fatalf("accepted; output: %s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output does not say %q: %s", tc.want, out)
			}
		})
	}
	t.Run("pty", func(t *testing.T) {
		out, err := run(e.backupKey, []string{"-tt"}, "backup")
		if err == nil || !strings.Contains(strings.ToLower(out), "pty") && !strings.Contains(out, "terminal") {
			t.Fatalf("pty not refused: %v %s", err, out)
		}
	})
	t.Run("port forwarding", func(t *testing.T) {
		out, err := run(e.backupKey, []string{"-o", "ExitOnForwardFailure=yes", "-W", e.sshd.Addr})
		if err == nil {
			t.Fatalf("stdio forwarding allowed: %s", out)
		}
		if !strings.Contains(out, "prohibited") && !strings.Contains(out, "forwarding failed") {
			t.Fatalf("unexpected refusal message: %s", out)
		}
	})
	t.Run("restore key may restore", func(t *testing.T) {
		// The restore entry gets past the verb check (the session then
		// waits for a hello, which an empty stdin never sends).
		out, _ := run(e.restKey, nil, "restore")
		if strings.Contains(out, "restore refused") {
			t.Fatalf("restore key refused: %s", out)
		}
	})
	// None of that left a snapshot or changed the data.
	if n := e.snapshotCount(); n != 0 {
		t.Fatalf("%d snapshots after refused commands", n)
	}
}

// TestHostKeyMismatch: haul connects only to the pinned host key and says
// how to update the pin.
func TestHostKeyMismatch(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.data, "f"), "x", 0o644)
	other := testenv.NewKeyPair(t, t.TempDir(), "impostor")
	kh := filepath.Join(t.TempDir(), "known_hosts")
	writeFile(t, kh, fmt.Sprintf("[127.0.0.1]:%d %s\n", e.sshd.Port, other.AuthorizedLine), 0o600)
	e.writeConfig(e.sshd.Addr, kh)
	_, stderr, code := e.haulCode("backup")
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
	}
	for _, want := range []string{"HOST KEY MISMATCH", "ssh-keygen -R", "haul hostkey pin"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("message lacks %q:\n%s", want, stderr)
		}
	}
	// No pin at all is refused too.
	writeFile(t, kh, "", 0o600)
	_, stderr, code = e.haulCode("backup")
	if code != 1 || !strings.Contains(stderr, "pins no key") {
		t.Fatalf("empty known_hosts: exit %d: %s", code, stderr)
	}
	if n := e.snapshotCount(); n != 0 {
		t.Fatalf("%d snapshots after refused connections", n)
	}
}

// TestConnectionCutMidTransfer: no snapshot, a clean repository, and the
// next backup completes without asking again for what was stored.
func TestConnectionCutMidTransfer(t *testing.T) {
	e := newEnv(t)
	randomFile(t, filepath.Join(e.data, "big"), 24<<20)
	writeFile(t, filepath.Join(e.data, "small"), "x", 0o644)
	proxy := startCutProxy(t, e.sshd.Addr, 12<<20)
	// The proxy listens on another port: pin the same key for it.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	writeFile(t, kh, fmt.Sprintf("[127.0.0.1]:%d %s\n", proxy.ln.Addr().(*net.TCPAddr).Port, e.sshd.HostKey.AuthorizedLine), 0o600)
	e.writeConfig(proxy.ln.Addr().String(), kh)
	out, stderr, code := e.haulCode("backup", "--json")
	if code != 1 {
		t.Fatalf("cut backup: exit %d, want 1\n%s\n%s", code, out, stderr)
	}
	if n := e.snapshotCount(); n != 0 {
		t.Fatalf("a snapshot was written by an interrupted backup")
	}
	e.restic("check")
	size := dirSize(t, e.repo)
	t.Logf("interrupted after %d bytes; repository holds %d bytes", proxy.moved.Load(), size)

	e.writeConfig(e.sshd.Addr, e.sshd.KnownHosts)
	r := e.backup()
	h := r.Hosts[0]
	t.Logf("resumed backup moved %d chunk bytes (%d chunks)", h.ChunkBytes, h.ChunksWanted)
	if h.ChunkBytes >= 24<<20 {
		t.Errorf("the next backup asked for all %d bytes again: nothing stored was reused", h.ChunkBytes)
	}
	e.restic("check", "--read-data")
	target := t.TempDir()
	e.restic("restore", "latest", "--target", target)
	diffs, err := treecmp.Compare(e.data, filepath.Join(target, e.data), treecmp.Options{})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("restore differs: %v", diffs)
	}
}
