// Package offsite copies snapshots from haul's repository to a second
// restic repository at any restic backend URL (a local path, local:,
// rest:, s3:, sftp:), with restic copy's semantics: only the blobs the
// target lacks are sent, each decrypted from the source and encrypted again
// with the target's key, and a snapshot already copied (by haul or by
// `restic copy`) is never copied twice. The backends are restic's own
// (generated under puller/internal/restic), not clients written here.
package offsite

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/backend"
	"github.com/haulproject/haul/puller/internal/restic/backend/limiter"
	"github.com/haulproject/haul/puller/internal/restic/backend/local"
	"github.com/haulproject/haul/puller/internal/restic/backend/location"
	"github.com/haulproject/haul/puller/internal/restic/backend/rest"
	"github.com/haulproject/haul/puller/internal/restic/backend/retry"
	"github.com/haulproject/haul/puller/internal/restic/backend/s3"
	"github.com/haulproject/haul/puller/internal/restic/backend/sema"
	"github.com/haulproject/haul/puller/internal/restic/backend/sftp"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/repository"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
)

// Backends are the restic backends a copy can go to.
func Backends() *location.Registry {
	r := location.NewRegistry()
	r.Register(local.NewFactory())
	r.Register(rest.NewFactory())
	r.Register(s3.NewFactory())
	r.Register(sftp.NewFactory())
	return r
}

// Schemes lists the schemes Backends knows, for messages.
const Schemes = "a local path, local:PATH, rest:URL, s3:…, sftp:…"

// Redact returns a backend URL without its password, for messages.
func Redact(url string) string { return location.StripPassword(Backends(), url) }

// Options say where to copy and what.
type Options struct {
	// To is the target's restic backend URL.
	To string
	// Password opens (or, with Init, creates) the target.
	Password string
	// Init creates the target first, with the source's chunker polynomial
	// (restic init --copy-chunker-params), so later copies deduplicate.
	Init bool
	// Hosts limits the copy to these hosts' snapshots (none: all).
	Hosts []string
	// CAFiles are PEM files to trust for a TLS target (rest, s3).
	CAFiles []string
	// LockWait is how long to wait for the target's lock.
	LockWait time.Duration
	Logf     func(string, ...any)
}

// Copied is one snapshot copied.
type Copied struct {
	Host   string    `json:"host"`
	Time   time.Time `json:"time"`
	Source string    `json:"source"`
	Target string    `json:"target"`
}

// Result is what a copy did.
type Result struct {
	Target string   `json:"target"`
	Copied []Copied `json:"copied"`
	// AlreadyThere counts the selected snapshots the target had.
	AlreadyThere int `json:"already_there"`
	// Blobs and BlobBytes are what was sent (stored size in the source).
	Blobs     int    `json:"blobs"`
	BlobBytes uint64 `json:"blob_bytes"`
	Packs     int    `json:"source_packs_read"`
}

// Open opens (or creates) the repository at a backend URL.
// With o.Init it creates the repository with src's chunker polynomial.
func Open(ctx context.Context, o Options, src *restic.Config) (*repository.Repository, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	reg := Backends()
	loc, err := location.Parse(reg, o.To)
	if err != nil {
		return nil, fmt.Errorf("--to %s: %v (give %s)", Redact(o.To), firstLine(err.Error()), Schemes)
	}
	if cfg, ok := loc.Config.(backend.ApplyEnvironmenter); ok {
		cfg.ApplyEnvironment("") // s3: AWS_ACCESS_KEY_ID and friends, as restic reads them
	}
	rt, err := backend.Transport(backend.TransportOptions{RootCertFilenames: o.CAFiles})
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	lim := limiter.NewStaticLimiter(limiter.Limits{})
	rt = lim.Transport(rt)
	f := reg.Lookup(loc.Scheme)
	var be backend.Backend
	if o.Init {
		be, err = f.Create(ctx, loc.Config, rt, lim, logf)
	} else {
		be, err = f.Open(ctx, loc.Config, rt, lim, logf)
	}
	if err != nil {
		if errors.Is(err, backend.ErrNoRepository) {
			return nil, fmt.Errorf("no repository at %s: create it with `haul copy --to … --init` (it takes the source's chunker parameters, so copies deduplicate)", Redact(o.To))
		}
		return nil, fmt.Errorf("open %s: %w", Redact(o.To), err)
	}
	be = retry.New(sema.NewBackend(be), 15*time.Minute, func(msg string, err error, d time.Duration) {
		logf("%s: %v (retrying in %s)", msg, err, d.Round(time.Second))
	}, func(string, int) {})
	r, err := repository.New(be, repository.Options{Compression: repository.CompressionAuto})
	if err != nil {
		return nil, err
	}
	if o.Init {
		if _, err := be.Stat(ctx, backend.Handle{Type: restic.ConfigFile}); err == nil {
			return nil, fmt.Errorf("%s already holds a repository: leave out --init", Redact(o.To))
		}
		p := src.ChunkerPolynomial
		if err := r.Init(ctx, restic.MaxRepoVersion, o.Password, &p); err != nil {
			return nil, fmt.Errorf("init %s: %w", Redact(o.To), err)
		}
		return r, nil
	}
	if _, err := be.Stat(ctx, backend.Handle{Type: restic.ConfigFile}); err != nil {
		if be.IsNotExist(err) {
			return nil, fmt.Errorf("no repository at %s: create it with `haul copy --to … --init` (it takes the source's chunker parameters, so copies deduplicate)", Redact(o.To))
		}
		return nil, fmt.Errorf("open %s: %w", Redact(o.To), err)
	}
	if err := r.SearchKey(ctx, o.Password, 20, ""); err != nil {
		if errors.Is(err, repository.ErrNoKeyFound) {
			return nil, fmt.Errorf("%s: wrong password (no key matches --to-password-file)", Redact(o.To))
		}
		return nil, fmt.Errorf("%s: %w", Redact(o.To), err)
	}
	return r, nil
}

// Copy copies src's snapshots (o.Hosts', or all) that the target lacks.
// src must be locked (shared) by the caller; the target gets restic's
// shared lock, which an append-only rest-server allows.
func Copy(ctx context.Context, src *repo.Repo, o Options) (*Result, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	srcCfg := src.Config()
	dst, err := Open(ctx, o, &srcCfg)
	if err != nil {
		return nil, err
	}
	if dst.Config().ID == srcCfg.ID {
		return nil, fmt.Errorf("%s is the source repository itself", Redact(o.To))
	}
	wait := o.LockWait
	if wait == 0 {
		wait = 5 * time.Minute
	}
	unlock, ctx, err := repository.Lock(ctx, dst, false, wait, func(msg string) { logf("%s", strings.TrimSpace(msg)) }, func(string, ...interface{}) {})
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", Redact(o.To), err)
	}
	defer unlock.Unlock()
	if err := dst.LoadIndex(ctx, nil); err != nil {
		return nil, fmt.Errorf("%s: load index: %w", Redact(o.To), err)
	}
	target := &repo.Repo{Repository: dst, Path: Redact(o.To)}
	have, err := target.Snapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	sns, err := src.Snapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	res := &Result{Target: Redact(o.To), Copied: []Copied{}}
	var todo []repo.Snapshot
	for _, sn := range sns {
		if len(o.Hosts) > 0 && !contains(o.Hosts, sn.Hostname) {
			continue
		}
		if copiedBefore(sn, have) {
			res.AlreadyThere++
			continue
		}
		todo = append(todo, sn)
	}
	if len(todo) == 0 {
		return res, nil
	}
	// Every blob the selected snapshots need and the target lacks, and the
	// source packs holding them. Trees shared between snapshots are walked
	// once.
	blobs := src.NewAssociatedBlobSet()
	packs := restic.NewIDSet()
	visited := src.NewAssociatedBlobSet()
	want := func(h restic.BlobHandle) {
		if _, ok := dst.LookupBlobSize(h.Type, h.ID); ok || blobs.Has(h) {
			return
		}
		pbs := src.LookupBlob(h.Type, h.ID)
		if len(pbs) == 0 {
			return // reported below: the source is damaged
		}
		blobs.Insert(h)
		packs.Insert(pbs[0].PackID)
		res.BlobBytes += uint64(pbs[0].Length)
	}
	roots := restic.IDs{}
	for _, sn := range todo {
		roots = append(roots, *sn.Tree)
	}
	var missing []string
	err = data.StreamTrees(ctx, src, roots, nil, func(id restic.ID) bool {
		h := restic.BlobHandle{ID: id, Type: restic.TreeBlob}
		seen := visited.Has(h)
		visited.Insert(h)
		return seen
	}, func(id restic.ID, err error, nodes data.TreeNodeIterator) error {
		if err != nil {
			return fmt.Errorf("source tree %s: %w (run `haul check`)", id.Str(), err)
		}
		want(restic.BlobHandle{ID: id, Type: restic.TreeBlob})
		for item := range nodes {
			if item.Error != nil {
				return item.Error
			}
			for _, b := range item.Node.Content {
				h := restic.BlobHandle{ID: b, Type: restic.DataBlob}
				if _, ok := dst.LookupBlobSize(h.Type, h.ID); !ok && len(src.LookupBlob(h.Type, h.ID)) == 0 {
					missing = append(missing, b.Str())
				}
				want(h)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the source lacks %d data blobs its snapshots need (e.g. %s): run `haul check` before copying", len(missing), missing[0])
	}
	res.Blobs, res.Packs = blobs.Len(), len(packs)
	logf("copying %d blobs (%d bytes stored) from %d packs to %s", res.Blobs, res.BlobBytes, res.Packs, res.Target)
	err = dst.WithBlobUploader(ctx, func(ctx context.Context, up restic.BlobSaverWithAsync) error {
		return repository.CopyBlobs(ctx, src, dst, up, packs, blobs, nil, func(msg string, args ...interface{}) { logf(msg, args...) })
	})
	if err != nil {
		return nil, fmt.Errorf("copy blobs to %s: %w", res.Target, err)
	}
	// Snapshots only after every blob they need is stored: an interrupted
	// copy leaves no snapshot that points at missing data.
	for _, sn := range todo {
		c := *sn.Snapshot
		c.Parent = nil // the parent means nothing in the target
		if c.Original == nil {
			id := sn.ID
			c.Original = &id
		}
		id, err := target.SaveSnapshot(ctx, &c, sn.Haul)
		if err != nil {
			return nil, fmt.Errorf("save snapshot in %s: %w", res.Target, err)
		}
		res.Copied = append(res.Copied, Copied{Host: sn.Hostname, Time: sn.Time, Source: sn.ID.Str(), Target: id.Str()})
	}
	sort.Slice(res.Copied, func(i, j int) bool { return res.Copied[i].Time.Before(res.Copied[j].Time) })
	return res, nil
}

// copiedBefore reports whether have holds sn: a copy of it (its Original),
// sn itself, or a snapshot alike in everything but parent and original.
func copiedBefore(sn repo.Snapshot, have []repo.Snapshot) bool {
	orig := sn.ID
	if sn.Original != nil {
		orig = *sn.Original
	}
	for _, h := range have {
		if h.ID == sn.ID || (h.Original != nil && (*h.Original == sn.ID || *h.Original == orig)) || alike(sn.Snapshot, h.Snapshot) {
			return true
		}
	}
	return false
}

func alike(a, b *data.Snapshot) bool {
	if !a.Time.Equal(b.Time) || a.Tree == nil || b.Tree == nil || !a.Tree.Equal(*b.Tree) || a.Hostname != b.Hostname ||
		a.Username != b.Username || len(a.Paths) != len(b.Paths) || len(a.Tags) != len(b.Tags) {
		return false
	}
	return a.HasPaths(b.Paths) && a.HasTags(b.Tags)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
