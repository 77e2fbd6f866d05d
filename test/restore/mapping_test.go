package restore_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mappedResult is the mapping part of `haul restore --json`.
type mappedResult struct {
	restoreResult
	Mapping struct {
		Maps []struct {
			From string `json:"from"`
			To   string `json:"to"`
		} `json:"maps"`
		Auto   bool   `json:"auto"`
		Reason string `json:"reason"`
	} `json:"mapping"`
	DryRun bool `json:"dry_run"`
}

// TestRestoreMapsSingleDataPath restores a host's snapshot onto a host
// whose only data path is elsewhere: no flag is needed, the output and
// --json say it was mapped automatically, the dry run shows the mapping
// too, and the tree lands equal at the new path.
func TestRestoreMapsSingleDataPath(t *testing.T) {
	t.Parallel()
	old := newVPS(t, "old", vpsOptions{})
	fresh := newVPS(t, "new", vpsOptions{})
	if old.data == fresh.data {
		t.Fatalf("both hosts have data path %s", old.data)
	}
	makeData(t, old.dir, 1<<20)
	n := newNAS(t, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey))
	n.haul("backup", "--host", "old")

	out := n.haul("restore", "--host", "old", "--to", "new", "--dry-run")
	if !strings.Contains(out, "auto-mapped") || !strings.Contains(out, old.data+" → "+fresh.data) {
		t.Errorf("dry run does not show the mapping:\n%s", out)
	}
	if _, err := os.Lstat(fresh.dir); err == nil {
		t.Errorf("a dry run created %s", fresh.dir)
	}

	var res mappedResult
	must(t, json.Unmarshal([]byte(n.haul("restore", "--json", "--host", "old", "--to", "new")), &res))
	if !res.Mapping.Auto || len(res.Mapping.Maps) != 1 || res.Mapping.Maps[0].From != old.data || res.Mapping.Maps[0].To != fresh.data {
		t.Errorf("--json mapping: %+v", res.Mapping)
	}
	sameTree(t, old.dir, fresh.dir)
	if res.Outcome.Marker == "" {
		t.Error("no ready marker after a mapped restore")
	}
}

// TestRestoreMapsTwoDataPaths: with two data paths on each side the
// mapping must be given. Without it, and with a map naming a path the
// target does not have, the restore is refused before anything is
// written, and the error names what is unmapped or wrong. With --map for
// both, both trees land where they were mapped.
func TestRestoreMapsTwoDataPaths(t *testing.T) {
	t.Parallel()
	old := newVPS(t, "old", vpsOptions{})
	fresh := newVPS(t, "new", vpsOptions{})
	oldA, oldB := old.data, filepath.Join(filepath.Dir(old.data), "extra")
	newA, newB := filepath.Join(filepath.Dir(fresh.data), "app"), filepath.Join(filepath.Dir(fresh.data), "other")
	old.setConfig(map[string]any{"data_paths": []string{oldA, oldB}})
	fresh.setConfig(map[string]any{"data_paths": []string{newA, newB}})
	makeData(t, oldA, 256<<10)
	must(t, os.MkdirAll(filepath.Join(oldB, "sub"), 0o750))
	must(t, os.WriteFile(filepath.Join(oldB, "sub", "f"), []byte("second path\n"), 0o640))
	n := newNAS(t, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey))
	n.haul("backup", "--host", "old")
	nothingWritten := func(what string) {
		t.Helper()
		if ents, err := os.ReadDir(filepath.Dir(fresh.data)); err == nil && len(ents) > 0 {
			t.Errorf("%s wrote %v", what, ents)
		}
		if _, err := os.Stat(fresh.marker()); err == nil {
			t.Errorf("%s wrote the ready marker", what)
		}
	}

	out, errOut, code := n.haulCode("restore", "--host", "old", "--to", "new")
	if code == 0 || !strings.Contains(errOut, "--map") || !strings.Contains(errOut, "Unmapped snapshot paths: ") || !strings.Contains(errOut, oldA) || !strings.Contains(errOut, oldB) {
		t.Errorf("restore without --map: exit %d\n%s%s", code, out, errOut)
	}
	nothingWritten("restore without --map")

	wrong := filepath.Join(filepath.Dir(fresh.data), "nowhere")
	out, errOut, code = n.haulCode("restore", "--host", "old", "--to", "new", "--map", oldA+"="+newA, "--map", oldB+"="+wrong)
	if code == 0 || !strings.Contains(errOut, wrong+" is not one of new's data paths") {
		t.Errorf("restore with a wrong --map: exit %d\n%s%s", code, out, errOut)
	}
	nothingWritten("restore with a wrong --map")

	out, errOut, code = n.haulCode("restore", "--host", "old", "--to", "new", "--map", oldA+"="+newA)
	if code == 0 || !strings.Contains(errOut, oldB+" has no place on new") {
		t.Errorf("restore with one --map of two: exit %d\n%s%s", code, out, errOut)
	}
	nothingWritten("restore with one --map of two")

	var res mappedResult
	must(t, json.Unmarshal([]byte(n.haul("restore", "--json", "--host", "old", "--to", "new", "--map", oldA+"="+newA, "--map", oldB+"="+newB)), &res))
	if res.Mapping.Auto || len(res.Mapping.Maps) != 2 {
		t.Errorf("--json mapping: %+v", res.Mapping)
	}
	sameTree(t, oldA, newA)
	sameTree(t, oldB, newB)
}

// TestRestoreRefusesUnmarkedLiveHost: a host with data but no ready
// marker (hand-built) refuses an in-place restore without
// --replace-live-data, and its data stays exactly as it was; the refusal
// says how to look (--dry-run) and how to proceed. The dry run is allowed
// and changes nothing; with the flag the data is replaced and kept as
// *.prev-*.
func TestRestoreRefusesUnmarkedLiveHost(t *testing.T) {
	t.Parallel()
	v := newVPS(t, "vps", vpsOptions{})
	makeData(t, v.dir, 512<<10)
	n := newNAS(t, v.hostEntry(v.restoreKey))
	n.haul("backup")
	snapshot := copyTree(t, v.dir)
	must(t, os.WriteFile(filepath.Join(v.dir, "config", "config.yml"), []byte("edited after the backup\n"), 0o644))
	live := copyTree(t, v.dir)

	out, errOut, code := n.haulCode("restore", "--host", "vps")
	for _, want := range []string{"no ready marker", "--dry-run", "--replace-live-data", "Nothing was changed"} {
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("restore onto an unmarked live host: exit %d, want %q in\n%s%s", code, want, out, errOut)
		}
	}
	sameTree(t, live, v.dir)
	if s := siblings(t, v.dir); !slices.Equal(s, []string{"pangolin"}) {
		t.Errorf("a refused restore left %v", s)
	}

	// The dry run says what the swap would change: the edited file.
	out = n.haul("restore", "--host", "vps", "--dry-run")
	if !strings.Contains(out, "the swap would change the live data in 1 places") || !strings.Contains(out, v.data+"/config/config.yml: ") {
		t.Errorf("dry run onto live data does not show the change:\n%s", out)
	}
	sameTree(t, live, v.dir)

	res := n.restore("--host", "vps", "--replace-live-data")
	sameTree(t, snapshot, v.dir)
	if len(res.Outcome.Kept) != 1 {
		t.Fatalf("kept %v", res.Outcome.Kept)
	}
	sameTree(t, live, res.Outcome.Kept[0])
}

// TestRestoreSpecialFiles: a snapshot holding a device node and setuid /
// setgid files is restored, onto an agent and locally, without the node
// and with the bits cleared, each listed; everything else (modes, a
// setgid directory, owners, times, links, the fifo) as it was. With
// --allow-special both come back.
func TestRestoreSpecialFiles(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("device nodes need root") // CI runs as root
	}
	old := newVPS(t, "old", vpsOptions{})
	fresh := newVPS(t, "new", vpsOptions{})
	again := newVPS(t, "again", vpsOptions{})
	makeData(t, old.dir, 128<<10)
	cfgDir := filepath.Join(old.dir, "config")
	must(t, os.WriteFile(filepath.Join(cfgDir, "suid"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.Chmod(filepath.Join(cfgDir, "suid"), os.ModeSetuid|0o755))
	must(t, os.WriteFile(filepath.Join(cfgDir, "sgid"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.Chmod(filepath.Join(cfgDir, "sgid"), os.ModeSetgid|0o755))
	must(t, os.Mkdir(filepath.Join(cfgDir, "shared"), 0o750))
	must(t, os.Chmod(filepath.Join(cfgDir, "shared"), os.ModeSetgid|0o750))
	if out, err := exec.Command("mknod", "-m", "0666", filepath.Join(cfgDir, "disk"), "b", "8", "0").CombinedOutput(); err != nil {
		t.Fatalf("mknod: %v %s", err, out)
	}
	n := newNAS(t, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey), again.hostEntry(again.restoreKey))
	n.haul("backup", "--host", "old")

	check := func(what, dir string, special bool) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(dir, "config", "disk")); (err == nil) != special {
			t.Errorf("%s: device node present=%v, want %v", what, err == nil, special)
		}
		for name, bit := range map[string]os.FileMode{"suid": os.ModeSetuid, "sgid": os.ModeSetgid} {
			fi, err := os.Lstat(filepath.Join(dir, "config", name))
			must(t, err)
			if (fi.Mode()&bit != 0) != special || fi.Mode().Perm() != 0o755 {
				t.Errorf("%s: %s has mode %v", what, name, fi.Mode())
			}
		}
		// The rest is untouched, the setgid directory included.
		if fi, err := os.Lstat(filepath.Join(dir, "config", "shared")); err != nil || fi.Mode()&os.ModeSetgid == 0 {
			t.Errorf("%s: setgid directory lost its bit: %v %v", what, fi.Mode(), err)
		}
		ref := copyTree(t, old.dir)
		if !special {
			must(t, os.Remove(filepath.Join(ref, "config", "disk")))
			must(t, os.Chmod(filepath.Join(ref, "config", "suid"), 0o755))
			must(t, os.Chmod(filepath.Join(ref, "config", "sgid"), 0o755))
			for _, p := range []string{"config", "config/suid", "config/sgid"} {
				fi, err := os.Lstat(filepath.Join(old.dir, p))
				must(t, err)
				must(t, os.Chtimes(filepath.Join(ref, p), fi.ModTime(), fi.ModTime()))
			}
		}
		sameTree(t, ref, dir)
	}

	out, errOut, code := n.haulCode("restore", "--host", "old", "--to", "new")
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"device node " + fresh.data + "/config/disk skipped", "setuid/setgid bits of " + fresh.data + "/config/suid cleared", "config/sgid cleared"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("restore does not list %q:\n%s", want, errOut)
		}
	}
	check("agent restore", fresh.dir, false)

	n.haul("restore", "--host", "old", "--to", "again", "--allow-special")
	check("agent restore --allow-special", again.dir, true)

	target := t.TempDir()
	out, errOut, code = n.haulCode("restore", "--host", "old", "--target", target)
	if code != 0 || !strings.Contains(errOut, "device node "+old.data+"/config/disk skipped") || !strings.Contains(errOut, old.data+"/config/suid cleared") {
		t.Errorf("local restore: exit %d\n%s%s", code, out, errOut)
	}
	check("local restore", filepath.Join(target, old.data), false)

	target = t.TempDir()
	n.haul("restore", "--host", "old", "--target", target, "--allow-special")
	check("local restore --allow-special", filepath.Join(target, old.data), true)
}

// TestMigrateMapped migrates between hosts whose data paths differ: a
// wrong --map is refused before NEW receives anything (NEW stays empty and
// unmarked), the dry run shows the mapping and changes nothing, and the
// real run verifies through the mapping and marks NEW ready.
func TestMigrateMapped(t *testing.T) {
	t.Parallel()
	old := newVPS(t, "handbuilt", vpsOptions{})
	fresh := newVPS(t, "nixos", vpsOptions{})
	makeData(t, old.dir, 512<<10)
	n := newNAS(t, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey))

	wrong := filepath.Join(filepath.Dir(fresh.data), "elsewhere")
	out, errOut, code := n.haulCode("migrate", "--from", "handbuilt", "--to", "nixos", "--map", old.data+"="+wrong)
	if code == 0 || !strings.Contains(errOut, wrong+" is not one of nixos's data paths") || !strings.Contains(errOut, "Nothing was changed") {
		t.Errorf("migrate with a wrong --map: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Lstat(filepath.Dir(fresh.data)); err == nil {
		ents, _ := os.ReadDir(filepath.Dir(fresh.data))
		t.Errorf("a refused migrate wrote on NEW: %v", ents)
	}
	if _, err := os.Stat(fresh.marker()); err == nil {
		t.Error("a refused migrate wrote NEW's ready marker")
	}

	out = n.haul("migrate", "--from", "handbuilt", "--to", "nixos", "--dry-run")
	if !strings.Contains(out, "dry run") || !strings.Contains(out, old.data+" → "+fresh.data) {
		t.Errorf("migrate --dry-run output:\n%s", out)
	}
	if _, err := os.Lstat(fresh.data); err == nil {
		t.Error("migrate --dry-run created NEW's data path")
	}

	out = n.haul("migrate", "--from", "handbuilt", "--to", "nixos")
	if !strings.Contains(out, "auto-mapped") || !strings.Contains(out, "verified") || !strings.Contains(out, "nixos marked ready") {
		t.Errorf("migrate output:\n%s", out)
	}
	sameTree(t, old.dir, fresh.dir)
}
