package truenas

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Options say how to reach the middleware.
type Options struct {
	// URL is the system's base URL (https://nas.lan). Empty: run midclt
	// on this machine, which must be the NAS.
	URL string
	// APIKey and APIUser (the account the key belongs to) log in over
	// the network; never used with midclt.
	APIKey, APIUser string
	// CAFile is a PEM file to trust for the system's certificate.
	CAFile string
	// Midclt is the midclt executable (default: found on PATH).
	Midclt  string
	Timeout time.Duration
}

// Connect picks the way to the cronjob service: midclt when no URL is
// given; otherwise JSON-RPC 2.0 when the server lists its API versions
// (GET /api/versions, TrueNAS 25.04 and later), else REST v2.0 if the
// server says it is 24.10. It returns the session and a sentence saying
// which way it took.
func Connect(ctx context.Context, o Options) (API, string, error) {
	if o.URL == "" {
		path := o.Midclt
		if path == "" {
			var err error
			if path, err = exec.LookPath("midclt"); err != nil {
				return nil, "", errors.New("midclt not found: run this on the TrueNAS system itself (no API key needed), or give --url https://NAS with --api-key-file")
			}
		}
		return &Midclt{Path: path, Timeout: o.Timeout}, "midclt (" + path + ")", nil
	}
	base, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || base.Host == "" {
		return nil, "", fmt.Errorf("--url %q: give the system's base URL, e.g. https://nas.lan", o.URL)
	}
	base.Path = strings.TrimSuffix(strings.TrimSuffix(base.Path, "/api/v2.0"), "/api/current")
	switch base.Scheme {
	case "https", "wss":
		base.Scheme = "https"
	case "http", "ws":
		return nil, "", fmt.Errorf("--url %s: refusing to send the API key over plain HTTP (TrueNAS 25.04+ revokes a key used that way): use https:// (with --ca-file for a self-signed certificate), or run haul on the NAS without --url to use midclt", o.URL)
	default:
		return nil, "", fmt.Errorf("--url %q: give the system's base URL, e.g. https://nas.lan", o.URL)
	}
	if o.APIKey == "" {
		return nil, "", errors.New("--url needs --api-key-file (Credentials → API Keys); on the NAS itself leave out --url to use midclt")
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, "", fmt.Errorf("read --ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("--ca-file %s holds no PEM certificate", o.CAFile)
		}
		tlsConfig.RootCAs = pool
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	versions, err := apiVersions(ctx, hc, base.String())
	if err != nil {
		return nil, "", err
	}
	if versions != nil {
		ws := *base
		ws.Scheme, ws.Path = "wss", base.Path+"/api/current"
		c, err := DialJSONRPC(ctx, ws.String(), tlsConfig, o.APIUser, o.APIKey, timeout)
		if err != nil {
			return nil, "", err
		}
		how := "JSON-RPC 2.0 at " + ws.String()
		if len(versions) > 0 {
			how += " (API " + versions[len(versions)-1] + ")"
		}
		return c, how, nil
	}
	rest := &REST{URL: base.String(), APIKey: o.APIKey, HTTP: hc}
	v, err := rest.Version(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("TrueNAS at %s offers no JSON-RPC API (GET /api/versions: 404) and its REST API did not answer: %w", base, err)
	}
	if !strings.Contains(v, "24.10") {
		return nil, "", fmt.Errorf("TrueNAS at %s is %q: haul speaks JSON-RPC (25.04 and later) and, for 24.10 only, REST v2.0; upgrade, or create the cron job by hand", base, v)
	}
	return rest, "REST v2.0 at " + base.String() + "/api/v2.0 (" + v + ")", nil
}

// apiVersions asks for the JSON-RPC API versions the server serves
// (GET /api/versions, no login). nil, nil: the server has none (404).
func apiVersions(ctx context.Context, hc *http.Client, base string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/versions", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("TrueNAS at %s: %w (is --url the TrueNAS system, and --ca-file its certificate?)", base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, nil
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("TrueNAS at %s: GET /api/versions: %s", base, resp.Status)
	}
	versions := []string{}
	if err := json.Unmarshal(b, &versions); err != nil {
		return nil, fmt.Errorf("TrueNAS at %s: GET /api/versions: not a list of versions: %w", base, err)
	}
	return versions, nil
}
