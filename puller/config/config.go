// Package config loads the puller's TOML configuration: the repository,
// its password file, and the hosts to pull from.
package config

import (
	"fmt"
	"github.com/haulproject/haul/internal/exclude"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/haulproject/haul/puller/internal/restic/data"
)

// Config is haul's configuration file.
type Config struct {
	// Repository is the path of the local restic-format repository.
	Repository string `toml:"repository"`
	// PasswordFile holds the repository password (first line, trimmed as
	// restic trims it). It lives only on the NAS.
	PasswordFile string `toml:"password_file"`
	// CacheDir keeps haul's own state (which chunks each host has sent).
	// Default: $XDG_CACHE_HOME/haul or ~/.cache/haul.
	CacheDir string `toml:"cache_dir"`
	// Parallel bounds how many hosts are pulled at once. Default 2.
	Parallel int `toml:"parallel"`
	// LockWait bounds how long to wait for another process's repository
	// lock. Default 5m.
	LockWait Duration `toml:"lock_wait"`
	// Retention is the forget policy for hosts without their own.
	Retention *Retention `toml:"retention"`
	// Notify says whom to tell about each run.
	Notify Notify `toml:"notify"`
	// HostKeysDir keeps each VPS's SSH host keypair (`haul hostkey`), so a
	// rebuild carries the same key to the new machine. Root-only.
	// Default: "hostkeys" beside this file.
	HostKeysDir string `toml:"host_keys_dir"`
	// Limits bound each host's backup (memory, storage, time); a host's
	// [hosts.limits] overrides them key by key.
	Limits Limits `toml:"limits"`
	Hosts  []Host `toml:"hosts"`

	// Path is the file the config was loaded from.
	Path string `toml:"-"`
}

// Host is one VPS to pull from.
type Host struct {
	Name string `toml:"name"`
	// SSH transport.
	Address      string `toml:"address"` // host:port
	User         string `toml:"user"`
	IdentityFile string `toml:"identity_file"`
	// RestoreIdentityFile is the key whose authorized_keys entry allows
	// restore; kept offline until needed.
	RestoreIdentityFile string `toml:"restore_identity_file"`
	KnownHosts          string `toml:"known_hosts"`
	// Command runs the agent locally instead (the exec transport): argv,
	// never a shell string.
	Command []string `toml:"command"`
	// RestoreCommand is Command for restores (an agent started with
	// --allow-restore). Default: Command plus --allow-restore.
	RestoreCommand []string `toml:"restore_command"`
	Tags           []string `toml:"tags"`
	// Exclude lists paths left out of the host's snapshots, with restic's
	// --exclude semantics (internal/exclude); the agent skips them while
	// walking, so they never cross the wire.
	Exclude []string `toml:"exclude"`
	// MaxAge makes `haul status` fail when the newest snapshot is older.
	MaxAge Duration `toml:"max_age"`
	// ConnectTimeout bounds the SSH dial and handshake. Default 30s.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// Retention replaces the global [retention] for this host's snapshots
	// when set ([hosts.retention]); fields are not merged.
	Retention *Retention `toml:"retention"`
	// Notify adds this host's own ping URL ([hosts.notify]).
	Notify HostNotify `toml:"notify"`
	// Limits override [limits] for this host ([hosts.limits]).
	Limits Limits `toml:"limits"`
	// Rebuild says how `haul rebuild` recreates the host ([hosts.rebuild]);
	// nil: the host is not rebuilt by haul.
	Rebuild *Rebuild `toml:"rebuild"`
}

// Retention is a forget policy with restic's semantics (`restic forget
// --keep-*`). A count of -1 means unlimited; 0 means unset.
type Retention struct {
	KeepLast    int `toml:"keep_last"`
	KeepHourly  int `toml:"keep_hourly"`
	KeepDaily   int `toml:"keep_daily"`
	KeepWeekly  int `toml:"keep_weekly"`
	KeepMonthly int `toml:"keep_monthly"`
	KeepYearly  int `toml:"keep_yearly"`
	// KeepWithin keeps every snapshot younger than this, counted back from
	// the newest snapshot, in restic's duration format: "1y2m7d12h"
	// (y years, m MONTHS, d days, h hours).
	KeepWithin string `toml:"keep_within"`
}

// Empty reports whether the policy keeps nothing (restic refuses it).
func (r *Retention) Empty() bool {
	return r == nil || *r == Retention{}
}

func (r *Retention) validate() error {
	if r == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"keep_last", r.KeepLast}, {"keep_hourly", r.KeepHourly}, {"keep_daily", r.KeepDaily},
		{"keep_weekly", r.KeepWeekly}, {"keep_monthly", r.KeepMonthly}, {"keep_yearly", r.KeepYearly}} {
		if f.n < -1 {
			return fmt.Errorf("%s = %d: use a count, or -1 for unlimited", f.name, f.n)
		}
	}
	if r.KeepWithin != "" {
		if _, err := data.ParseDuration(r.KeepWithin); err != nil {
			return fmt.Errorf("keep_within = %q: %v (restic's format, e.g. \"14d\" or \"1y6m\"; m means months)", r.KeepWithin, err)
		}
	}
	if r.Empty() {
		return fmt.Errorf("the table is present but sets no keep_* value; remove it or set a policy")
	}
	return nil
}

// Notify configures run-wide notifications.
type Notify struct {
	// PingURL is a healthchecks.io-style check: haul requests <url>/start
	// when a run begins, <url> when every host succeeded and <url>/fail
	// (with the log tail as the body) otherwise. It holds a secret token:
	// haul never prints it. PingURLFile reads it from a file instead.
	PingURL     string `toml:"ping_url"`
	PingURLFile string `toml:"ping_url_file"`
	// PingTimeout bounds each ping request. Default 10s.
	PingTimeout Duration `toml:"ping_timeout"`
	// PrometheusTextfile is written after each backup run (atomically) for
	// node_exporter's textfile collector: per-host last success time,
	// duration, bytes and freeze window. Its name must end in ".prom".
	PrometheusTextfile string `toml:"prometheus_textfile"`
}

// HostNotify is a host's own check, pinged around that host's pull.
type HostNotify struct {
	PingURL     string `toml:"ping_url"`
	PingURLFile string `toml:"ping_url_file"`
}

// ReadPingURL returns the ping URL from the config or its file ("" if
// neither is set).
func ReadPingURL(url, file string) (string, error) {
	if file == "" {
		return url, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read ping_url_file: %w", err)
	}
	u := strings.TrimSpace(string(b))
	if u == "" {
		return "", fmt.Errorf("ping_url_file %s is empty", file)
	}
	return u, nil
}

// checkPing validates a ping URL without echoing it: it may hold a token.
func checkPing(url, file string) error {
	if url != "" && file != "" {
		return fmt.Errorf("set ping_url or ping_url_file, not both")
	}
	if url != "" && !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return fmt.Errorf("ping_url must start with https:// (or http://)")
	}
	return nil
}

// RetentionFor returns the policy for a host's snapshots: its own, else
// the global one (nil when neither is set). Hosts not in the config get
// the global policy.
func (c *Config) RetentionFor(host string) *Retention {
	for i := range c.Hosts {
		if c.Hosts[i].Name == host && c.Hosts[i].Retention != nil {
			return c.Hosts[i].Retention
		}
	}
	return c.Retention
}

// Duration is a TOML string such as "26h" or "90m".
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Load reads and validates a config file. Relative paths in it are taken
// relative to the file's directory.
func Load(path string) (*Config, error) { return LoadWith(path, Overrides{}) }

// Overrides are settings given outside the file (haul's --repo and
// --password-file flags, HAUL_REPOSITORY and HAUL_PASSWORD_FILE, as restic
// has RESTIC_REPOSITORY and RESTIC_PASSWORD_FILE). They win over the file;
// relative paths in them are relative to the working directory.
type Overrides struct {
	Repository   string
	PasswordFile string
}

// LoadWith reads and validates a config file, with o applied over it.
func LoadWith(path string, o Overrides) (*Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown keys %s (check their spelling)", path, strings.Join(keys, ", "))
	}
	c.Path = path
	for _, ov := range []struct {
		v   string
		dst *string
	}{{o.Repository, &c.Repository}, {o.PasswordFile, &c.PasswordFile}} {
		if ov.v == "" {
			continue
		}
		if ov.dst == &c.Repository {
			// Before Abs, which would turn rest:http://… into a path.
			if err := checkLocalRepository(&ov.v); err != nil {
				return nil, fmt.Errorf("--repo/HAUL_REPOSITORY: %w", err)
			}
		}
		a, err := filepath.Abs(ov.v)
		if err != nil {
			return nil, err
		}
		*ov.dst = a
	}
	// Relative paths in the file are relative to the file, and stay valid
	// when a cron job or unit runs haul from another directory.
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.validate(base); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

func abs(base, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if strings.HasPrefix(p, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[2:])
		}
	}
	return filepath.Join(base, p)
}

func (c *Config) validate(base string) error {
	if c.Repository == "" {
		return fmt.Errorf("repository is not set: give the path of the local repository")
	}
	if c.PasswordFile == "" {
		return fmt.Errorf("password_file is not set")
	}
	if err := checkLocalRepository(&c.Repository); err != nil {
		return err
	}
	c.Repository = abs(base, c.Repository)
	c.PasswordFile = abs(base, c.PasswordFile)
	c.CacheDir = abs(base, c.CacheDir)
	if c.CacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			c.CacheDir = filepath.Join(d, "haul")
		} else {
			c.CacheDir = filepath.Join(filepath.Dir(c.Repository), ".haul-cache")
		}
	}
	if c.Parallel <= 0 {
		c.Parallel = 2
	}
	c.HostKeysDir = abs(base, c.HostKeysDir)
	if c.HostKeysDir == "" {
		c.HostKeysDir = hostKeysDirDefault(base)
	}
	if err := c.Retention.validate(); err != nil {
		return fmt.Errorf("[retention]: %w", err)
	}
	if err := c.Limits.validate(); err != nil {
		return fmt.Errorf("[limits]: %w", err)
	}
	if err := checkPing(c.Notify.PingURL, c.Notify.PingURLFile); err != nil {
		return fmt.Errorf("[notify]: %w", err)
	}
	c.Notify.PingURLFile = abs(base, c.Notify.PingURLFile)
	c.Notify.PrometheusTextfile = abs(base, c.Notify.PrometheusTextfile)
	if p := c.Notify.PrometheusTextfile; p != "" && !strings.HasSuffix(p, ".prom") {
		return fmt.Errorf("[notify]: prometheus_textfile %s must end in .prom (node_exporter reads only *.prom)", p)
	}
	seen := map[string]bool{}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if !hostName.MatchString(h.Name) {
			return fmt.Errorf("hosts[%d]: name %q must be 1-63 letters, digits, '.', '_' or '-'", i, h.Name)
		}
		if seen[h.Name] {
			return fmt.Errorf("host %q is listed twice", h.Name)
		}
		seen[h.Name] = true
		if _, err := exclude.Parse(h.Exclude); err != nil {
			return fmt.Errorf("host %q: exclude: %w", h.Name, err)
		}
		if err := h.Retention.validate(); err != nil {
			return fmt.Errorf("host %q: [hosts.retention]: %w", h.Name, err)
		}
		if err := h.Limits.validate(); err != nil {
			return fmt.Errorf("host %q: [hosts.limits]: %w", h.Name, err)
		}
		if err := checkPing(h.Notify.PingURL, h.Notify.PingURLFile); err != nil {
			return fmt.Errorf("host %q: [hosts.notify]: %w", h.Name, err)
		}
		h.Notify.PingURLFile = abs(base, h.Notify.PingURLFile)
		h.IdentityFile = abs(base, h.IdentityFile)
		h.RestoreIdentityFile = abs(base, h.RestoreIdentityFile)
		h.KnownHosts = abs(base, h.KnownHosts)
		switch {
		case len(h.Command) > 0 && h.Address != "":
			return fmt.Errorf("host %q: set either address (SSH) or command (local exec), not both", h.Name)
		case len(h.Command) > 0:
		case h.Address != "":
			if !strings.Contains(h.Address, ":") {
				h.Address += ":22"
			}
			if h.IdentityFile == "" {
				return fmt.Errorf("host %q: identity_file is not set (the backup key's private half)", h.Name)
			}
			if h.KnownHosts == "" {
				return fmt.Errorf("host %q: known_hosts is not set; haul only connects to pinned host keys", h.Name)
			}
			if h.User == "" {
				h.User = "root"
			}
		default:
			return fmt.Errorf("host %q: set address (SSH) or command (local exec)", h.Name)
		}
		if err := h.Rebuild.validate(base, h); err != nil {
			return fmt.Errorf("host %q: [hosts.rebuild]: %w", h.Name, err)
		}
	}
	return nil
}

// RepoLockWait is how long to wait for another process's repository lock.
func (c *Config) RepoLockWait() time.Duration { return c.LockWait.Or(5 * time.Minute) }

// Host returns the named host.
func (c *Config) Host(name string) (*Host, error) {
	for i := range c.Hosts {
		if c.Hosts[i].Name == name {
			return &c.Hosts[i], nil
		}
	}
	names := make([]string, len(c.Hosts))
	for i, h := range c.Hosts {
		names[i] = h.Name
	}
	return nil, fmt.Errorf("no host %q in %s (hosts: %s)", name, c.Path, strings.Join(names, ", "))
}

// Password reads the repository password as restic does: the file's
// content with surrounding white space trimmed.
func (c *Config) Password() (string, error) {
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read password_file: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("password_file %s is empty", c.PasswordFile)
	}
	return pw, nil
}

// resticSchemes are restic's backend URL schemes other than local.
var resticSchemes = []string{"rest", "s3", "sftp", "b2", "azure", "gs", "swift", "rclone"}

// checkLocalRepository accepts a local path (restic's "local:" prefix is
// dropped) and refuses a restic backend URL with a clear error, instead of
// creating a local directory named "rest:http:".
func checkLocalRepository(repo *string) error {
	if p, ok := strings.CutPrefix(*repo, "local:"); ok {
		*repo = p
		return nil
	}
	scheme, _, ok := strings.Cut(*repo, ":")
	if !ok {
		return nil
	}
	for _, s := range resticSchemes {
		if scheme == s {
			// (not echoed: the URL may hold a password)
			return fmt.Errorf("repository is a restic %q backend URL; haul's repository must be a local path (it writes packs straight to disk): "+
				"keep it on the NAS and send copies to that URL with `haul copy --to URL`", s+":")
		}
	}
	return nil
}
