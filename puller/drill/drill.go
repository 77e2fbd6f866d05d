// Package drill rehearses a restore on the NAS: it restores a host's newest
// snapshot into a scratch directory, reads every file back and checks what
// a rebuild depends on — SQLite databases pass PRAGMA integrity_check,
// Traefik's acme.json parses and is 0600, Gerbil's WireGuard key has a
// key's shape — so a backup that stores damaged data is found before the
// day it is needed.
package drill

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/notify"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
	"github.com/haulproject/haul/puller/status"
	_ "modernc.org/sqlite" // pure Go: the NAS needs no sqlite3 binary
)

// Options say what to drill.
type Options struct {
	Host string
	// Scratch is the directory to restore into; it is created empty and
	// removed afterwards unless Keep is set.
	Scratch string
	Keep    bool
	Logf    func(string, ...any)
}

// Check is one file the drill checked beyond reading it back.
type Check struct {
	Path  string `json:"path"`
	Kind  string `json:"kind"` // "sqlite", "acme.json", "wireguard-key"
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Result is one drill.
type Result struct {
	Host     string  `json:"host"`
	Snapshot string  `json:"snapshot"`
	OK       bool    `json:"ok"`
	Files    int64   `json:"files"`
	Bytes    int64   `json:"bytes"`
	Checks   []Check `json:"checks"`
	// Problems lists everything found wrong, one sentence each.
	Problems   []string `json:"problems"`
	DurationMS float64  `json:"duration_ms"`
}

// Run restores the host's newest snapshot into o.Scratch and checks it.
// A damaged snapshot is a Result with OK false; err is for drills that
// could not run (no snapshot, no space for the scratch copy).
func Run(ctx context.Context, r *repo.Repo, o Options) (*Result, error) {
	start := time.Now()
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	sn, err := r.Find(ctx, o.Host, "latest")
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(o.Scratch); err != nil {
		return nil, fmt.Errorf("clear scratch dir %s: %w", o.Scratch, err)
	}
	if !o.Keep {
		defer os.RemoveAll(o.Scratch)
	}
	res := &Result{Host: o.Host, Snapshot: sn.ID.Str(), Checks: []Check{}, Problems: []string{}}
	logf("%s: restoring snapshot %s into %s", o.Host, sn.ID.Str(), o.Scratch)
	// Warnings (a device node or setuid bit left out of the scratch copy)
	// are logged, not problems: a rebuild restores them on the VPS.
	warn := func(msg string) { logf("%s: restore: %s", o.Host, msg) }
	if _, err := restore.Local(ctx, r, sn, o.Scratch, restore.LocalOptions{Warn: warn}); err != nil {
		// The restorer verifies each blob's hash; a failure here is damage
		// in the repository, reported like any other finding.
		res.Problems = append(res.Problems, fmt.Sprintf("restore failed: %v (run `haul check --read-data`)", err))
	}
	err = filepath.WalkDir(o.Scratch, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("read %q: %v", rel(o.Scratch, path), err))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		n, head, err := readBack(path)
		res.Files++
		res.Bytes += n
		name := rel(o.Scratch, path)
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("read back %q: %v", name, err))
			return nil
		}
		if c, ok := check(path, name, head); ok {
			res.Checks = append(res.Checks, c)
			if !c.OK {
				// %q: names come from the VPS and are never printed raw.
				res.Problems = append(res.Problems, fmt.Sprintf("%s %q: %s", c.Kind, c.Path, c.Error))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.OK = len(res.Problems) == 0
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return res, nil
}

func rel(root, path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return "/" + r
}

// readBack reads a restored file to its end through SHA-256 (so every
// byte comes off the disk) and returns its size and first bytes.
func readBack(path string) (int64, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	head := make([]byte, 16)
	k, _ := io.ReadFull(f, head)
	h := sha256.New()
	h.Write(head[:k])
	n, err := io.Copy(h, f)
	return n + int64(k), head[:k], err
}

var sqliteMagic = []byte("SQLite format 3\x00")

// check runs the content check a file's kind calls for.
func check(path, name string, head []byte) (Check, bool) {
	switch {
	case bytes.Equal(head, sqliteMagic):
		c := Check{Path: name, Kind: "sqlite"}
		c.Error = sqliteIntegrity(path)
		c.OK = c.Error == ""
		return c, true
	case filepath.Base(path) == "acme.json":
		c := Check{Path: name, Kind: "acme.json"}
		c.Error = acmeJSON(path)
		c.OK = c.Error == ""
		return c, true
	case filepath.Base(path) == "key" && filepath.Base(filepath.Dir(path)) == "config":
		// Pangolin's installer keeps Gerbil's WireGuard private key at
		// config/key.
		c := Check{Path: name, Kind: "wireguard-key"}
		c.Error = wireguardKey(path)
		c.OK = c.Error == ""
		return c, true
	}
	return Check{}, false
}

// sqliteIntegrity runs PRAGMA integrity_check on the scratch copy ("" when
// it says ok).
func sqliteIntegrity(path string) string {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err.Error()
	}
	defer db.Close()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return "integrity_check: " + err.Error()
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return "integrity_check: " + err.Error()
		}
		if m != "ok" {
			msgs = append(msgs, m)
		}
	}
	if err := rows.Err(); err != nil {
		return "integrity_check: " + err.Error()
	}
	if len(msgs) > 0 {
		if len(msgs) > 3 {
			msgs = append(msgs[:3], fmt.Sprintf("… %d more", len(msgs)-3))
		}
		return "integrity_check: " + strings.Join(msgs, "; ")
	}
	return ""
}

func acmeJSON(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	var problems []string
	if m := fi.Mode().Perm(); m != 0o600 {
		problems = append(problems, fmt.Sprintf("mode %04o, Traefik refuses anything but 0600", m))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(bytes.TrimSpace(b)) > 0 && !json.Valid(b) {
		problems = append(problems, "not valid JSON")
	}
	return strings.Join(problems, "; ")
}

// wireguardKey checks the shape of a WireGuard key file: one line of
// standard base64 that decodes to 32 bytes (wg genkey's output).
func wireguardKey(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) != 32 {
		return fmt.Sprintf("not a WireGuard key: want 44 characters of base64 for 32 bytes, got %d characters", len(s))
	}
	return ""
}

// HostsOptions drill several hosts and record the outcomes.
type HostsOptions struct {
	Hosts []string
	// CacheDir holds the scratch dirs (CacheDir/drill/<host>) unless
	// Scratch is set, and the per-host state `haul status` reads.
	CacheDir, Scratch string
	Keep              bool
	// Textfile, when set, is the Prometheus textfile to rewrite afterwards
	// from the recorded state of AllHosts (every configured host, so hosts
	// not drilled now keep their metrics).
	Textfile string
	AllHosts []string
	Logf     func(string, ...any)
}

// Hosts drills each host in turn (one scratch copy on disk at a time) and
// records each outcome for `haul status` and the Prometheus textfile. A
// host whose drill could not run is recorded as failed with the reason.
func Hosts(ctx context.Context, r *repo.Repo, o HostsOptions) []*Result {
	var out []*Result
	for _, h := range o.Hosts {
		scratch := filepath.Join(o.CacheDir, "drill", h)
		if o.Scratch != "" {
			scratch = filepath.Join(o.Scratch, h)
		}
		start := time.Now()
		res, err := Run(ctx, r, Options{Host: h, Scratch: scratch, Keep: o.Keep, Logf: o.Logf})
		if err != nil {
			res = &Result{Host: h, Checks: []Check{}, Problems: []string{err.Error()},
				DurationMS: float64(time.Since(start).Microseconds()) / 1000}
		}
		d := status.Drill{Finished: time.Now(), OK: res.OK, SnapshotID: res.Snapshot, Files: res.Files, Bytes: res.Bytes,
			Problems: res.Problems, DurationMS: res.DurationMS}
		if _, err := status.RecordDrill(o.CacheDir, r.Config().ID, h, d); err != nil && o.Logf != nil {
			o.Logf("%s: warning: could not record the drill for `haul status`: %v", h, err)
		}
		out = append(out, res)
	}
	if o.Textfile != "" {
		if err := writeTextfile(o.Textfile, o.CacheDir, r.Config().ID, o.AllHosts); err != nil && o.Logf != nil {
			o.Logf("warning: %v", err)
		}
	}
	return out
}

func writeTextfile(path, cacheDir, repoID string, hosts []string) error {
	var states []*status.HostState
	for _, h := range hosts {
		st, err := status.LoadState(cacheDir, repoID, h)
		if err != nil {
			return err
		}
		states = append(states, st)
	}
	return notify.WriteTextfile(path, states)
}
