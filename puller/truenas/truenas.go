// Package truenas installs haul's cron job on a TrueNAS system through its
// REST API v2.0 (GET/POST /api/v2.0/cronjob, PUT /api/v2.0/cronjob/id/{id},
// authenticated with an API key as a Bearer token). The job is found again
// by a marker in its description, so installing twice changes nothing and
// installing with new settings updates the job in place.
package truenas

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Schedule is a cron schedule as TrueNAS stores it.
type Schedule struct {
	Minute string `json:"minute"`
	Hour   string `json:"hour"`
	Dom    string `json:"dom"`
	Month  string `json:"month"`
	Dow    string `json:"dow"`
}

func (s Schedule) String() string {
	return strings.Join([]string{s.Minute, s.Hour, s.Dom, s.Month, s.Dow}, " ")
}

var cronField = regexp.MustCompile(`^[0-9A-Za-z*,/-]+$`)

// ParseSchedule parses a five-field cron expression ("0 3 * * *").
func ParseSchedule(expr string) (Schedule, error) {
	f := strings.Fields(expr)
	if len(f) != 5 {
		return Schedule{}, fmt.Errorf("schedule %q: want five cron fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\"", expr)
	}
	for _, v := range f {
		if !cronField.MatchString(v) {
			return Schedule{}, fmt.Errorf("schedule %q: field %q is not a cron field", expr, v)
		}
	}
	return Schedule{Minute: f[0], Hour: f[1], Dom: f[2], Month: f[3], Dow: f[4]}, nil
}

// CronJob is TrueNAS's cron job entry. Stdout and Stderr are true to
// SUPPRESS that stream (TrueNAS mails what is not suppressed).
type CronJob struct {
	ID          int      `json:"id,omitempty"`
	Enabled     bool     `json:"enabled"`
	Stderr      bool     `json:"stderr"`
	Stdout      bool     `json:"stdout"`
	Schedule    Schedule `json:"schedule"`
	Command     string   `json:"command"`
	Description string   `json:"description"`
	User        string   `json:"user"`
}

// same reports whether two jobs have the same settings (IDs aside).
func (j CronJob) same(o CronJob) bool {
	j.ID, o.ID = 0, 0
	return j == o
}

// Client talks to one TrueNAS system.
type Client struct {
	// URL is the system's base URL, e.g. https://nas.lan (a trailing
	// /api/v2.0 is accepted).
	URL    string
	APIKey string
	HTTP   *http.Client
}

func (c *Client) endpoint(path string) (string, error) {
	u, err := url.Parse(strings.TrimRight(c.URL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("TrueNAS URL %q: give the system's base URL, e.g. https://nas.lan", c.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/api/v2.0") + "/api/v2.0" + path
	return u.String(), nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
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
		return fmt.Errorf("TrueNAS API %s %s: %s: is --url the TrueNAS system, and does this release still serve REST API v2.0?", method, path, resp.Status)
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

// List returns every cron job.
func (c *Client) List(ctx context.Context) ([]CronJob, error) {
	var jobs []CronJob
	return jobs, c.do(ctx, http.MethodGet, "/cronjob", nil, &jobs)
}

// Create adds a cron job (cronjob.create).
func (c *Client) Create(ctx context.Context, j CronJob) (CronJob, error) {
	j.ID = 0
	var out CronJob
	return out, c.do(ctx, http.MethodPost, "/cronjob", j, &out)
}

// Update changes cron job id (cronjob.update).
func (c *Client) Update(ctx context.Context, id int, j CronJob) (CronJob, error) {
	j.ID = 0
	var out CronJob
	return out, c.do(ctx, http.MethodPut, fmt.Sprintf("/cronjob/id/%d", id), j, &out)
}

// Action is what Install did.
type Action string

const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
)

// Install makes sure exactly one cron job carries marker in its
// description and has want's settings: it creates the job, updates it, or
// leaves it alone.
func Install(ctx context.Context, c *Client, want CronJob, marker string) (Action, CronJob, error) {
	if !strings.Contains(want.Description, marker) {
		return "", want, fmt.Errorf("internal error: description %q lacks marker %q", want.Description, marker)
	}
	jobs, err := c.List(ctx)
	if err != nil {
		return "", want, err
	}
	var mine []CronJob
	for _, j := range jobs {
		if strings.Contains(j.Description, marker) {
			mine = append(mine, j)
		}
	}
	switch len(mine) {
	case 0:
		job, err := c.Create(ctx, want)
		return Created, job, err
	case 1:
		if mine[0].same(want) {
			return Unchanged, mine[0], nil
		}
		job, err := c.Update(ctx, mine[0].ID, want)
		if err == nil && job.ID == 0 {
			job.ID = mine[0].ID
		}
		return Updated, job, err
	default:
		ids := make([]string, len(mine))
		for i, j := range mine {
			ids[i] = fmt.Sprint(j.ID)
		}
		return "", want, fmt.Errorf("%d cron jobs carry the marker %q (ids %s): delete all but one under System → Advanced → Cron Jobs, then run again",
			len(mine), marker, strings.Join(ids, ", "))
	}
}
