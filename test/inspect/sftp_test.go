package inspect_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// OpenSSH's sftp client, through sshd and the backup key's forced command,
// sees the agent's mirror read-only: it can list and fetch, and everything
// that would change something or leave the data paths is refused.
func TestSFTPViewThroughSSHD(t *testing.T) {
	t.Parallel() // each test has its own sshd, agent and repository
	e := newEnv(t)
	makeTree(t, e.data)
	e.backup()
	before := readTree(t, e.mirror(e.data))
	local := t.TempDir()
	d := e.data

	// ls: the root holds only the way to the data path; the data path its entries.
	out, code := e.sftp(e.backupKey, "ls -1 /\nls -1 "+d+"\nls -l "+d+"/config\n")
	if code != 0 {
		t.Fatalf("sftp ls: exit %d\n%s\nsshd log: %s", code, out, e.sshd.LogTail())
	}
	first := "/" + strings.Split(strings.TrimPrefix(d, "/"), "/")[0]
	rootList := strings.Fields(strings.SplitN(out, "sftp> ls -1 "+d, 2)[0])
	if !reflect.DeepEqual(rootList, []string{"sftp>", "ls", "-1", "/", first}) {
		t.Errorf("ls / shows %q, want only %s", rootList, first)
	}
	for _, name := range []string{"config", "config-link", "etc-link", "dotdot-link", "empty", "logs", "config.yml", "letsencrypt", "key.hardlink"} {
		if !strings.Contains(out, name) {
			t.Errorf("ls output lacks %s:\n%s", name, out)
		}
	}

	// get: byte-identical to the mirror, also through a symlink inside.
	out, code = e.sftp(e.backupKey, "get "+d+"/config/db/db.sqlite "+local+"/db.sqlite\nget "+d+"/config-link "+local+"/via-link\n")
	if code != 0 {
		t.Fatalf("sftp get: exit %d\n%s", code, out)
	}
	for got, want := range map[string]string{"db.sqlite": "config/db/db.sqlite", "via-link": "config/config.yml"} {
		a, err := os.ReadFile(filepath.Join(local, got))
		must(t, err)
		b, err := os.ReadFile(filepath.Join(e.mirror(d), want))
		must(t, err)
		if !bytes.Equal(a, b) || len(a) == 0 {
			t.Errorf("get %s: %d bytes, differs from the mirror's %d", want, len(a), len(b))
		}
	}

	src := filepath.Join(local, "upload")
	writeFile(t, src, "not welcome\n", 0o644)
	refused := []struct {
		name, batch, want string
	}{
		{"put", "put " + src + " " + d + "/config/upload", "Permission denied"},
		{"put over", "put " + src + " " + d + "/config/config.yml", "Permission denied"},
		{"rm", "rm " + d + "/config/key", "Permission denied"},
		{"rename", "rename " + d + "/config/key " + d + "/config/key2", "Permission denied"},
		{"mkdir", "mkdir " + d + "/newdir", "Permission denied"},
		{"rmdir", "rmdir " + d + "/empty", "Permission denied"},
		{"chmod", "chmod 666 " + d + "/config/key", "Permission denied"},
		{"symlink", "symlink /etc " + d + "/evil", "Permission denied"},
		{"hardlink", "ln " + d + "/config/key " + d + "/key-copy", "Permission denied"},
		{"shadow via ..", "cd " + d + "\nget ../../../../../../../../../etc/shadow " + local + "/shadow", "not found"},
		{"shadow absolute", "get /etc/shadow " + local + "/shadow", "not found"},
		{"state dir via ..", "get " + d + "/../../state/chunks.cache " + local + "/cache", "not found"},
		// OpenSSH's client globs a path before it gets it: the refused
		// stat makes it report the path as not found.
		{"symlink to /etc", "get " + d + "/etc-link/shadow " + local + "/shadow", "not found"},
		{"symlink to /etc, dir", "get -r " + d + "/etc-link/ " + local + "/etc", "failed"},
		{"symlink to /etc, ls", "ls -l " + d + "/etc-link/passwd", "not found"},
		{"symlink to /etc/hostname", "get " + d + "/hostname-link " + local + "/hostname", "Permission denied"},
		{"symlink out via ..", "get " + d + "/dotdot-link " + local + "/passwd", "Permission denied"},
	}
	// One session for all of them: "-" lets the batch go on after a
	// failure, and the output is split at each command's echo.
	var batch strings.Builder
	for _, r := range refused {
		for _, line := range strings.Split(r.batch, "\n") {
			batch.WriteString("-" + line + "\n")
		}
	}
	out, _ = e.sftp(e.backupKey, batch.String())
	for _, r := range refused {
		lines := strings.Split(r.batch, "\n")
		last := lines[len(lines)-1]
		_, rest, ok := strings.Cut(out, "sftp> -"+last+"\n")
		result, _, _ := strings.Cut(rest, "sftp> ")
		if !ok || !strings.Contains(result, r.want) {
			t.Errorf("%s: want a failure saying %q, got %q\nsession:\n%s", r.name, r.want, result, out)
		}
	}
	if strings.Contains(out, "root:") {
		t.Errorf("/etc leaked into the session:\n%s", out)
	}
	for _, n := range []string{"shadow", "hostname", "passwd", "cache"} {
		if _, err := os.Lstat(filepath.Join(local, n)); err == nil {
			t.Errorf("%s was fetched", n)
		}
	}

	// The restore key's forced command has --allow-restore: still read-only.
	out, _ = e.sftp(e.restKey, "-put "+src+" "+d+"/config/upload\n-rm "+d+"/config/key\n-chmod 666 "+d+"/config/key\n")
	if n := strings.Count(out, "Permission denied"); n != 3 {
		t.Errorf("restore key: %d of put, rm, chmod refused, want 3:\n%s", n, out)
	}
	if after := readTree(t, e.mirror(e.data)); !reflect.DeepEqual(before, after) {
		t.Errorf("the mirror changed under the sftp session")
	}
	if _, err := os.Lstat(filepath.Join(e.data, "config", "upload")); err == nil {
		t.Errorf("an upload reached the data path")
	}
}
