package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dockerd is a private Docker daemon (Debian's docker.io) with its own data
// root, exec root and unix socket, and no networking beyond "none".
type Dockerd struct {
	Host    string // "unix:///tmp/hd…/docker.sock", for docker -H / DOCKER_HOST
	Socket  string // the socket's path, for Engine API clients
	Dir     string
	LogPath string

	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once

	mu     sync.Mutex
	images map[string]bool // imported name+"\x00"+tarball
}

const ownerFile = "testenv-owner"

// StartDockerd starts a private dockerd, waits until it answers /_ping and
// stops it at cleanup.
func StartDockerd(t testing.TB) *Dockerd {
	t.Helper()
	requireDocker(t)
	d, err := startDockerd()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(d.stop)
	return d
}

func requireDocker(t testing.TB) {
	t.Helper()
	Require(t, "dockerd", "apt-get install docker.io")
	Require(t, "docker", "apt-get install docker.io")
	// With AppArmor enabled, dockerd confines containers with a profile it
	// loads through apparmor_parser; without it `docker run` fails.
	if b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err == nil && strings.TrimSpace(string(b)) == "Y" {
		Require(t, "apparmor_parser", "apt-get install apparmor")
	}
}

var shared struct {
	mu  sync.Mutex
	d   *Dockerd
	err error
}

// SharedDockerd starts one dockerd per test binary, lazily, and returns it.
// Call StopShared from TestMain after m.Run. Tests sharing it should use
// unique container names.
func SharedDockerd(t testing.TB) *Dockerd {
	t.Helper()
	requireDocker(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.d == nil && shared.err == nil {
		shared.d, shared.err = startDockerd()
	}
	if shared.err != nil {
		t.Fatalf("testenv: shared dockerd: %v", shared.err)
	}
	return shared.d
}

// StopShared stops the shared dockerd, if one was started, and removes the
// temporary directory holding what this process built (Binaries,
// ImportImage). Call it from TestMain after m.Run.
func StopShared() {
	shared.mu.Lock()
	d := shared.d
	shared.d, shared.err = nil, nil
	shared.mu.Unlock()
	if d != nil {
		d.stop()
	}
	if procDir != "" {
		_ = os.RemoveAll(procDir)
	}
}

func startDockerd() (*Dockerd, error) {
	dockerd, ok := lookTool("dockerd")
	if !ok {
		return nil, errors.New("dockerd not found")
	}
	removeStaleDockerDirs()
	// Unix socket paths must stay below ~100 bytes: no t.TempDir here.
	dir, err := os.MkdirTemp("/tmp", "hd")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	// An empty config file: ignore the host's /etc/docker/daemon.json.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		return nil, err
	}
	d := &Dockerd{
		Socket:  filepath.Join(dir, "docker.sock"),
		Dir:     dir,
		LogPath: filepath.Join(dir, "dockerd.log"),
		images:  map[string]bool{},
	}
	d.Host = "unix://" + d.Socket
	args := []string{
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--config-file", filepath.Join(dir, "daemon.json"),
		"-H", d.Host,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--bridge=none", "--userland-proxy=false",
		"--shutdown-timeout=3",
	}
	// dockerd uses a running system containerd instead of starting its own;
	// keep the daemons apart with their own namespaces then.
	if _, err := os.Stat("/run/containerd/containerd.sock"); err == nil {
		ns := "haul-" + filepath.Base(dir)
		args = append(args, "--containerd-namespace="+ns, "--containerd-plugins-namespace="+ns+"-plugins")
	}
	logf, err := os.Create(d.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(dockerd, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// When the test process dies, dockerd shuts down cleanly.
	setDeathSignal(cmd, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.cmd = cmd
	d.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.done) }()

	if err := d.waitPing(60 * time.Second); err != nil {
		log := d.LogTail()
		d.stop()
		return nil, fmt.Errorf("dockerd: %v\ndockerd log:\n%s", err, log)
	}
	return d, nil
}

func (d *Dockerd) waitPing(timeout time.Duration) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", d.Socket)
			},
		},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		select {
		case <-d.done:
			return fmt.Errorf("dockerd exited during startup: %v", d.cmd.ProcessState)
		default:
		}
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "OK" {
				return nil
			}
			err = fmt.Errorf("/_ping: %s %q", resp.Status, body)
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to /_ping within %v: %v", timeout, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts dockerd down (SIGTERM, then SIGKILL after 20 s), kills whatever
// it left behind, unmounts and removes its directory.
func (d *Dockerd) stop() {
	d.stopOnce.Do(func() {
		var tree []proc
		if d.cmd != nil {
			tree = descendants(d.cmd.Process.Pid)
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(20 * time.Second):
				tree = append(tree, descendants(d.cmd.Process.Pid)...)
				_ = d.cmd.Process.Kill()
				<-d.done
			}
		}
		for _, p := range tree {
			p.signal(syscall.SIGKILL)
		}
		cleanupDockerDir(d.Dir)
	})
}

// cleanupDockerDir kills processes still referring to dir (containerd shims),
// lazily unmounts everything below it and removes it.
func cleanupDockerDir(dir string) {
	var left []proc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(b, []byte(dir+"/")) {
			continue
		}
		if p, ok := readProc(pid); ok {
			p.signal(syscall.SIGKILL)
			left = append(left, p)
		}
	}
	waitGone(left, 5*time.Second)
	var mounts []string
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
				mounts = append(mounts, fields[4])
			}
		}
		f.Close()
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, m := range mounts {
		unmountDetach(m)
	}
	_ = os.RemoveAll(dir)
}

// removeStaleDockerDirs removes the directories of private daemons whose
// test process and dockerd are both gone (a test binary killed by -timeout).
func removeStaleDockerDirs() {
	matches, _ := filepath.Glob("/tmp/hd*")
	for _, m := range matches {
		b, err := os.ReadFile(filepath.Join(m, ownerFile))
		if err != nil {
			continue
		}
		owner, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if owner == os.Getpid() || pidAlive(owner) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(m, "docker.pid")); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pidAlive(pid) {
				continue
			}
		}
		cleanupDockerDir(m)
	}
}

// LogTail returns the end of dockerd's log.
func (d *Dockerd) LogTail() string { return tail(d.LogPath, 8<<10) }

// DockerCmd returns an exec.Cmd running the docker CLI against this daemon,
// isolated from the user's docker configuration.
func (d *Dockerd) DockerCmd(args ...string) *exec.Cmd {
	docker, ok := lookTool("docker")
	if !ok {
		docker = "docker"
	}
	cmd := exec.Command(docker, append([]string{"-H", d.Host}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "DOCKER_CONFIG="+filepath.Join(d.Dir, "cli"))
	return cmd
}

// Docker runs the docker CLI against this daemon and returns its trimmed
// stdout; an error fails the test with stderr.
func (d *Dockerd) Docker(t testing.TB, args ...string) string {
	t.Helper()
	cmd := d.DockerCmd(args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: docker %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o.Bytes(), e.Bytes())
	}
	return strings.TrimSpace(o.String())
}

var imageTars struct {
	mu   sync.Mutex
	tars map[string]string // absolute package dir or import path -> tarball
}

// ImportImage makes an image called name without a registry: the Go main
// package at pkgDir (a directory, relative to the test's working directory,
// or an import path) is built statically and imported as /app, the
// entrypoint, next to an empty /tmp and an /etc/passwd with root. The build
// is cached per process and the import per daemon. It returns name.
func (d *Dockerd) ImportImage(t testing.TB, pkgDir, name string) string {
	t.Helper()
	tarball := imageTar(t, pkgDir)
	key := name + "\x00" + tarball
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.images[key] {
		return name
	}
	d.Docker(t, "import", "--change", `ENTRYPOINT ["/app"]`, tarball, name)
	d.images[key] = true
	return name
}

func imageTar(t testing.TB, pkgDir string) string {
	t.Helper()
	buildDir, target := ModuleRoot(t), pkgDir
	if fi, err := os.Stat(pkgDir); err == nil && fi.IsDir() {
		abs, err := filepath.Abs(pkgDir)
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		buildDir, target = abs, "."
		pkgDir = abs
	}
	imageTars.mu.Lock()
	defer imageTars.mu.Unlock()
	if p, ok := imageTars.tars[pkgDir]; ok {
		return p
	}
	out, err := os.MkdirTemp(processDir(t), "image-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	bin := filepath.Join(out, "app")
	// No -trimpath: it would recompile the standard library on a cold cache.
	cmd := exec.Command(goTool(), "build", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, target)
	cmd.Dir = buildDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: build image binary from %s: %v\n%s", pkgDir, err, b)
	}
	tarball := filepath.Join(out, "image.tar")
	if err := writeImageTar(bin, tarball); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if imageTars.tars == nil {
		imageTars.tars = map[string]string{}
	}
	imageTars.tars[pkgDir] = tarball
	return tarball
}

func writeImageTar(bin, tarball string) error {
	app, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	f, err := os.Create(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	mtime := time.Unix(0, 0)
	dirs := []struct {
		name string
		mode int64
	}{{"etc/", 0o755}, {"tmp/", 0o1777}}
	for _, dir := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir.name, Mode: dir.mode, ModTime: mtime}); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"app", 0o755, app},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/:/app\n")},
		{"etc/group", 0o644, []byte("root:x:0:\n")},
	}
	for _, file := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: file.name, Mode: file.mode, Size: int64(len(file.data)), ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(file.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
