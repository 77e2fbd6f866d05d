// Package workload generates Pangolin-like data directories and change
// scenarios for demos, tests and benchmarks.
package workload

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Paths of the generated files, relative to the directory given to Generate.
const (
	ConfigPath        = "config/config.yml"
	KeyPath           = "config/key"
	ACMEPath          = "config/letsencrypt/acme.json"
	TraefikConfigPath = "config/traefik/traefik_config.yml"
	TraefikDynPath    = "config/traefik/dynamic_config.yml"
	DBPath            = "config/db/db.sqlite"
	PangolinLogPath   = "config/logs/pangolin.log"
	AccessLogPath     = "config/logs/traefik-access.log"
)

// Share of Options.TargetSize given to the SQLite database; the logs get what
// is left once the database and the small configuration files are written.
const dbShare = 0.70

// pangolinLogShare is pangolin.log's part of the log budget; Traefik's access
// log takes the rest.
const pangolinLogShare = 1.0 / 3

// Options controls Generate.
type Options struct {
	// TargetSize is the approximate total size of the tree in bytes (e.g.
	// 50<<20, 1<<30). The SQLite database takes most of it (about 70%), logs
	// most of the rest.
	TargetSize int64
	Seed       int64 // deterministic content for a given seed
}

// Stats describes a generated tree.
type Stats struct {
	Files   int   // regular files under dir/config
	Bytes   int64 // their total size
	DBBytes int64 // size of config/db/db.sqlite
}

// Generate creates a Pangolin-like tree under dir (dir/config/...). Files that
// already exist there are replaced. The content is deterministic for a given
// Seed; the SQLite file may differ in layout details between SQLite versions.
//
// Files written: config/config.yml, config/key (0600),
// config/letsencrypt/acme.json (0600), config/traefik/traefik_config.yml,
// config/traefik/dynamic_config.yml, config/db/db.sqlite (rollback-journal
// mode, page size 4096, about 70% of TargetSize, most of it in the
// requestAuditLog table), config/logs/pangolin.log and
// config/logs/traefik-access.log (filling the rest of TargetSize).
func Generate(dir string, opts Options) (Stats, error) {
	if opts.TargetSize <= 0 {
		return Stats{}, errors.New("workload: TargetSize must be positive")
	}
	for _, d := range []string{"config/db", "config/letsencrypt", "config/traefik", "config/logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return Stats{}, err
		}
	}
	w := newWorld(opts.Seed)

	var small int64
	write := func(rel string, data []byte, mode os.FileMode) error {
		p := filepath.Join(dir, rel)
		// Remove first so the mode is applied even when the file existed.
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			return err
		}
		small += int64(len(data))
		return nil
	}
	acme, err := acmeJSON(w, newGen(opts.Seed, streamACME))
	if err != nil {
		return Stats{}, err
	}
	for _, f := range []struct {
		rel  string
		data []byte
		mode os.FileMode
	}{
		{ConfigPath, pangolinConfig(w), 0o644},
		{KeyPath, wireguardKey(newGen(opts.Seed, streamKey)), 0o600},
		{ACMEPath, acme, 0o600},
		{TraefikConfigPath, traefikConfig(w), 0o644},
		{TraefikDynPath, traefikDynamicConfig(w), 0o644},
	} {
		if err := write(f.rel, f.data, f.mode); err != nil {
			return Stats{}, fmt.Errorf("workload: %s: %w", f.rel, err)
		}
	}

	// The logs fill what the database and the small files leave of
	// TargetSize. The database lands within a page or so of dbTarget, so
	// the logs are sized from dbTarget and written while it is generated.
	dbTarget := int64(float64(opts.TargetSize) * dbShare)
	logBudget := max(opts.TargetSize-dbTarget-small, 8<<10) // always some log lines
	logErr := make(chan error, 1)
	go func() { logErr <- writeLogs(dir, w, opts.Seed, logBudget) }()

	_, dbErr := generateDB(filepath.Join(dir, DBPath), w, opts.Seed, dbTarget)
	if err := <-logErr; err != nil {
		return Stats{}, err
	}
	if dbErr != nil {
		return Stats{}, fmt.Errorf("workload: %s: %w", DBPath, dbErr)
	}

	// Flush the tree to disk now, so the write-back of a freshly generated
	// gigabyte does not land in whatever is measured next (the first fsync
	// of a scenario or a backup).
	if err := syncTree(dir); err != nil {
		return Stats{}, err
	}
	return treeStats(dir)
}

// syncTree fsyncs every regular file under dir/config.
func syncTree(dir string) error {
	return filepath.WalkDir(filepath.Join(dir, "config"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// writeLogs writes pangolin.log and traefik-access.log, n bytes in all.
func writeLogs(dir string, w *world, seed, n int64) error {
	pangolinBytes := int64(float64(n) * pangolinLogShare)
	logs := []struct {
		rel  string
		n    int64
		line lineFunc
	}{
		{PangolinLogPath, pangolinBytes, pangolinLine},
		{AccessLogPath, n - pangolinBytes, accessLine},
	}
	for i, l := range logs {
		g := newGen(seed, streamLogs+uint64(i))
		clock := newClock(w.start, w.span, l.n/160)
		if err := writeLines(filepath.Join(dir, l.rel), false, l.n, func(b []byte) []byte {
			return l.line(b, g, w, clock.next(g))
		}); err != nil {
			return fmt.Errorf("workload: %s: %w", l.rel, err)
		}
	}
	return nil
}

// treeStats counts the regular files under dir/config.
func treeStats(dir string) (Stats, error) {
	var st Stats
	err := configFiles(dir, func(p string, info fs.FileInfo) {
		st.Files++
		st.Bytes += info.Size()
		if p == filepath.Join(dir, DBPath) {
			st.DBBytes = info.Size()
		}
	})
	return st, err
}

// configFiles calls fn with each regular file under dir/config.
func configFiles(dir string, fn func(path string, info fs.FileInfo)) error {
	return filepath.WalkDir(filepath.Join(dir, "config"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fn(p, info)
		return nil
	})
}

// ChangeNothing is the null scenario: it touches nothing, so a backup taken
// after it should find no new data.
func ChangeNothing(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		return "", err
	}
	return "nothing changed (0 B)", nil
}
