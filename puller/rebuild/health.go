package rebuild

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/haulproject/haul/puller/config"
)

// healthAddress is where the health check connects: health_address, else
// the kept primary IPv4 on 443, else the host's address on 443.
func (rb *rebuilder) healthAddress() string {
	if a := rb.settings.HealthAddress; a != "" {
		return a
	}
	if pf := rb.res.Preflight; pf != nil && pf.IPv4 != nil && pf.IPv4.IP != "" {
		return net.JoinHostPort(pf.IPv4.IP, "443")
	}
	host, _, _ := net.SplitHostPort(rb.opts.Host.Address)
	return net.JoinHostPort(host, "443")
}

// phaseHealth waits until the dashboard answers on the new server: TCP to
// port 443, then an HTTPS GET with the dashboard's name as SNI and Host,
// its certificate verified (the restored acme.json must be serving). A
// 2xx or 3xx answer is healthy.
func (rb *rebuilder) phaseHealth(ctx context.Context) (string, error) {
	s := rb.settings
	addr := rb.healthAddress()
	url := "https://" + s.Dashboard + s.HealthPath
	tlsConf := &tls.Config{ServerName: s.Dashboard, MinVersion: tls.VersionTLS12}
	if s.HealthCAFile != "" {
		pem, err := os.ReadFile(s.HealthCAFile)
		if err != nil {
			return "", fmt.Errorf("health_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", fmt.Errorf("health_ca_file %s holds no PEM certificate", s.HealthCAFile)
		}
		tlsConf.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		// Whatever the dashboard's name resolves to (DNS may still point
		// elsewhere), ask the new server.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 10 * time.Second,
		DisableKeepAlives:   true,
		Proxy:               nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		Timeout:   20 * time.Second,
		// A redirect (to the login page) is an answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	timeout := s.HealthTimeout.Or(config.DefaultHealthTimeout)
	start := rb.now()
	var last error
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		detail, err := healthOnce(ctx, client, dialer, addr, url)
		if err == nil {
			return fmt.Sprintf("%s (at %s) after %d attempt(s): %s", url, addr, attempt, detail), nil
		}
		last = err
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if rb.now().Sub(start) >= timeout {
			break
		}
		if rb.now().Sub(lastLog) >= 10*time.Second {
			rb.logf("%s: waiting for %s at %s (%s of %s): %v", rb.opts.Host.Name, url, addr, rb.now().Sub(start).Round(time.Second), timeout, err)
			lastLog = rb.now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return "", fmt.Errorf("%s at %s is not healthy after health_timeout %s; last: %v. The data is restored and the host is ready: look at the stack on the VPS (`systemctl status pangolin`, `journalctl -u pangolin`, `docker ps`), then rerun: it continues with the health check",
		url, addr, timeout, last)
}

func healthOnce(ctx context.Context, client *http.Client, dialer *net.Dialer, addr, url string) (string, error) {
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("TCP %s: %w", addr, err)
	}
	c.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "haul-rebuild-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return "", fmt.Errorf("GET %s answered %s", url, resp.Status)
	}
	detail := resp.Status
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		cert := resp.TLS.PeerCertificates[0]
		detail += fmt.Sprintf(", certificate for %s valid until %s", s0(cert.DNSNames, cert.Subject.CommonName), cert.NotAfter.Format("2006-01-02"))
	}
	return detail, nil
}

func s0(names []string, def string) string {
	if len(names) > 0 {
		return names[0]
	}
	return def
}
