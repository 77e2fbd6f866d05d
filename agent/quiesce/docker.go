package quiesce

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDockerHost is used when neither quiesce.docker_host nor
// $DOCKER_HOST is set.
const DefaultDockerHost = "unix:///var/run/docker.sock"

// ErrNotPaused is returned by Unpause for a container that is not paused.
var ErrNotPaused = errors.New("container is not paused")

// ErrContainerNotFound is wrapped by errors for a container the daemon
// does not know.
var ErrContainerNotFound = errors.New("container not found")

// Docker is a client for the few Docker Engine API calls a freeze needs
// (inspect, list by label, stop, start, pause, unpause), spoken as plain
// HTTP/1.1 over the daemon's unix socket.
//
// It is written here instead of using net/http or the Docker SDK to keep the
// agent small: net/http alone adds about 3.6 MB to the binary (its TLS and
// HTTP/2 stacks come along), the SDK far more, and the agent needs six
// requests to a local, trusted daemon. See docs/quiesce.md.
type Docker struct {
	Host   string // as configured, for messages
	Socket string // path of the unix socket
}

// NewDocker returns a client for host ("unix:///path"); an empty host means
// $DOCKER_HOST, then DefaultDockerHost.
func NewDocker(host string) (*Docker, error) {
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		host = DefaultDockerHost
	}
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok || !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("docker host %q: haul-agent talks to Docker only over its unix socket; set quiesce.docker_host to unix:///path/to/docker.sock", host)
	}
	return &Docker{Host: host, Socket: path}, nil
}

// APIError is an error answer from the daemon.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("docker daemon answered %d: %s", e.Status, e.Message)
}

// Container is the part of GET /containers/{id}/json the freeze uses.
type Container struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	State struct {
		Status   string `json:"Status"`
		Running  bool   `json:"Running"`
		Paused   bool   `json:"Paused"`
		ExitCode int    `json:"ExitCode"`
		Health   *struct {
			Status string `json:"Status"`
			Log    []struct {
				ExitCode int    `json:"ExitCode"`
				Output   string `json:"Output"`
			} `json:"Log"`
		} `json:"Health"`
	} `json:"State"`
	Created string `json:"Created"`
	Config  struct {
		Labels      map[string]string `json:"Labels"`
		Healthcheck *struct {
			Test []string `json:"Test"`
		} `json:"Healthcheck"`
	} `json:"Config"`
}

func (c *Container) name() string { return strings.TrimPrefix(c.Name, "/") }

func (c *Container) hasHealthcheck() bool {
	hc := c.Config.Healthcheck
	return hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE"
}

// Ping checks that the daemon answers.
func (d *Docker) Ping(ctx context.Context, timeout time.Duration) error {
	_, err := d.do(ctx, timeout, "GET", "/_ping", nil, "ping")
	return err
}

// Inspect returns a container by name or ID.
func (d *Docker) Inspect(ctx context.Context, name string, timeout time.Duration) (*Container, error) {
	body, err := d.do(ctx, timeout, "GET", "/containers/"+url.PathEscape(strings.TrimPrefix(name, "/"))+"/json", nil, "inspect container "+name)
	if err != nil {
		return nil, err
	}
	var c Container
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("inspect container %s: unreadable answer from %s: %v", name, d.Host, err)
	}
	return &c, nil
}

// ComposeProject returns the containers labelled with the Compose project,
// running or not, in start order: services ordered by the depends_on
// labels Compose writes, then by creation time.
func (d *Docker) ComposeProject(ctx context.Context, project string, timeout time.Duration) ([]*Container, error) {
	filters, _ := json.Marshal(map[string][]string{"label": {"com.docker.compose.project=" + project}})
	q := url.Values{"all": {"1"}, "filters": {string(filters)}}
	body, err := d.do(ctx, timeout, "GET", "/containers/json?"+q.Encode(), nil, "list containers of compose project "+project)
	if err != nil {
		return nil, err
	}
	var list []struct {
		ID string `json:"Id"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("list containers of compose project %s: unreadable answer from %s: %v", project, d.Host, err)
	}
	var cs []*Container
	for _, e := range list {
		c, err := d.Inspect(ctx, e.ID, timeout)
		if err != nil {
			return nil, err
		}
		cs = append(cs, c)
	}
	return composeOrder(cs), nil
}

// composeOrder sorts a project's containers so that every container comes
// after those its service depends on (label com.docker.compose.depends_on,
// "svc:condition:restart,..."), ties broken by creation time and name.
func composeOrder(cs []*Container) []*Container {
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].Created != cs[j].Created {
			return cs[i].Created < cs[j].Created
		}
		return cs[i].Name < cs[j].Name
	})
	service := func(c *Container) string { return c.Config.Labels["com.docker.compose.service"] }
	deps := func(c *Container) []string {
		var out []string
		for _, d := range strings.Split(c.Config.Labels["com.docker.compose.depends_on"], ",") {
			if name, _, _ := strings.Cut(d, ":"); name != "" {
				out = append(out, name)
			}
		}
		return out
	}
	byService := map[string][]*Container{}
	for _, c := range cs {
		byService[service(c)] = append(byService[service(c)], c)
	}
	var out []*Container
	state := map[*Container]int{} // 1 visiting, 2 done
	var visit func(c *Container)
	visit = func(c *Container) {
		if state[c] != 0 {
			return // done, or a cycle: keep creation order
		}
		state[c] = 1
		for _, dep := range deps(c) {
			for _, dc := range byService[dep] {
				visit(dc)
			}
		}
		state[c] = 2
		out = append(out, c)
	}
	for _, c := range cs {
		visit(c)
	}
	return out
}

// Stop stops a container, letting it shut down for up to timeout before
// the daemon kills it.
func (d *Docker) Stop(ctx context.Context, name string, timeout time.Duration) error {
	secs := int((timeout + time.Second - 1) / time.Second)
	// The daemon kills the container after secs; allow it time to do so
	// and to answer.
	_, err := d.do(ctx, timeout+15*time.Second, "POST", "/containers/"+url.PathEscape(name)+"/stop?t="+strconv.Itoa(secs), nil, "stop container "+name)
	return err
}

// Start starts a container; starting a running one is not an error.
func (d *Docker) Start(ctx context.Context, name string, timeout time.Duration) error {
	_, err := d.do(ctx, timeout, "POST", "/containers/"+url.PathEscape(name)+"/start", nil, "start container "+name)
	return err
}

// Pause freezes a container's processes (cgroup freezer).
func (d *Docker) Pause(ctx context.Context, name string, timeout time.Duration) error {
	_, err := d.do(ctx, timeout, "POST", "/containers/"+url.PathEscape(name)+"/pause", nil, "pause container "+name)
	return err
}

// Unpause thaws a paused container; ErrNotPaused if it was not paused.
func (d *Docker) Unpause(ctx context.Context, name string, timeout time.Duration) error {
	_, err := d.do(ctx, timeout, "POST", "/containers/"+url.PathEscape(name)+"/unpause", nil, "unpause container "+name)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == 409 && strings.Contains(strings.ToLower(ae.Message), "not paused") {
		return fmt.Errorf("unpause container %s: %w", name, ErrNotPaused)
	}
	return err
}

// WaitHealthy polls a started container until its healthcheck reports
// healthy, it stops running, or timeout passes.
func (d *Docker) WaitHealthy(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	status := "unknown"
	for {
		c, err := d.Inspect(ctx, name, timeout)
		if err == nil {
			if !c.State.Running {
				return fmt.Errorf("container %s exited (code %d) while waiting for it to become healthy; see `docker logs %s`", name, c.State.ExitCode, name)
			}
			if c.State.Health == nil {
				return nil
			}
			status = c.State.Health.Status
			if status == "healthy" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %s did not become healthy within %v (health: %s); the targets after it were started anyway", name, timeout, status)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// do sends one request on a fresh connection and returns the body of a 2xx
// or 304 answer. what names the operation in errors.
func (d *Docker) do(ctx context.Context, timeout time.Duration, method, path string, body []byte, what string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialUnix(ctx, d.Socket)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, d.dialError(err))
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: docker\r\nUser-Agent: haul-agent\r\nConnection: close\r\nContent-Length: %d\r\n", method, path, len(body))
	if body != nil {
		req += "Content-Type: application/json\r\n"
	}
	req += "\r\n"
	if _, err := conn.Write(append([]byte(req), body...)); err != nil {
		return nil, d.ioError(ctx, what, timeout, err)
	}
	status, respBody, err := readResponse(bufio.NewReader(conn))
	if err != nil {
		return nil, d.ioError(ctx, what, timeout, err)
	}
	if status/100 == 2 || status == 304 {
		return respBody, nil
	}
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(respBody, &msg) != nil || msg.Message == "" {
		msg.Message = strings.TrimSpace(string(respBody))
	}
	ae := &APIError{Status: status, Message: msg.Message}
	if status == 404 && strings.Contains(path, "/containers/") {
		return nil, fmt.Errorf("%s: %w on %s (%s): check quiesce.containers; `docker ps -a` lists the names", what, ErrContainerNotFound, d.Host, msg.Message)
	}
	return nil, fmt.Errorf("%s: %w", what, ae)
}

func (d *Docker) ioError(ctx context.Context, what string, timeout time.Duration, err error) error {
	// The connection's deadline is ctx's: either may fire first.
	if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: no answer from the docker daemon at %s within %v: %w", what, d.Host, timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("%s: talking to the docker daemon at %s: %w", what, d.Host, err)
}

// dialError names the usual reasons a socket cannot be reached.
func (d *Docker) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("docker socket %s does not exist: is dockerd running? (set quiesce.docker_host if it listens elsewhere): %w", d.Socket, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on docker socket %s: run haul-agent as root or as a member of the socket's group (usually docker): %w", d.Socket, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing listens on docker socket %s: dockerd is down; start it (systemctl start docker) and retry: %w", d.Socket, err)
	}
	return fmt.Errorf("connect to docker socket %s: %w", d.Socket, err)
}

// dialUnix connects to a unix stream socket. It does not use package net,
// whose resolver and friends would add about 1 MB to the agent for one
// local socket; an *os.File over a non-blocking socket still gets the
// runtime poller and deadlines.
func dialUnix(ctx context.Context, path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	// A full listen backlog makes a non-blocking connect fail with
	// EAGAIN (nothing is in progress): retry within ctx.
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if !errors.Is(err, unix.EAGAIN) {
			break
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(20 * time.Millisecond):
			continue
		}
		break
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// maxBody bounds an answer: inspect output is a few KiB, a list of a
// project's containers a few dozen.
const maxBody = 8 << 20

// readResponse reads an HTTP/1.1 response: status line, headers, and a body
// framed by Content-Length, chunked encoding or the end of the connection.
func readResponse(r *bufio.Reader) (int, []byte, error) {
	line, err := readLine(r)
	if err != nil {
		return 0, nil, fmt.Errorf("read status line: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	length, chunked := int64(-1), false
	for {
		h, err := readLine(r)
		if err != nil {
			return 0, nil, fmt.Errorf("read headers: %w", err)
		}
		if h == "" {
			break
		}
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return 0, nil, fmt.Errorf("malformed header line %q", h)
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return 0, nil, fmt.Errorf("malformed Content-Length %q", v)
			}
			length = n
		case "transfer-encoding":
			chunked = strings.EqualFold(v, "chunked")
		}
	}
	if status/100 == 1 || status == 204 || status == 304 {
		return status, nil, nil
	}
	var body []byte
	switch {
	case chunked:
		body, err = readChunked(r)
	case length >= 0:
		if length > maxBody {
			return 0, nil, fmt.Errorf("answer of %d bytes is too large", length)
		}
		body = make([]byte, length)
		_, err = io.ReadFull(r, body)
	default:
		body, err = io.ReadAll(io.LimitReader(r, maxBody+1))
		if err == nil && len(body) > maxBody {
			err = fmt.Errorf("answer is too large")
		}
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read body: %w", err)
	}
	return status, body, nil
}

func readChunked(r *bufio.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := readLine(r)
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			for { // trailers
				t, err := readLine(r)
				if err != nil || t == "" {
					return body, err
				}
			}
		}
		if int64(len(body))+n > maxBody {
			return nil, fmt.Errorf("answer is too large")
		}
		start := len(body)
		body = append(body, make([]byte, n)...)
		if _, err := io.ReadFull(r, body[start:]); err != nil {
			return nil, err
		}
		if crlf, err := readLine(r); err != nil || crlf != "" {
			return nil, fmt.Errorf("chunk not followed by CRLF")
		}
	}
}

// readLine reads one CRLF- (or LF-) terminated line of at most 64 KiB.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, isPrefix, err := r.ReadLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		b = append(b, frag...)
		if len(b) > 64<<10 {
			return "", fmt.Errorf("line too long")
		}
		if !isPrefix {
			return string(b), nil
		}
	}
}
