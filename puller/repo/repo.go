// Package repo opens haul's restic-format repository through restic's own
// packages, and adds what haul keeps beside restic's format: a record of
// the freeze window and bytes moved in each snapshot.
package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/backend"
	"github.com/haulproject/haul/puller/internal/restic/backend/local"
	"github.com/haulproject/haul/puller/internal/restic/backend/sema"
	"github.com/haulproject/haul/puller/internal/restic/crypto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/repository"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/locks"
	"github.com/restic/chunker"
)

// Repo is an open, decrypted repository.
type Repo struct {
	*repository.Repository
	Path string
	// Backend is the storage under the repository; haul writes packs of
	// blobs it receives already compressed through it (see backup).
	Backend backend.Backend
	// noIndex: opened by OpenNoIndex; Lock leaves the index to the checker.
	noIndex bool
	// packBytes counts the pack-file bytes read through Backend.
	packBytes *atomic.Int64
}

// PackBytesRead is how many bytes of pack files have been read so far
// (a check's --read-data progress).
func (r *Repo) PackBytesRead() int64 {
	if r.packBytes == nil {
		return 0
	}
	return r.packBytes.Load()
}

// countingBackend counts the pack bytes read through it.
type countingBackend struct {
	backend.Backend
	n *atomic.Int64
}

func (b countingBackend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(rd io.Reader) error) error {
	if h.Type != backend.PackFile {
		return b.Backend.Load(ctx, h, length, offset, fn)
	}
	return b.Backend.Load(ctx, h, length, offset, func(rd io.Reader) error {
		return fn(countingReader{rd, b.n})
	})
}

// Unwrap lets restic find the backend below (backend.AsBackend).
func (b countingBackend) Unwrap() backend.Backend { return b.Backend }

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// ErrNoRepository means there is no repository at the path yet.
var ErrNoRepository = errors.New("no repository")

func backendConfig(path string) local.Config {
	cfg := local.NewConfig()
	cfg.Path = path
	return cfg
}

// Open opens and decrypts the repository at path.
func Open(ctx context.Context, path, password string) (*Repo, error) {
	return openExisting(ctx, path, password, true)
}

// OpenForLock opens the repository without loading its index, for a
// caller that locks it (Lock) before using it: Lock loads the index under
// the lock, as it reloads it after Open, so the index is read once, not
// twice (at 1 GiB, hundreds of milliseconds of a no-change backup).
func OpenForLock(ctx context.Context, path, password string) (*Repo, error) {
	r, err := openExisting(ctx, path, password, false)
	if err != nil {
		return nil, err
	}
	r.noIndex = false
	return r, nil
}

// OpenNoIndex opens the repository without loading its index: for the
// checker, which loads and verifies the index itself.
func OpenNoIndex(ctx context.Context, path, password string) (*Repo, error) {
	return openExisting(ctx, path, password, false)
}

func openExisting(ctx context.Context, path, password string, loadIndex bool) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(path, "config")); err != nil {
		return nil, fmt.Errorf("%w at %s: run `haul init` first (%v)", ErrNoRepository, path, err)
	}
	be, err := local.Open(ctx, backendConfig(path), nil)
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", path, err)
	}
	packBytes := new(atomic.Int64)
	r, err := open(ctx, countingBackend{sema.NewBackend(be), packBytes}, path, password, nil, false)
	if err != nil {
		return nil, err
	}
	r.packBytes = packBytes
	if !loadIndex {
		r.noIndex = true
		return r, nil
	}
	if err := r.LoadIndex(ctx, nil); err != nil {
		return nil, fmt.Errorf("repository %s: load index: %w", path, err)
	}
	return r, nil
}

// Init creates a repository (format version 2, compressed) at path. A nil
// polynomial picks a random one, as `restic init` does.
func Init(ctx context.Context, path, password string, pol *chunker.Pol) (*Repo, error) {
	be, err := local.Create(ctx, backendConfig(path), nil)
	if err != nil {
		return nil, fmt.Errorf("create repository %s: %w", path, err)
	}
	return open(ctx, sema.NewBackend(be), path, password, pol, true)
}

func open(ctx context.Context, be backend.Backend, path, password string, pol *chunker.Pol, create bool) (*Repo, error) {
	r, err := repository.New(be, repository.Options{Compression: repository.CompressionFastest})
	if err != nil {
		return nil, err
	}
	if create {
		if err := r.Init(ctx, restic.MaxRepoVersion, password, pol); err != nil {
			return nil, fmt.Errorf("init repository %s: %w", path, err)
		}
		return &Repo{Repository: r, Path: path, Backend: be}, nil
	}
	if err := r.SearchKey(ctx, password, 20, ""); err != nil {
		if errors.Is(err, repository.ErrNoKeyFound) {
			return nil, fmt.Errorf("repository %s: wrong password (no key matches password_file)", path)
		}
		return nil, fmt.Errorf("repository %s: %w", path, err)
	}
	return &Repo{Repository: r, Path: path, Backend: be}, nil
}

// MachineKeyKDF is the scrypt cost of a key whose password haul made
// (`haul init --create-password`: 256 random bits). restic calibrates its
// keys' scrypt to take about half a second (crypto.Calibrate), which makes
// guessing a human passphrase slow; against a random 256-bit password it
// adds nothing (2^256 guesses are out of reach at any cost per guess), and
// it is most of a no-change backup's wall time. 4 MiB and a few
// milliseconds here; the stock restic CLI reads keys of any cost.
var MachineKeyKDF = crypto.Params{N: 1 << 12, R: 8, P: 1}

// HasMachineKey says whether the key the repository was opened with has
// MachineKeyKDF's cost.
func (r *Repo) HasMachineKey(ctx context.Context) (bool, error) {
	id := r.KeyID()
	k, err := repository.LoadKey(ctx, r.Repository, id)
	if err != nil {
		return false, fmt.Errorf("load key %s: %w", id.Str(), err)
	}
	return crypto.Params{N: k.N, R: k.R, P: k.P} == MachineKeyKDF, nil
}

// UseMachineKey replaces the key the repository was opened with by one
// with the same password and master key at MachineKeyKDF's cost. For a
// password haul generated only: callers decide that. The new key is
// opened before the old one is removed, so a failure leaves a key that
// works.
func (r *Repo) UseMachineKey(ctx context.Context, password string) (restic.ID, error) {
	salt, err := crypto.NewSalt()
	if err != nil {
		return restic.ID{}, err
	}
	userKey, err := crypto.KDF(MachineKeyKDF, salt, password)
	if err != nil {
		return restic.ID{}, fmt.Errorf("derive machine key: %w", err)
	}
	master, err := json.Marshal(r.Key())
	if err != nil {
		return restic.ID{}, err
	}
	nonce := crypto.NewRandomNonce()
	sealed := append(make([]byte, 0, crypto.CiphertextLength(len(master))), nonce...)
	k := repository.Key{
		Created: time.Now(), KDF: "scrypt",
		N: MachineKeyKDF.N, R: MachineKeyKDF.R, P: MachineKeyKDF.P,
		Salt: salt, Data: userKey.Seal(sealed, nonce, master, nil),
	}
	k.Hostname, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		k.Username = u.Username
	}
	buf, err := json.Marshal(k)
	if err != nil {
		return restic.ID{}, err
	}
	id := restic.Hash(buf)
	h := backend.Handle{Type: restic.KeyFile, Name: id.String()}
	if err := r.Backend.Save(ctx, h, backend.NewByteReader(buf, r.Backend.Hasher())); err != nil {
		return restic.ID{}, fmt.Errorf("save machine key: %w", err)
	}
	if _, err := repository.OpenKey(ctx, r.Repository, id, password); err != nil {
		_ = r.Backend.Remove(ctx, h)
		return restic.ID{}, fmt.Errorf("machine key does not open: %w", err)
	}
	old := backend.Handle{Type: restic.KeyFile, Name: r.KeyID().String()}
	if err := r.Backend.Remove(ctx, old); err != nil {
		return id, fmt.Errorf("remove the calibrated key %s (the machine key %s works; remove it with `restic key remove`): %w", old.Name[:8], id.String()[:8], err)
	}
	return id, nil
}

// Lock takes restic's lock on the repository: shared for backups, exclusive
// for prune. A lock held by another live process is waited for up to wait;
// a stale one (its process gone, or not refreshed) is removed as restic
// does. The returned context is cancelled if the lock is lost.
func (r *Repo) Lock(ctx context.Context, exclusive bool, wait time.Duration, logf func(string, ...any)) (func(), context.Context, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// restic never clears stale locks itself; a killed run must not block
	// the next one (see package locks).
	removed, err := locks.RemoveStale(ctx, r.Repository, r.Path)
	for _, rm := range removed {
		logf("%s", rm)
	}
	if err != nil {
		return nil, ctx, err
	}
	u, lctx, err := repository.Lock(ctx, r.Repository, exclusive, wait, func(msg string) { logf("%s", strings.TrimSpace(msg)) }, func(format string, args ...interface{}) {})
	if err != nil {
		if restic.IsAlreadyLocked(err) {
			return nil, ctx, fmt.Errorf("lock repository %s: %w\n(another haul or restic process is using the repository; haul waited %s (lock_wait). "+
				"Run again when it is done; if that process died on another machine, remove its lock with `restic unlock`)", r.Path, err, wait)
		}
		return nil, ctx, fmt.Errorf("lock repository %s: %w", r.Path, err)
	}
	// Reload the index under the lock: a prune that ran between Open and
	// Lock may have removed packs the loaded index still lists.
	if r.noIndex {
		return u.Unlock, lctx, nil
	}
	if err := r.LoadIndex(lctx, nil); err != nil {
		u.Unlock()
		return nil, ctx, fmt.Errorf("repository %s: reload index: %w", r.Path, err)
	}
	return u.Unlock, lctx, nil
}

// Record is what haul adds to a restic snapshot, under the key "haul".
// restic ignores unknown keys, so the stock CLI reads these snapshots.
type Record struct {
	Version      string        `json:"version"`
	Agent        string        `json:"agent,omitempty"`
	Quiesce      string        `json:"quiesce_mode,omitempty"`
	FreezeMS     float64       `json:"freeze_ms"`
	FreezePhases []PhaseRecord `json:"freeze_phases,omitempty"`
	PreSyncMS    float64       `json:"presync_ms"`
	WireBytesIn  int64         `json:"wire_bytes_in"`
	WireBytesOut int64         `json:"wire_bytes_out"`
	ChunksWanted int64         `json:"chunks_wanted"`
	Deltas       int64         `json:"deltas,omitempty"`
	Protocol     int           `json:"protocol_version,omitempty"`
	ChunkBytes   int64         `json:"chunk_bytes"`
	AgentFiles   int64         `json:"agent_files_read"`
	AgentBytes   int64         `json:"agent_bytes_read"`
	DurationMS   float64       `json:"duration_ms"`
	FilesCopied  int64         `json:"frozen_files_copied"`
	BytesCopied  int64         `json:"frozen_bytes_copied"`
	// MirrorSkipped counts entries the agent did not follow because they
	// changed under its frozen sync (see proto.Frozen); Warnings name them.
	MirrorSkipped int64    `json:"mirror_skipped,omitempty"`
	Warnings      []string `json:"warnings,omitempty"`
}

// PhaseRecord is one timed freeze phase.
type PhaseRecord struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
}

// snapshotWithRecord is the JSON haul writes: restic's snapshot plus Record.
type snapshotWithRecord struct {
	*data.Snapshot
	Haul *Record `json:"haul,omitempty"`
}

// SaveSnapshot writes sn with haul's record.
func (r *Repo) SaveSnapshot(ctx context.Context, sn *data.Snapshot, rec *Record) (restic.ID, error) {
	return restic.SaveJSONUnpacked(ctx, r.Repository, restic.WriteableSnapshotFile, snapshotWithRecord{Snapshot: sn, Haul: rec})
}

// Snapshot is a snapshot with its ID and haul's record (nil for snapshots
// restic wrote).
type Snapshot struct {
	ID restic.ID
	*data.Snapshot
	Haul *Record
}

// Snapshots lists the snapshots, oldest first; host "" means all hosts.
func (r *Repo) Snapshots(ctx context.Context, host string) ([]Snapshot, error) {
	var out []Snapshot
	err := r.List(ctx, restic.SnapshotFile, func(id restic.ID, _ int64) error {
		buf, err := r.LoadUnpacked(ctx, restic.SnapshotFile, id)
		if err != nil {
			return fmt.Errorf("load snapshot %s: %w", id.Str(), err)
		}
		var s struct {
			data.Snapshot
			Haul *Record `json:"haul"`
		}
		if err := json.Unmarshal(buf, &s); err != nil {
			return fmt.Errorf("decode snapshot %s: %w", id.Str(), err)
		}
		if host != "" && s.Hostname != host {
			return nil
		}
		sn := s.Snapshot
		out = append(out, Snapshot{ID: id, Snapshot: &sn, Haul: s.Haul})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, err
}

// Find returns the snapshot named by spec: "latest" (of host, or of all
// hosts when host is ""), or an ID or unique ID prefix.
func (r *Repo) Find(ctx context.Context, host, spec string) (*Snapshot, error) {
	sns, err := r.Snapshots(ctx, host)
	if err != nil {
		return nil, err
	}
	if spec == "" || spec == "latest" {
		if len(sns) == 0 {
			if host != "" {
				return nil, fmt.Errorf("no snapshot of host %q in %s", host, r.Path)
			}
			return nil, fmt.Errorf("no snapshot in %s", r.Path)
		}
		return &sns[len(sns)-1], nil
	}
	var found *Snapshot
	for i := range sns {
		if strings.HasPrefix(sns[i].ID.String(), spec) {
			if found != nil {
				return nil, fmt.Errorf("snapshot prefix %q is ambiguous", spec)
			}
			found = &sns[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no snapshot %q (of host %q) in %s", spec, host, r.Path)
	}
	return found, nil
}

// HostBlobs returns every blob referenced by the host's snapshots. The
// want/have exchange asks a host only for chunks outside this set, so a VPS
// learns nothing about what other hosts stored.
func (r *Repo) HostBlobs(ctx context.Context, host string) (restic.BlobSet, error) {
	set, _, err := r.HostBlobsBounded(ctx, host, 0)
	return set, err
}

// HostBlobsBounded is HostBlobs reading no tree larger than maxTree bytes
// (0: no bound). A larger tree (in a snapshot written before haul bounded
// trees, or by restic from a hostile file system) is not read; its blobs
// count as never sent by this host, so they are asked for again: that
// costs transfer, never memory. It returns how many trees it skipped.
func (r *Repo) HostBlobsBounded(ctx context.Context, host string, maxTree int64) (restic.BlobSet, int, error) {
	sns, err := r.Snapshots(ctx, host)
	if err != nil {
		return nil, 0, err
	}
	var trees restic.IDs
	for _, sn := range sns {
		if sn.Tree != nil {
			trees = append(trees, *sn.Tree)
		}
	}
	set, skipped, err := r.TreeBlobsBounded(ctx, trees, maxTree)
	if err != nil {
		return nil, 0, fmt.Errorf("list blobs of host %s's snapshots: %w", host, err)
	}
	return set, skipped, nil
}

// TreeBlobsBounded lists the blobs the trees reference, their subtrees
// included, reading no tree larger than maxTree bytes (0: no bound), as
// HostBlobsBounded does. It returns how many trees it skipped.
func (r *Repo) TreeBlobsBounded(ctx context.Context, trees restic.IDs, maxTree int64) (restic.BlobSet, int, error) {
	set := restic.NewBlobSet()
	if len(trees) == 0 {
		return set, 0, nil
	}
	loader := &boundedLoader{Repository: r.Repository, max: maxTree}
	if err := data.FindUsedBlobs(ctx, loader, trees, set, nil); err != nil {
		return nil, 0, err
	}
	return set, int(loader.skipped.Load()), nil
}

// boundedLoader reads trees up to a size; a larger one reads as empty.
type boundedLoader struct {
	*repository.Repository
	max     int64
	skipped atomic.Int64
}

func (l *boundedLoader) LoadBlob(ctx context.Context, t restic.BlobType, id restic.ID, buf []byte) ([]byte, error) {
	if t == restic.TreeBlob && l.max > 0 {
		if size, ok := l.LookupBlobSize(t, id); ok && int64(size) > l.max {
			l.skipped.Add(1)
			return []byte(`{"nodes":[]}` + "\n"), nil
		}
	}
	return l.Repository.LoadBlob(ctx, t, id, buf)
}
