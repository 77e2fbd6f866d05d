package offsite_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/puller/internal/clitest"
)

type copyResult struct {
	Copied []struct {
		Host, Source, Target string
	} `json:"copied"`
	AlreadyThere int    `json:"already_there"`
	Blobs        int    `json:"blobs"`
	BlobBytes    uint64 `json:"blob_bytes"`
}

func copyJSON(t *testing.T, e *clitest.Env, args ...string) copyResult {
	t.Helper()
	r := e.MustHaul(append([]string{"copy", "--json"}, args...)...)
	var res copyResult
	clitest.Must(t, json.Unmarshal([]byte(r.Stdout), &res))
	return res
}

// TestCopyToAppendOnlyRestServer backs up two hosts, copies to a real
// rest-server running --append-only, reads the copy with the stock restic
// CLI (snapshots, check --read-data, restore), and copies again after a
// change: only the new snapshot and its new blobs move.
func TestCopyToAppendOnlyRestServer(t *testing.T) {
	e := clitest.New(t)
	srvDir := t.TempDir()
	base := testenv.StartRestServer(t, srvDir, true)
	to := "rest:" + base + "offsite"
	dataA, dataB := filepath.Join(e.Dir, "a"), filepath.Join(e.Dir, "b")
	clitest.WriteRandom(t, filepath.Join(dataA, "db.sqlite"), 300<<10)
	clitest.WriteRandom(t, filepath.Join(dataB, "config", "key"), 2<<10)
	e.WriteConfig(fmt.Sprintf("[[hosts]]\nname = \"a\"\ncommand = %s\n\n[[hosts]]\nname = \"b\"\ncommand = %s\n",
		e.AgentCommand("a", dataA), e.AgentCommand("b", dataB)))
	e.MustHaul("backup")

	// Without --init: a clear error.
	if r := e.Run("copy", "--to", to); r.Code != 2 || !strings.Contains(r.Stderr, "--init") {
		t.Fatalf("copy to nothing: exit %d\n%s", r.Code, r.Stderr)
	}
	first := copyJSON(t, e, "--to", to, "--init")
	if len(first.Copied) != 2 || first.Blobs < 3 || first.BlobBytes < 300<<10 {
		t.Fatalf("first copy: %+v", first)
	}

	// The stock restic CLI reads the copy.
	out := testenv.Restic(t, to, e.PasswordFile, "snapshots", "--json")
	var sns []struct {
		Hostname string `json:"hostname"`
		Original string `json:"original"`
	}
	clitest.Must(t, json.Unmarshal(out, &sns))
	if len(sns) != 2 || sns[0].Original == "" {
		t.Fatalf("restic snapshots of the copy: %s", out)
	}
	testenv.Restic(t, to, e.PasswordFile, "check", "--read-data")
	restored := t.TempDir()
	testenv.Restic(t, to, e.PasswordFile, "restore", "latest", "--host", "a", "--target", restored)
	want, _ := os.ReadFile(filepath.Join(dataA, "db.sqlite"))
	got, err := os.ReadFile(filepath.Join(restored, dataA, "db.sqlite"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("restic restore from the copy differs (%v)", err)
	}

	// Nothing new: nothing moves.
	again := copyJSON(t, e, "--to", to)
	if len(again.Copied) != 0 || again.AlreadyThere != 2 || again.Blobs != 0 {
		t.Fatalf("second copy without changes: %+v", again)
	}
	// One file changes on a: one snapshot and only its new blobs move.
	clitest.WriteRandom(t, filepath.Join(dataA, "new.bin"), 50<<10)
	e.MustHaul("backup")
	third := copyJSON(t, e, "--to", to)
	if len(third.Copied) != 2 || third.AlreadyThere != 2 {
		t.Fatalf("copy after a change: %+v", third)
	}
	// a: new.bin's data blob plus the trees on its path (the data dir is
	// deep under /tmp); b: nothing (its tree is unchanged). The first copy
	// moved 300 KiB.
	if third.BlobBytes < 50<<10 || third.BlobBytes > 80<<10 || third.Blobs > 20 {
		t.Fatalf("copy after a change moved %d blobs, %d bytes: more than what is new", third.Blobs, third.BlobBytes)
	}
	testenv.Restic(t, to, e.PasswordFile, "check", "--read-data")

	// A wrong target password fails clearly.
	bad := filepath.Join(e.Dir, "bad-password")
	clitest.Must(t, os.WriteFile(bad, []byte("nope\n"), 0o600))
	if r := e.Run("copy", "--to", to, "--to-password-file", bad); r.Code != 2 || !strings.Contains(r.Stderr, "wrong password") {
		t.Fatalf("wrong target password: exit %d\n%s", r.Code, r.Stderr)
	}
}

// TestBackendURLAsRepository: a restic backend URL as the main repository
// is refused clearly and creates nothing.
func TestBackendURLAsRepository(t *testing.T) {
	e := clitest.NewBare(t)
	body, err := os.ReadFile(e.Config)
	clitest.Must(t, err)
	cfg := strings.Replace(string(body), fmt.Sprintf("repository = %q", e.Repo), `repository = "rest:http://user:secret@127.0.0.1:1/repo"`, 1)
	clitest.Must(t, os.WriteFile(e.Config, []byte(cfg), 0o600))
	r := e.Run("init")
	if r.Code != 2 || !strings.Contains(r.Stderr, `restic "rest:" backend URL`) || !strings.Contains(r.Stderr, "haul copy --to") || strings.Contains(r.Stderr, "secret") {
		t.Fatalf("init with a rest: repository: exit %d\n%s", r.Code, r.Stderr)
	}
	ents, _ := os.ReadDir(e.Dir)
	for _, d := range ents {
		if strings.Contains(d.Name(), ":") {
			t.Fatalf("init created %s", d.Name())
		}
	}
}
