package truenas

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// REST is TrueNAS 24.10's REST API v2.0 (GET/POST /api/v2.0/cronjob,
// PUT /api/v2.0/cronjob/id/{id}, the API key as a Bearer token). Connect
// chooses it only for 24.10: 25.04 deprecates it and 26 removes it.
type REST struct {
	// URL is the system's base URL, e.g. https://nas.lan (a trailing
	// /api/v2.0 is accepted).
	URL    string
	APIKey string
	HTTP   *http.Client
}

func (c *REST) endpoint(path string) (string, error) {
	u, err := url.Parse(strings.TrimRight(c.URL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("TrueNAS URL %q: give the system's base URL, e.g. https://nas.lan", c.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/api/v2.0") + "/api/v2.0" + path
	return u.String(), nil
}

func (c *REST) do(ctx context.Context, method, path string, in, out any) error {
	u, err := c.endpoint(path)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.APIKey)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("TrueNAS API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("TrueNAS API %s %s: %s: the API key was refused; create one under Credentials → API Keys (it must belong to an admin) and put it in --api-key-file", method, path, resp.Status)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("TrueNAS API %s %s: %s: is --url the TrueNAS system?", method, path, resp.Status)
	case resp.StatusCode >= 300:
		return fmt.Errorf("TrueNAS API %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("TrueNAS API %s %s: unexpected answer: %w", method, path, err)
		}
	}
	return nil
}

// Query returns every cron job.
func (c *REST) Query(ctx context.Context) ([]CronJob, error) {
	var jobs []CronJob
	return jobs, c.do(ctx, http.MethodGet, "/cronjob", nil, &jobs)
}

// Create adds a cron job (cronjob.create).
func (c *REST) Create(ctx context.Context, j CronJob) (CronJob, error) {
	j.ID = 0
	var out CronJob
	return out, c.do(ctx, http.MethodPost, "/cronjob", j, &out)
}

// Update changes cron job id (cronjob.update).
func (c *REST) Update(ctx context.Context, id int, j CronJob) (CronJob, error) {
	j.ID = 0
	var out CronJob
	return out, c.do(ctx, http.MethodPut, fmt.Sprintf("/cronjob/id/%d", id), j, &out)
}

// Close does nothing: REST has no session.
func (c *REST) Close() error { return nil }

// Version returns the system's version string (GET /api/v2.0/system/version,
// e.g. "TrueNAS-SCALE-24.10.2").
func (c *REST) Version(ctx context.Context) (string, error) {
	var v string
	return v, c.do(ctx, http.MethodGet, "/system/version", nil, &v)
}
