package backup_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/haulproject/haul/internal/treecmp"
	"golang.org/x/sys/unix"
)

// swapperEnv makes the test binary a hostile container instead (TestMain):
// it swaps the paths it is given with their ".link" siblings, symlinks to
// root-only files outside the data path, as fast as it can.
const swapperEnv = "HAUL_TEST_SWAPPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(swapperEnv); spec != "" {
		paths := strings.Split(spec, ",")
		for {
			for _, p := range paths {
				_ = unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, p+".link", unix.RENAME_EXCHANGE)
			}
		}
	}
	os.Exit(m.Run())
}

// TestHostileContainerCannotExfiltrate: while a container swaps a file and
// a directory of the data path for symlinks to root-only files outside it
// (renameat2 RENAME_EXCHANGE in a loop), hundreds of backups run over the
// real sshd. No content of a file outside the data path may reach the
// repository: its blob ID (the SHA-256 of its content) is in no index that
// the restic CLI lists, and restic checks the repository.
func TestHostileContainerCannotExfiltrate(t *testing.T) {
	e := newEnv(t)
	outside := filepath.Join(filepath.Dir(filepath.Dir(e.data)), "host-only")
	must(t, os.MkdirAll(filepath.Join(outside, "dir"), 0o700))
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := []byte("SECRET " + hex.EncodeToString(b) + "\n")
	writeFile(t, filepath.Join(outside, "shadow"), string(secret), 0o600)
	writeFile(t, filepath.Join(outside, "dir", "key"), string(secret), 0o600)
	secretID := sha256.Sum256(secret)

	writeFile(t, filepath.Join(e.data, "config.yml"), "server: {}\n", 0o644)
	writeFile(t, filepath.Join(e.data, "keys", "wg.key"), "wireguard\n", 0o600)
	writeFile(t, filepath.Join(e.data, "db.sqlite"), strings.Repeat("page", 10000), 0o644)
	must(t, os.Symlink(filepath.Join(outside, "shadow"), filepath.Join(e.data, "config.yml.link")))
	must(t, os.Symlink(filepath.Join(outside, "dir"), filepath.Join(e.data, "keys.link")))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), swapperEnv+"="+filepath.Join(e.data, "config.yml")+","+filepath.Join(e.data, "keys"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	// At least runs backups, and more (up to 3×) until one met a race:
	// the swapper wins one in a few frozen syncs, by chance.
	runs := 100
	if testing.Short() {
		runs = 20
	}
	var skipped int64
	i := 0
	for ; i < runs || (skipped == 0 && i < 3*runs); i++ {
		var r struct {
			OK    bool `json:"ok"`
			Hosts []struct {
				Freeze struct {
					Skipped  int64    `json:"skipped"`
					Warnings []string `json:"warnings"`
				} `json:"freeze"`
			} `json:"hosts"`
		}
		must(t, json.Unmarshal([]byte(e.haul("backup", "--json")), &r))
		if !r.OK || len(r.Hosts) != 1 {
			t.Fatalf("backup %d failed: %+v", i, r)
		}
		f := r.Hosts[0].Freeze
		if f.Skipped > 0 && len(f.Warnings) == 0 {
			t.Fatalf("backup %d skipped %d entries without a warning", i, f.Skipped)
		}
		if f.Skipped > 0 && skipped == 0 {
			t.Logf("first race reported: %s", f.Warnings[0])
		}
		skipped += f.Skipped
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	blobs := e.restic("list", "blobs")
	sc := bufio.NewScanner(bytes.NewReader(blobs))
	n := 0
	for sc.Scan() {
		n++
		if strings.Contains(sc.Text(), hex.EncodeToString(secretID[:])) {
			t.Fatalf("a root-only file from outside the data path was backed up: %s", sc.Text())
		}
	}
	if n == 0 {
		t.Fatal("restic lists no blobs: the check above checked nothing")
	}
	runs = i
	if got := e.snapshotCount(); got != runs {
		t.Fatalf("%d snapshots, want %d", got, runs)
	}
	// Each snapshot's record keeps its count.
	var sns []struct {
		Haul struct {
			Skipped int64 `json:"mirror_skipped"`
		} `json:"haul"`
	}
	must(t, json.Unmarshal([]byte(e.haul("snapshots", "--json")), &sns))
	var recorded int64
	for _, sn := range sns {
		recorded += sn.Haul.Skipped
	}
	t.Logf("%d backups, %d races skipped in their frozen syncs", runs, skipped)
	if recorded != skipped {
		t.Fatalf("snapshot records count %d skipped entries, the backups reported %d", recorded, skipped)
	}
	if skipped == 0 {
		t.Fatal("no backup met a race: the swapper did not run against the syncs")
	}
	e.restic("check", "--read-data")
}

// TestLongNamesPathsAndWideDirs: a 255-byte file name, a file at a 4095-byte
// absolute path and a directory of 100 000 entries back up over the real
// sshd, and the restic CLI restores them equal to the source.
func TestLongNamesPathsAndWideDirs(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.data, strings.Repeat("n", 255)), "a name of NAME_MAX bytes\n", 0o644)
	p := filepath.Join(e.data, "deep")
	for len(p)+1+255 < 4095 {
		p = filepath.Join(p, strings.Repeat("d", 200))
	}
	must(t, os.MkdirAll(p, 0o755))
	p = filepath.Join(p, strings.Repeat("f", 4095-len(p)-1))
	if len(p) != 4095 {
		t.Fatalf("long path is %d bytes", len(p))
	}
	writeFile(t, p, "at the end of a 4095-byte path\n", 0o640)
	entries := 100_000
	if testing.Short() {
		entries = 5000
	}
	wide := filepath.Join(e.data, "wide")
	must(t, os.Mkdir(wide, 0o755))
	for i := 0; i < entries; i++ {
		name := filepath.Join(wide, fmt.Sprintf("entry-%06d", i))
		content := ""
		if i%997 == 0 {
			content = fmt.Sprintf("entry %d\n", i)
		}
		must(t, os.WriteFile(name, []byte(content), 0o644))
	}

	r := e.backup()
	if got := r.Hosts[0].Manifest.Files; got != int64(entries)+2 {
		t.Fatalf("manifest has %d files, want %d", got, entries+2)
	}
	id := r.Hosts[0].SnapshotID

	// Restore where the data was, so the 4095-byte path fits PATH_MAX
	// again: the source moves aside under a shorter name first.
	aside := filepath.Join(filepath.Dir(e.data), "d")
	must(t, os.Rename(e.data, aside))
	e.restic("restore", id, "--target", "/", "--include", e.data)
	diffs, err := treecmp.Compare(aside, e.data, treecmp.Options{})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("restic's restore differs from the source:\n%s", strings.Join(diffs[:min(len(diffs), 20)], "\n"))
	}
	e.restic("check", "--read-data")
}
