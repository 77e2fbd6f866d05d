// Package notify tells the outside world how runs went: healthchecks.io-
// style pings (start, success, fail with the log tail) and a Prometheus
// textfile for node_exporter's textfile collector.
package notify

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Pinger pings one healthchecks.io-style check URL: <url>/start when work
// begins, <url> on success, <url>/fail on failure. Each request is a POST
// whose body (the summary or log tail) the service shows with the ping. A
// nil or empty Pinger does nothing. Pings never fail a run: errors go to
// Logf with the URL redacted (it holds the check's secret token).
type Pinger struct {
	URL     string
	Timeout time.Duration // per attempt; default 10s
	// Logf receives warnings; nil discards them.
	Logf   func(format string, args ...any)
	Client *http.Client
	// RetryDelay is the wait before the second of three attempts (doubled
	// before the third). Default 1s.
	RetryDelay time.Duration
}

// maxBody keeps pings within healthchecks.io's 100 kB request limit.
const maxBody = 64 << 10

// Start pings <url>/start.
func (p *Pinger) Start(ctx context.Context) { p.ping(ctx, "start", "") }

// Success pings <url> with body.
func (p *Pinger) Success(ctx context.Context, body string) { p.ping(ctx, "", body) }

// Fail pings <url>/fail with body (the log tail).
func (p *Pinger) Fail(ctx context.Context, body string) { p.ping(ctx, "fail", body) }

func (p *Pinger) ping(ctx context.Context, kind, body string) {
	if p == nil || p.URL == "" {
		return
	}
	logf := p.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	name := kind
	if name == "" {
		name = "success"
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		logf("warning: %s ping not sent: the ping URL does not parse", name)
		return
	}
	if kind != "" {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + kind
	}
	if len(body) > maxBody {
		body = body[len(body)-maxBody:]
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// A ping must not be lost to a blip, nor hold up the run for long.
	retry := p.RetryDelay
	if retry <= 0 {
		retry = time.Second
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				attempt = 3
				continue
			case <-time.After(time.Duration(attempt) * retry):
			}
		}
		lastErr = send(ctx, client, timeout, u.String(), body)
		if lastErr == nil {
			return
		}
	}
	logf("warning: %s ping to %s failed: %v", name, Redact(p.URL), lastErr)
}

func send(ctx context.Context, client *http.Client, timeout time.Duration, u, body string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request")
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("User-Agent", "haul")
	resp, err := client.Do(req)
	if err != nil {
		// url.Error repeats the URL; keep only the cause.
		if ue, ok := err.(*url.Error); ok {
			return ue.Err
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

// Redact returns the scheme and host of a URL: enough to tell which
// service, nothing of the token in its path or query.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(ping URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
