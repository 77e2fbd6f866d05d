package backup

import (
	"errors"
	"fmt"
	"time"
)

// Limits bound what one host's backup may cost the NAS. A compromised VPS
// may send any manifest; these keep the puller's memory, disk and time per
// host independent of what it sends. Zero fields take the defaults.
//
// Memory: trees are written as their directories close, so what the
// puller holds is the tree data of the directories open at once (bounded by
// MaxTreeBytes, whatever the depth or width) plus one entry per chunk it is
// waiting for (bounded by MaxChunkRefs).
type Limits struct {
	// MaxEntries bounds the nodes of one snapshot (config key max_entries).
	MaxEntries int64
	// MaxDirEntries bounds the entries of one directory (max_dir_entries).
	MaxDirEntries int64
	// MaxDepth bounds how deep directories nest (max_depth).
	MaxDepth int
	// MaxChunkRefs bounds the chunk references of the manifest
	// (max_chunk_refs).
	MaxChunkRefs int64
	// MaxTreeBytes bounds the tree data held for the directories open at
	// once (max_tree_bytes): the largest directory's restic tree, plus its
	// ancestors'.
	MaxTreeBytes int64
	// MaxBytesAdded bounds the bytes one run adds to the repository, as
	// stored (max_bytes_added): a per-host quota per run.
	MaxBytesAdded int64
	// IdleTimeout drops a session whose agent sends nothing for this long
	// while the puller waits for it (idle_timeout).
	IdleTimeout time.Duration
	// Deadline bounds one host's whole backup (deadline).
	Deadline time.Duration
}

// DefaultLimits fit a VPS: tens of GiB of data, a few million files, a
// NAS with a few GiB of memory to spare for a pull. The freeze's first
// sync and the chunking of a new large file send nothing for a while,
// hence an idle timeout of minutes, not seconds.
var DefaultLimits = Limits{
	MaxEntries:    10_000_000,
	MaxDirEntries: 1_000_000,
	MaxDepth:      1024,
	MaxChunkRefs:  16_000_000,
	MaxTreeBytes:  64 << 20,
	MaxBytesAdded: 256 << 30,
	IdleTimeout:   30 * time.Minute,
	Deadline:      12 * time.Hour,
}

// WithDefaults returns l with its zero fields set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	set(&d.MaxEntries, l.MaxEntries)
	set(&d.MaxDirEntries, l.MaxDirEntries)
	set(&d.MaxDepth, l.MaxDepth)
	set(&d.MaxChunkRefs, l.MaxChunkRefs)
	set(&d.MaxTreeBytes, l.MaxTreeBytes)
	set(&d.MaxBytesAdded, l.MaxBytesAdded)
	set(&d.IdleTimeout, l.IdleTimeout)
	set(&d.Deadline, l.Deadline)
	return d
}

// set stores v in *dst when v is set (above zero).
func set[T int | int64 | time.Duration](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}

// ErrLimit is wrapped by every error that reports a limit being reached.
var ErrLimit = errors.New("limit reached")

// LimitError says which limit a host's backup exceeded, and how to raise it.
type LimitError struct {
	Key   string // the config key, as in [hosts.limits]
	Limit string // its value
	What  string // what went over it
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s: over the limit %s = %s (nothing was stored as a snapshot; if the data is real, raise %s in the host's [hosts.limits] table)",
		e.What, e.Key, e.Limit, e.Key)
}

func (e *LimitError) Unwrap() error { return ErrLimit }

func limitErr(key string, limit any, format string, args ...any) error {
	return &LimitError{Key: key, Limit: fmt.Sprint(limit), What: fmt.Sprintf(format, args...)}
}
