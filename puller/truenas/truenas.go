// Package truenas installs haul's cron job on a TrueNAS system through the
// middleware's cronjob service (cronjob.query, cronjob.create,
// cronjob.update), reached one of three ways:
//
//   - midclt, on the NAS itself: the middleware's own client over its unix
//     socket, as root, no API key (truenas/api_client, `midclt call METHOD
//     ARG...`, each argument parsed as JSON, the result printed as JSON);
//   - JSON-RPC 2.0 over the websocket at wss://HOST/api/current, the API
//     TrueNAS 25.04 and later document (src/middlewared_docs/docs/jsonrpc.rst),
//     authenticated with auth.login_ex {mechanism: API_KEY_PLAIN};
//   - REST v2.0 (/api/v2.0/cronjob), only for TrueNAS 24.10, which has no
//     JSON-RPC endpoint; 25.04 deprecates REST and 26 removes it.
//
// An API key is sent only over TLS: TrueNAS 25.04+ revokes a key that is
// used over plain HTTP (plugins/auth_/login_ex_impl.py, "API key revoked
// due to insecure transport").
//
// The job is found again by a marker in its description, so installing
// twice changes nothing and installing with new settings updates the job
// in place.
package truenas

import (
	"context"
	"fmt"
	"regexp"
	"strings"
)

// Schedule is a cron schedule as TrueNAS stores it (CronModel: minute,
// hour, dom, month, dow).
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

// CronJob is TrueNAS's cron job entry (CronJobCreate plus id). Stdout and
// Stderr are true to SUPPRESS that stream: TrueNAS appends "> /dev/null"
// and "2> /dev/null" to the whole command and mails what is left.
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

// API is the middleware's cronjob service, however it is reached.
type API interface {
	// Query lists every cron job (cronjob.query).
	Query(ctx context.Context) ([]CronJob, error)
	// Create adds a job and returns it with its id (cronjob.create).
	Create(ctx context.Context, j CronJob) (CronJob, error)
	// Update changes job id (cronjob.update).
	Update(ctx context.Context, id int, j CronJob) (CronJob, error)
	// Close ends the session.
	Close() error
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
func Install(ctx context.Context, api API, want CronJob, marker string) (Action, CronJob, error) {
	if !strings.Contains(want.Description, marker) {
		return "", want, fmt.Errorf("internal error: description %q lacks marker %q", want.Description, marker)
	}
	jobs, err := api.Query(ctx)
	if err != nil {
		return "", want, err
	}
	var mine []CronJob
	for _, j := range jobs {
		if strings.Contains(j.Description, marker) {
			mine = append(mine, j)
		}
	}
	want.ID = 0
	switch len(mine) {
	case 0:
		job, err := api.Create(ctx, want)
		return Created, job, err
	case 1:
		if mine[0].same(want) {
			return Unchanged, mine[0], nil
		}
		job, err := api.Update(ctx, mine[0].ID, want)
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
