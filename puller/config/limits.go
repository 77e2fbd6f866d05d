package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/haulproject/haul/puller/backup"
)

// Limits bound what one host's backup may cost the NAS ([limits] for all
// hosts, [hosts.limits] per host, key by key). A compromised VPS may send
// any manifest; see backup.Limits for what each bounds and
// backup.DefaultLimits for the defaults.
type Limits struct {
	MaxEntries    int64    `toml:"max_entries"`
	MaxDirEntries int64    `toml:"max_dir_entries"`
	MaxDepth      int      `toml:"max_depth"`
	MaxChunkRefs  int64    `toml:"max_chunk_refs"`
	MaxTreeBytes  Size     `toml:"max_tree_bytes"`
	MaxBytesAdded Size     `toml:"max_bytes_added"`
	IdleTimeout   Duration `toml:"idle_timeout"`
	Deadline      Duration `toml:"deadline"`
}

func (l *Limits) validate() error {
	for _, f := range []struct {
		key string
		n   int64
	}{{"max_entries", l.MaxEntries}, {"max_dir_entries", l.MaxDirEntries}, {"max_depth", int64(l.MaxDepth)},
		{"max_chunk_refs", l.MaxChunkRefs}, {"max_tree_bytes", int64(l.MaxTreeBytes)}, {"max_bytes_added", int64(l.MaxBytesAdded)},
		{"idle_timeout", int64(l.IdleTimeout)}, {"deadline", int64(l.Deadline)}} {
		if f.n < 0 {
			return fmt.Errorf("%s must be positive (or left out for the default)", f.key)
		}
	}
	return nil
}

// BackupLimits returns the host's limits: its [hosts.limits] keys, else
// the [limits] ones, else the defaults.
func (c *Config) BackupLimits(h *Host) backup.Limits {
	pick := func(host, global int64) int64 {
		if host > 0 {
			return host
		}
		return global
	}
	g := c.Limits
	l := backup.Limits{
		MaxEntries:    pick(h.Limits.MaxEntries, g.MaxEntries),
		MaxDirEntries: pick(h.Limits.MaxDirEntries, g.MaxDirEntries),
		MaxDepth:      int(pick(int64(h.Limits.MaxDepth), int64(g.MaxDepth))),
		MaxChunkRefs:  pick(h.Limits.MaxChunkRefs, g.MaxChunkRefs),
		MaxTreeBytes:  pick(int64(h.Limits.MaxTreeBytes), int64(g.MaxTreeBytes)),
		MaxBytesAdded: pick(int64(h.Limits.MaxBytesAdded), int64(g.MaxBytesAdded)),
	}
	l.IdleTimeout = h.Limits.IdleTimeout.Or(g.IdleTimeout.Or(0))
	l.Deadline = h.Limits.Deadline.Or(g.Deadline.Or(0))
	return l.WithDefaults()
}

// Size is a byte count in TOML: an integer, or a string with a unit
// ("512MiB", "64GiB", "1TB").
type Size int64

func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		*s = Size(x)
		return nil
	case string:
		n, err := ParseSize(x)
		*s = Size(n)
		return err
	}
	return fmt.Errorf("a size is an integer or a string such as \"64GiB\", not %v", v)
}

// ParseSize reads "123", "512KiB", "64GiB", "1.5TB" (SI and binary units).
func ParseSize(str string) (int64, error) {
	t := strings.TrimSpace(str)
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", str)
	}
	return int64(f * mult), nil
}
