package hostkey

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/haulproject/haul/internal/atomicfile"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// PinResult says what Pin did.
type PinResult struct {
	KnownHosts string `json:"known_hosts"`
	Pattern    string `json:"pattern"` // "[127.0.0.1]:2222" or "vps.example.com"
	Line       string `json:"line"`
	// Changed is false when the file already pinned exactly this key.
	Changed bool `json:"changed"`
	// Replaced counts the lines for the address that named another key.
	Replaced int `json:"replaced"`
}

// Pin makes knownHosts pin pub, and only pub, for address (host:port). It
// is idempotent: lines for other hosts, comments, @cert-authority and
// @revoked lines are kept as they are; lines (or, in a line naming several
// hosts, the name) for this address with another key are removed.
func Pin(knownHosts, address string, pub ssh.PublicKey) (*PinResult, error) {
	pattern := knownhosts.Normalize(address)
	want := pattern + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	res := &PinResult{KnownHosts: knownHosts, Pattern: pattern, Line: want}

	old, err := os.ReadFile(knownHosts)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read known_hosts: %w", err)
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(knownHosts); err == nil {
		mode = fi.Mode().Perm()
	}

	var out []string
	have := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" {
			continue
		}
		kept, match := filterLine(strings.TrimRight(line, "\n"), pattern, pub)
		switch {
		case match && kept == want && !have:
			have = true
			out = append(out, kept)
		case match:
			// Another key for this address, or a second copy of ours.
			if kept != "" {
				out = append(out, kept)
			}
			res.Replaced++
		default:
			out = append(out, kept)
		}
	}
	if !have {
		out = append(out, want)
	}
	next := strings.Join(out, "\n") + "\n"
	if next == string(old) {
		return res, nil
	}
	if err := os.MkdirAll(filepath.Dir(knownHosts), 0o755); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(knownHosts, []byte(next), mode); err != nil {
		return nil, fmt.Errorf("write known_hosts: %w", err)
	}
	res.Changed = true
	return res, nil
}

// filterLine returns line without pattern among its hosts, and whether
// pattern was among them. A line that names only pattern comes back
// whole when it pins pub (it is the pin we want) and as "" otherwise.
func filterLine(line, pattern string, pub ssh.PublicKey) (string, bool) {
	trimmed := strings.TrimSpace(line)
	if trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "@") {
		return line, false
	}
	fields := strings.Fields(trimmed)
	if len(fields) < 3 {
		return line, false
	}
	hosts := strings.Split(fields[0], ",")
	var rest []string
	match := false
	for _, h := range hosts {
		if hostMatches(h, pattern) {
			match = true
			continue
		}
		rest = append(rest, h)
	}
	if !match {
		return line, false
	}
	if len(rest) == 0 {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[1:], " ")))
		if err == nil && bytes.Equal(key.Marshal(), pub.Marshal()) && len(hosts) == 1 && hosts[0] == pattern && len(fields) == 3 {
			return pattern + " " + fields[1] + " " + fields[2], true
		}
		return "", true
	}
	return strings.Join(rest, ",") + " " + strings.Join(fields[1:], " "), true
}

// hostMatches reports whether a known_hosts host entry names pattern
// exactly, in plain or hashed (|1|salt|hash) form. Wildcards are left
// alone: they are the operator's own rules.
func hostMatches(entry, pattern string) bool {
	if entry == pattern {
		return true
	}
	if !strings.HasPrefix(entry, "|1|") {
		return false
	}
	parts := strings.Split(entry[3:], "|")
	if len(parts) != 2 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[0])
	hash, err2 := base64.StdEncoding.DecodeString(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(pattern))
	return hmac.Equal(mac.Sum(nil), hash)
}
