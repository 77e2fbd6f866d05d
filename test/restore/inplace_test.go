package restore_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
)

// TestRestoreInPlaceWithContainers restores onto a running host whose
// stack runs in a real dockerd. Without allow_inplace_restore the ready
// host refuses and nothing changes, the containers are not touched. With
// it, the containers are stopped only for the swap (docker's own events
// say when) and run afterwards on the restored data; the data they had is
// kept as *.prev-*.
func TestRestoreInPlaceWithContainers(t *testing.T) {
	t.Parallel()
	d := testenv.SharedDockerd(t)
	img := d.ImportImage(t, "testdata/app", "haul-restore-app:test")
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	names := []string{"restore-pangolin-" + suffix, "restore-traefik-" + suffix}
	v := newVPS(t, "vps", vpsOptions{config: map[string]any{
		"quiesce": map[string]any{"mode": "stop", "containers": names, "docker_host": d.Host, "timeout": "20s"},
	}})
	makeData(t, v.dir, 1<<20)
	for _, name := range names {
		d.Docker(t, "run", "-d", "--name", name, "--network", "none", "-v", v.dir+":/data", img)
		t.Cleanup(func() { _ = d.DockerCmd("rm", "-f", name).Run() })
	}
	n := newNAS(t, v.hostEntry(v.restoreKey))
	n.haul("backup")
	snapshot := copyTree(t, v.dir)
	v.agent("mark-ready")

	// The host lives on after the backup.
	must(t, os.WriteFile(filepath.Join(v.dir, "config", "after-backup"), []byte("new"), 0o644))
	must(t, os.WriteFile(filepath.Join(v.dir, "config", "config.yml"), []byte("edited: true\n"), 0o644))
	changed := copyTree(t, v.dir)
	since := time.Now()
	started := containerStarts(t, d, names)

	out, errOut, code := n.haulCode("restore", "--host", "vps")
	if code != 1 || !strings.Contains(errOut, "allow_inplace_restore") {
		t.Fatalf("in-place restore without the flag: exit %d\n%s%s", code, out, errOut)
	}
	sameTree(t, changed, v.dir)
	if now := containerStarts(t, d, names); now != started {
		t.Errorf("a refused restore restarted containers: %s, before %s", now, started)
	}

	v.setConfig(map[string]any{"allow_inplace_restore": true})
	res := n.restore("--host", "vps")
	sameTree(t, snapshot, v.dir)
	prev, err := filepath.Glob(v.dir + ".prev-*")
	must(t, err)
	if len(prev) != 1 || len(res.Outcome.Kept) != 1 || res.Outcome.Kept[0] != prev[0] {
		t.Fatalf("previous copies %v, reported %v", prev, res.Outcome.Kept)
	}
	sameTree(t, changed, prev[0])

	for _, name := range names {
		if st := d.Docker(t, "inspect", "-f", "{{.State.Running}}", name); st != "true" {
			t.Errorf("%s is not running after the restore (running=%s)", name, st)
		}
	}
	// Docker's record of every stop and start since the first attempt: all
	// inside the swap window the agent reports, none while staging.
	evs := containerEvents(t, d, names, since)
	stops, starts := 0, 0
	for _, e := range evs {
		at := time.Unix(0, e.TimeNano)
		if at.Before(res.Outcome.SwapStarted) || at.After(res.Outcome.SwapEnded) {
			t.Errorf("%s %s at %s, outside the swap window %s – %s", e.Actor.Attributes.Name, e.Action,
				at.Format(time.RFC3339Nano), res.Outcome.SwapStarted.Format(time.RFC3339Nano), res.Outcome.SwapEnded.Format(time.RFC3339Nano))
		}
		switch e.Action {
		case "die":
			stops++
		case "start":
			starts++
		}
	}
	if stops != len(names) || starts != len(names) {
		t.Errorf("docker saw %d stops and %d starts, want %d each: %+v", stops, starts, len(names), evs)
	}
	total := 0.0
	for _, p := range res.Outcome.Phases {
		total += p.MS
	}
	t.Logf("in-place restore: containers stopped %.1f ms of %.1f ms staged and swapped (%d files)", res.Outcome.FreezeMS, total, res.Outcome.Files)
}

// containerStarts is each container's last start time, joined.
func containerStarts(t *testing.T, d *testenv.Dockerd, names []string) string {
	t.Helper()
	var s []string
	for _, n := range names {
		s = append(s, d.Docker(t, "inspect", "-f", "{{.State.StartedAt}}", n))
	}
	return strings.Join(s, " ")
}

type dockerEvent struct {
	Action   string `json:"Action"`
	TimeNano int64  `json:"timeNano"`
	Actor    struct {
		Attributes struct {
			Name string `json:"name"`
		} `json:"Attributes"`
	} `json:"Actor"`
}

// containerEvents returns the names' stop and start events since.
func containerEvents(t *testing.T, d *testenv.Dockerd, names []string, since time.Time) []dockerEvent {
	t.Helper()
	args := []string{"events", "--since", fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		"--until", fmt.Sprintf("%d", time.Now().Add(time.Second).Unix()), "--format", "{{json .}}",
		"--filter", "type=container", "--filter", "event=die", "--filter", "event=start"}
	for _, n := range names {
		args = append(args, "--filter", "container="+n)
	}
	var evs []dockerEvent
	for _, line := range strings.Split(d.Docker(t, args...), "\n") {
		if line == "" {
			continue
		}
		var e dockerEvent
		must(t, json.Unmarshal([]byte(line), &e))
		evs = append(evs, e)
	}
	return evs
}
