package truenas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/haulproject/haul/puller/truenas"
)

// middleware stands in for TrueNAS's cronjob service as its API models
// declare it (src/middlewared/middlewared/api/v25_04_0/cronjob.py:
// CronJobCreate with enabled, stderr, stdout, schedule {minute, hour, dom,
// month, dow}, command, description, user; extra fields forbidden, as
// middlewared's BaseModel says extra="forbid"; command and user required;
// CronJobUpdate the same with every field optional; cronjob.update takes
// [id, data]). The JSON-RPC, REST and midclt stand-ins all call it.
type middleware struct {
	mu    sync.Mutex
	Jobs  []truenas.CronJob `json:"jobs"`
	Next  int               `json:"next"`
	Calls []string          `json:"calls"`
}

type callError struct {
	Code   int
	Reason string
}

func newMiddleware() *middleware {
	return &middleware{Next: 2, Jobs: []truenas.CronJob{{
		ID: 1, Enabled: true, Stdout: true, Command: "/usr/local/bin/scrub-report", Description: "weekly scrub report", User: "root",
		Schedule: truenas.Schedule{Minute: "0", Hour: "8", Dom: "*", Month: "*", Dow: "1"},
	}}}
}

var createFields = map[string]bool{"enabled": true, "stderr": true, "stdout": true, "schedule": true, "command": true, "description": true, "user": true}
var scheduleFields = map[string]bool{"minute": true, "hour": true, "dom": true, "month": true, "dow": true}

// validate checks data against CronJobCreate (update: every field optional).
func validate(data json.RawMessage, update bool) (map[string]json.RawMessage, *callError) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &callError{22, "data: Input should be a valid dictionary"}
	}
	for k := range raw {
		if !createFields[k] {
			return nil, &callError{22, "cron_job_create." + k + ": Extra inputs are not permitted"}
		}
	}
	if s, ok := raw["schedule"]; ok {
		var sm map[string]any
		if json.Unmarshal(s, &sm) != nil {
			return nil, &callError{22, "schedule: Input should be a valid dictionary"}
		}
		for k := range sm {
			if !scheduleFields[k] {
				return nil, &callError{22, "schedule." + k + ": Extra inputs are not permitted"}
			}
		}
	}
	if !update {
		for _, k := range []string{"command", "user"} {
			if _, ok := raw[k]; !ok {
				return nil, &callError{22, "cron_job_create." + k + ": Field required"}
			}
		}
	}
	return raw, nil
}

// call runs one method with its JSON params.
func (m *middleware) call(method string, params []json.RawMessage) (any, *callError) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Calls = append(m.Calls, method)
	switch method {
	case "cronjob.query":
		if len(params) != 0 {
			return nil, &callError{22, "haul's stand-in expects cronjob.query without filters"}
		}
		return m.Jobs, nil
	case "cronjob.create":
		if len(params) != 1 {
			return nil, &callError{22, fmt.Sprintf("cronjob.create takes 1 argument, got %d", len(params))}
		}
		if _, cerr := validate(params[0], false); cerr != nil {
			return nil, cerr
		}
		j := truenas.CronJob{Enabled: true, Stdout: true, Schedule: truenas.Schedule{Minute: "00", Hour: "*", Dom: "*", Month: "*", Dow: "*"}}
		if err := json.Unmarshal(params[0], &j); err != nil {
			return nil, &callError{22, err.Error()}
		}
		j.ID = m.Next
		m.Next++
		m.Jobs = append(m.Jobs, j)
		return j, nil
	case "cronjob.update":
		if len(params) != 2 {
			return nil, &callError{22, fmt.Sprintf("cronjob.update takes 2 arguments, got %d", len(params))}
		}
		var id int
		if err := json.Unmarshal(params[0], &id); err != nil {
			return nil, &callError{22, "id: Input should be a valid integer"}
		}
		if _, cerr := validate(params[1], true); cerr != nil {
			return nil, cerr
		}
		for i := range m.Jobs {
			if m.Jobs[i].ID == id {
				j := m.Jobs[i]
				if err := json.Unmarshal(params[1], &j); err != nil {
					return nil, &callError{22, err.Error()}
				}
				j.ID = id
				m.Jobs[i] = j
				return j, nil
			}
		}
		return nil, &callError{2, fmt.Sprintf("CronJob %d does not exist", id)}
	}
	return nil, &callError{-32601, "Method not found"}
}

func (m *middleware) take() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.Calls
	m.Calls = nil
	return c
}

func (m *middleware) job(id int) truenas.CronJob {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range m.Jobs {
		if j.ID == id {
			return j
		}
	}
	return truenas.CronJob{}
}

func (m *middleware) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.Jobs)
}

// fakeMidclt is the test binary acting as midclt (see TestMain): `midclt
// call METHOD ARG...`, each argument parsed as JSON when it parses, else
// a string; the result printed as JSON; errors on stderr, exit 1. Its
// state lives in the file $HAUL_FAKE_MIDCLT.
func fakeMidclt(state string, args []string) int {
	m := newMiddleware()
	if b, err := os.ReadFile(state); err == nil {
		if err := json.Unmarshal(b, m); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if len(args) < 2 || args[0] != "call" {
		fmt.Fprintln(os.Stderr, "usage: midclt call METHOD [ARG...]")
		return 2
	}
	var params []json.RawMessage
	for _, a := range args[2:] {
		if json.Valid([]byte(a)) {
			params = append(params, json.RawMessage(a))
		} else {
			q, _ := json.Marshal(a)
			params = append(params, q)
		}
	}
	res, cerr := m.call(args[1], params)
	b, _ := json.Marshal(m)
	if err := os.WriteFile(state, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if cerr != nil {
		fmt.Fprintf(os.Stderr, "[EINVAL] %s\n", cerr.Reason)
		return 1
	}
	var out bytes.Buffer
	json.NewEncoder(&out).Encode(res)
	os.Stdout.WriteString(strings.TrimSpace(out.String()) + "\n")
	return 0
}

func loadMidcltState(path string) *middleware {
	m := newMiddleware()
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, m)
	}
	return m
}
