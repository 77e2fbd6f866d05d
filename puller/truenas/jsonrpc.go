package truenas

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// JSONRPC is a session with the middleware's JSON-RPC 2.0 websocket
// (wss://HOST/api/current, TrueNAS 25.04 and later): one request at a
// time, since the server supports no batches.
type JSONRPC struct {
	ws      *websocket.Conn
	mu      sync.Mutex
	next    int
	timeout time.Duration
}

// maxMessage bounds one answer: a cron job list is a few kilobytes.
const maxMessage = 8 << 20

// DialJSONRPC connects to endpoint (wss://HOST/api/current) and logs in
// with the API key of user (auth.login_ex, mechanism API_KEY_PLAIN). It
// refuses anything but wss: the key must never cross plain HTTP.
func DialJSONRPC(ctx context.Context, endpoint string, tlsConfig *tls.Config, user, apiKey string, timeout time.Duration) (*JSONRPC, error) {
	if !strings.HasPrefix(endpoint, "wss://") {
		return nil, fmt.Errorf("TrueNAS endpoint %s: refusing to send the API key without TLS (TrueNAS revokes a key used over plain HTTP)", endpoint)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	origin := "https://" + strings.TrimPrefix(endpoint, "wss://")
	cfg, err := websocket.NewConfig(endpoint, origin)
	if err != nil {
		return nil, fmt.Errorf("TrueNAS endpoint %s: %w", endpoint, err)
	}
	cfg.TlsConfig = tlsConfig
	cfg.Dialer = &net.Dialer{Timeout: timeout}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ws, err := cfg.DialContext(dctx)
	if err != nil {
		return nil, fmt.Errorf("TrueNAS JSON-RPC %s: %w (is --url the TrueNAS system, and --ca-file its certificate?)", endpoint, err)
	}
	ws.MaxPayloadBytes = maxMessage
	c := &JSONRPC{ws: ws, timeout: timeout}
	var resp struct {
		ResponseType string   `json:"response_type"`
		URLs         []string `json:"urls"`
	}
	login := map[string]any{
		"mechanism": "API_KEY_PLAIN", "username": user, "api_key": apiKey,
		"login_options": map[string]any{"user_info": false},
	}
	if err := c.Call(ctx, "auth.login_ex", []any{login}, &resp); err != nil {
		c.Close()
		return nil, err
	}
	switch resp.ResponseType {
	case "SUCCESS":
		return c, nil
	case "EXPIRED":
		err = errors.New("the API key is expired or revoked (TrueNAS revokes a key once used over plain HTTP): create a new one under Credentials → API Keys")
	case "REDIRECT":
		err = fmt.Errorf("this controller is the HA standby: give --url of the active one (%s)", strings.Join(resp.URLs, ", "))
	case "OTP_REQUIRED":
		err = errors.New("the server asks for a one-time password, which haul cannot give: use an API key of an account without two-factor login for API keys")
	default:
		err = fmt.Errorf("the API key was refused (%s): create one under Credentials → API Keys for user %q (--api-user) and put it in --api-key-file", resp.ResponseType, user)
	}
	c.Close()
	return nil, fmt.Errorf("TrueNAS login: %w", err)
}

type rpcRequest struct {
	JSONRPC string `json:"jsonrpc"`
	ID      int    `json:"id"`
	Method  string `json:"method"`
	Params  []any  `json:"params"`
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      *int            `json:"id"`
	Method  string          `json:"method"`
	Result  json.RawMessage `json:"result"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    *struct {
			Errname string `json:"errname"`
			Reason  string `json:"reason"`
			Extra   []any  `json:"extra"`
		} `json:"data"`
	} `json:"error"`
}

// Call sends one request and waits for its answer, skipping the server's
// notifications (collection_update and the like).
func (c *JSONRPC) Call(ctx context.Context, method string, params []any, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if params == nil {
		params = []any{}
	}
	c.next++
	id := c.next
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.ws.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.ws.SetDeadline(time.Now()) })
	defer stop()
	if err := websocket.JSON.Send(c.ws, rpcRequest{JSONRPC: "2.0", ID: id, Method: method, Params: params}); err != nil {
		return fmt.Errorf("TrueNAS %s: %w", method, err)
	}
	for {
		var msg rpcResponse
		if err := websocket.JSON.Receive(c.ws, &msg); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("TrueNAS %s: %w", method, ctx.Err())
			}
			return fmt.Errorf("TrueNAS %s: no answer: %w", method, err)
		}
		if msg.ID == nil || *msg.ID != id {
			continue // a notification, or an answer to nothing we asked
		}
		if e := msg.Error; e != nil {
			why := e.Message
			if e.Data != nil && e.Data.Reason != "" {
				why = e.Data.Reason
				if len(e.Data.Extra) > 0 {
					b, _ := json.Marshal(e.Data.Extra)
					why += " " + string(b)
				}
			}
			return fmt.Errorf("TrueNAS %s: error %d: %s", method, e.Code, why)
		}
		if out != nil {
			if err := json.Unmarshal(msg.Result, out); err != nil {
				return fmt.Errorf("TrueNAS %s: unexpected answer: %w", method, err)
			}
		}
		return nil
	}
}

// Query lists every cron job (cronjob.query with no filters).
func (c *JSONRPC) Query(ctx context.Context) ([]CronJob, error) {
	var jobs []CronJob
	return jobs, c.Call(ctx, "cronjob.query", nil, &jobs)
}

// Create adds a cron job (cronjob.create, params [data]).
func (c *JSONRPC) Create(ctx context.Context, j CronJob) (CronJob, error) {
	j.ID = 0
	var out CronJob
	return out, c.Call(ctx, "cronjob.create", []any{j}, &out)
}

// Update changes cron job id (cronjob.update, params [id, data]).
func (c *JSONRPC) Update(ctx context.Context, id int, j CronJob) (CronJob, error) {
	j.ID = 0
	var out CronJob
	return out, c.Call(ctx, "cronjob.update", []any{id, j}, &out)
}

// Version returns the system's version (system.version, e.g. "25.04.2").
func (c *JSONRPC) Version(ctx context.Context) (string, error) {
	var v string
	return v, c.Call(ctx, "system.version", nil, &v)
}

// Close ends the session.
func (c *JSONRPC) Close() error { return c.ws.Close() }
