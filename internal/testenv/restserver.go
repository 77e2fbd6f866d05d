package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// RestServerBin returns restic's rest-server (pinned in go.mod's tool
// block): $HAUL_REST_SERVER if set, else <module root>/bin/rest-server,
// else rest-server on PATH.
func RestServerBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HAUL_REST_SERVER"); p != "" {
		if _, ok := lookTool(p); !ok {
			t.Fatalf("testenv: HAUL_REST_SERVER=%s is not an executable file", p)
		}
		return p
	}
	if p, ok := lookTool(filepath.Join(ModuleRoot(t), "bin", "rest-server")); ok {
		return p
	}
	if p, err := exec.LookPath("rest-server"); err == nil {
		return p
	}
	missing(t, "rest-server", "go build -o bin/rest-server github.com/restic/rest-server/cmd/rest-server")
	return ""
}

// StartRestServer runs rest-server on a free loopback port serving dir,
// without authentication (loopback only), with --append-only when asked,
// and returns its base URL ("http://127.0.0.1:PORT/"). It is stopped when
// the test ends.
func StartRestServer(t testing.TB, dir string, appendOnly bool) string {
	t.Helper()
	bin := RestServerBin(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--listen", addr, "--path", dir, "--no-auth"}
	if appendOnly {
		args = append(args, "--append-only")
	}
	cmd := exec.Command(bin, args...)
	log, err := os.Create(filepath.Join(t.TempDir(), "rest-server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start rest-server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("testenv: rest-server did not listen on %s: %v\n%s", addr, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("http://%s/", addr)
}
