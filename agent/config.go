package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/haulproject/haul/agent/restore"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is haul-agent's configuration file (JSON). The NixOS module renders
// it; on other hosts it is written by hand. Unknown keys are an error, so a
// typo cannot silently disable quiescing.
type Config struct {
	// Host is the name the agent reports; the puller stores snapshots under
	// its own name for the host. Default: the machine's hostname.
	Host string `json:"host,omitempty"`
	// DataPaths are the absolute directories to back up.
	DataPaths []string `json:"data_paths"`
	// StateDir holds the mirror, the chunk cache and the lock. It is created
	// 0700: it holds the same secrets as the data.
	StateDir string `json:"state_dir"`
	// Quiesce says how the services writing DataPaths are paused.
	Quiesce Quiesce `json:"quiesce"`
	// ReadyMarker is written after a successful restore (or `haul-agent
	// mark-ready`); the stack's units require it. Default: <state_dir>/ready.
	ReadyMarker string `json:"ready_marker,omitempty"`
	// AllowInplaceRestore permits a restore onto a host that is already
	// ready. Off by default, so a stolen restore key cannot overwrite a
	// running VPS.
	AllowInplaceRestore bool `json:"allow_inplace_restore,omitempty"`
	// AllowSpecialFiles makes restores create device nodes and keep the
	// setuid/setgid bits of files, as `haul restore --allow-special`
	// asks for one restore. Off by default: a snapshot of a compromised
	// host could otherwise plant a device node or a setuid binary.
	AllowSpecialFiles bool `json:"allow_special_files,omitempty"`
	// KeepPrevious is how many *.prev-<time> copies a restore keeps.
	// Default 2.
	KeepPrevious *int `json:"keep_previous,omitempty"`
	// LockTimeout bounds how long a session waits for another one to finish
	// (two backups at once never double-stop). Default 10m.
	LockTimeout Duration `json:"lock_timeout,omitempty"`
	// ChunkWorkers is how many cores chunk one large changed file (32 MiB
	// or more) in a backup, 1 to 4. Default 1: on a 2-vCPU VPS the
	// services keep the other core, and a walk of a changed 717 MiB
	// database takes ~1.2 s on one (docs/BENCHMARKS.md).
	ChunkWorkers int `json:"chunk_workers,omitempty"`
}

// Quiesce configures the freeze.
type Quiesce struct {
	// Mode is "none", "pause" or "stop". Default "none".
	Mode string `json:"mode,omitempty"`
	// Containers are Docker container names, in start order.
	Containers []string `json:"containers,omitempty"`
	// ComposeProject adds every container labelled
	// com.docker.compose.project=<name>.
	ComposeProject string `json:"compose_project,omitempty"`
	// Units are systemd units, in start order, for containers systemd
	// manages (a docker stop would be undone by the unit's restart).
	Units []string `json:"units,omitempty"`
	// DockerHost is the Engine API endpoint, unix:///path. Default:
	// $DOCKER_HOST, then unix:///var/run/docker.sock.
	DockerHost string `json:"docker_host,omitempty"`
	// Timeout bounds each stop, start, pause or unpause. Default 30s.
	Timeout Duration `json:"timeout,omitempty"`
	// GuardTimeout is how long after a freeze began the guard brings the
	// targets back if the agent died. Default 30s.
	GuardTimeout Duration `json:"guard_timeout,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Or returns d, or def when d is zero.
func (d Duration) Or(def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent config: %w", err)
	}
	return ParseConfig(b, path)
}

// ParseConfig parses and validates config JSON; name is used in errors.
func ParseConfig(b []byte, name string) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("agent config %s: %w", name, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("agent config %s: %w", name, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if len(c.DataPaths) == 0 {
		return fmt.Errorf("data_paths is empty: list the absolute directories to back up")
	}
	for i, p := range c.DataPaths {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("data_paths[%d] %q is not absolute", i, p)
		}
		clean := filepath.Clean(p)
		if clean == "/" {
			return fmt.Errorf("data_paths[%d] is the root directory; name the data directories", i)
		}
		c.DataPaths[i] = clean
	}
	for i, p := range c.DataPaths {
		for j, q := range c.DataPaths {
			if i != j && (p == q || strings.HasPrefix(p, q+"/")) {
				return fmt.Errorf("data_paths %q and %q overlap; list each directory once", p, q)
			}
		}
	}
	if c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state_dir %q must be an absolute path", c.StateDir)
	}
	c.StateDir = filepath.Clean(c.StateDir)
	for _, p := range c.DataPaths {
		if c.StateDir == p || strings.HasPrefix(c.StateDir, p+"/") || strings.HasPrefix(p, c.StateDir+"/") {
			return fmt.Errorf("state_dir %q and data path %q overlap; keep the state dir outside the data", c.StateDir, p)
		}
	}
	switch c.Quiesce.Mode {
	case "":
		c.Quiesce.Mode = "none"
	case "none", "pause", "stop":
	default:
		return fmt.Errorf("quiesce.mode %q: want none, pause or stop", c.Quiesce.Mode)
	}
	if c.Quiesce.Mode != "none" && len(c.Quiesce.Containers) == 0 && c.Quiesce.ComposeProject == "" && len(c.Quiesce.Units) == 0 {
		return fmt.Errorf("quiesce.mode is %q but no containers, compose_project or units are listed", c.Quiesce.Mode)
	}
	if c.Quiesce.Mode == "pause" && len(c.Quiesce.Units) > 0 {
		return fmt.Errorf("quiesce.mode \"pause\" cannot pause systemd units; use \"stop\" or list Docker containers")
	}
	if c.ReadyMarker == "" {
		c.ReadyMarker = c.state(stateReady)
	} else if !filepath.IsAbs(c.ReadyMarker) {
		return fmt.Errorf("ready_marker %q must be an absolute path", c.ReadyMarker)
	}
	if c.KeepPrevious != nil && *c.KeepPrevious < 0 {
		return fmt.Errorf("keep_previous must be 0 or more")
	}
	if c.ChunkWorkers < 0 || c.ChunkWorkers > 4 {
		return fmt.Errorf("chunk_workers %d: want 1 to 4 (0 or unset: 1)", c.ChunkWorkers)
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("host is not set and the hostname is unknown: %w", err)
		}
		c.Host = h
	}
	return nil
}

// Workers returns how many cores chunk one large file.
func (c *Config) Workers() int { return max(c.ChunkWorkers, 1) }

// Keep returns how many previous data copies a restore keeps.
func (c *Config) Keep() int {
	if c.KeepPrevious == nil {
		return 2
	}
	return *c.KeepPrevious
}

// The state dir's files, all named here. The state dir is the agent's
// alone (0700); the ready marker lives here unless ready_marker moves it.
const (
	stateLock        = "lock"              // session lock: backup and restore exclusive, sftp view shared
	stateMirror      = "mirror"            // the consistent copy of the data paths
	stateMirrorIndex = "mirror.index"      // what the mirror holds, so a sync copies only changes
	stateChunkCache  = "chunks.cache"      // chunk lists by inode, size, mtime, ctime
	stateDeltaBases  = "delta-bases.cache" // the versions the puller last confirmed
	stateFrozen      = "frozen.json"       // freeze marker while the targets are quiesced
	stateThawing     = "thawing.json"      // the same marker while they are resumed
	stateGuardLog    = "guard.log"         // what the watchdog and recover did
	stateGuardLock   = "guard.lock"        // one recovery at a time
	stateSwapJournal = "restore-swap.json" // a restore's swap in progress
	stateReady       = "ready"             // the default ready marker
)

func (c *Config) state(name string) string { return filepath.Join(c.StateDir, name) }

// restoreHost is what package restore needs of the config.
func (c *Config) restoreHost() restore.Host {
	return restore.Host{DataPaths: c.DataPaths, SwapJournal: c.state(stateSwapJournal), Keep: c.Keep(),
		WriteMarker: func(raw json.RawMessage) error {
			var m ReadyMarker
			if err := json.Unmarshal(raw, &m); err != nil {
				return fmt.Errorf("the swap journal's ready marker: %w", err)
			}
			_, err := WriteReadyMarker(c, m)
			return err
		}}
}

func (c *Config) lockPath() string        { return c.state(stateLock) }
func (c *Config) mirrorIndexPath() string { return c.state(stateMirrorIndex) }
func (c *Config) chunkCachePath() string  { return c.state(stateChunkCache) }
func (c *Config) deltaBasesPath() string  { return c.state(stateDeltaBases) }
func (c *Config) guardLockPath() string   { return c.state(stateGuardLock) }

// FrozenMarkerPath is where the marker lives while the freeze is on.
func (c *Config) FrozenMarkerPath() string { return c.state(stateFrozen) }

// ThawingMarkerPath is where the marker lives while the targets are being
// resumed.
func (c *Config) ThawingMarkerPath() string { return c.state(stateThawing) }

// GuardLogPath is where the watchdog writes what it did.
func (c *Config) GuardLogPath() string { return c.state(stateGuardLog) }

// MirrorDir is where the consistent copy of the data paths lives.
func (c *Config) MirrorDir() string { return c.state(stateMirror) }

// MirrorPath maps a data path to its place in the mirror.
func (c *Config) MirrorPath(dataPath string) string {
	return filepath.Join(c.MirrorDir(), strings.TrimPrefix(dataPath, "/"))
}
