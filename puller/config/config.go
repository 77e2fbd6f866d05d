// Package config loads the puller's TOML configuration: the repository,
// its password file, and the hosts to pull from.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
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
	Hosts    []Host   `toml:"hosts"`

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
	// MaxAge makes `haul status` fail when the newest snapshot is older.
	MaxAge Duration `toml:"max_age"`
	// ConnectTimeout bounds the SSH dial and handshake. Default 30s.
	ConnectTimeout Duration `toml:"connect_timeout"`
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
func Load(path string) (*Config, error) {
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
	if err := c.validate(filepath.Dir(path)); err != nil {
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
	}
	return nil
}

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
