package truenas

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Midclt reaches the middleware through its own client, midclt, on the
// NAS itself: midclt talks to the middleware's unix socket as the user
// running it (root), so no API key is involved. Each call is
// `midclt call METHOD ARG...`; midclt parses every argument as JSON and
// prints the result as JSON (truenas/api_client, truenas_api_client/__init__.py).
// Nothing is handed to a shell.
type Midclt struct {
	// Path is the midclt executable.
	Path    string
	Timeout time.Duration
}

func (m *Midclt) call(ctx context.Context, out any, method string, args ...string) error {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.Path, append([]string{"call", method}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[:2000] + "…"
		}
		if msg == "" {
			msg = strings.TrimSpace(stdout.String()) // midclt prints login failures on stdout
		}
		return fmt.Errorf("midclt call %s: %w: %s", method, err, msg)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("midclt call %s: unexpected answer: %w", method, err)
	}
	return nil
}

// Query lists every cron job.
func (m *Midclt) Query(ctx context.Context) ([]CronJob, error) {
	var jobs []CronJob
	return jobs, m.call(ctx, &jobs, "cronjob.query")
}

// Create adds a cron job.
func (m *Midclt) Create(ctx context.Context, j CronJob) (CronJob, error) {
	j.ID = 0
	b, err := json.Marshal(j)
	if err != nil {
		return CronJob{}, err
	}
	var out CronJob
	return out, m.call(ctx, &out, "cronjob.create", string(b))
}

// Update changes cron job id.
func (m *Midclt) Update(ctx context.Context, id int, j CronJob) (CronJob, error) {
	j.ID = 0
	b, err := json.Marshal(j)
	if err != nil {
		return CronJob{}, err
	}
	var out CronJob
	return out, m.call(ctx, &out, "cronjob.update", strconv.Itoa(id), string(b))
}

// Close does nothing: every call is its own midclt run.
func (m *Midclt) Close() error { return nil }
