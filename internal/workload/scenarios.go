package workload

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The scenarios below are applied to a tree made by Generate between two
// backups. Each returns a one-line description that includes the bytes it
// rewrote or appended.

// ChangeRows makes the kind of change a running Pangolin makes to its
// database: n row updates at random rowids (about 80% in requestAuditLog, 20%
// in sessions, so they land on scattered pages) and n inserts of new audit
// rows (at the end of the table and its indexes), spread over up to five
// transactions. It then appends about 4 KiB of log lines per 100 changes
// (2n changes: n updates and n inserts), half to pangolin.log and half to
// traefik-access.log. The description gives the database pages that changed,
// measured by hashing every 4 KiB page before and after.
func ChangeRows(dir string, n int, seed int64) (string, error) {
	if n < 0 {
		return "", errors.New("workload: negative change count")
	}
	path := filepath.Join(dir, DBPath)
	before, err := pageHashes(path)
	if err != nil {
		return "", err
	}
	db, err := openDB(path)
	if err != nil {
		return "", err
	}
	defer db.Close()
	w, err := loadWorld(db)
	if err != nil {
		return "", err
	}
	var maxID, maxTS, maxSession int64
	if err := db.QueryRow(`SELECT COALESCE(MAX(id), 0), COALESCE(MAX(timestamp), 0) FROM requestAuditLog`).Scan(&maxID, &maxTS); err != nil {
		return "", err
	}
	if err := db.QueryRow(`SELECT COALESCE(MAX(rowid), 0) FROM sessions`).Scan(&maxSession); err != nil {
		return "", err
	}
	if maxTS == 0 {
		maxTS = time.Now().Unix()
	}

	g := newGen(seed, streamChange)
	clk := &clock{t: time.Unix(maxTS, 0).UTC(), step: 2 * time.Second}
	txs := min(max(n/100, 1), 5)
	var a auditRow
	for t := 0; t < txs && n > 0; t++ {
		tx, err := db.Begin()
		if err != nil {
			return "", err
		}
		updAudit, err1 := tx.Prepare(`UPDATE requestAuditLog SET action = ?, reason = ?, metadata = ? WHERE id = ?`)
		updSession, err2 := tx.Prepare(`UPDATE sessions SET expiresAt = ? WHERE rowid = ?`)
		ins, err3 := tx.Prepare(insertAudit)
		if err := errors.Join(err1, err2, err3); err != nil {
			tx.Rollback()
			return "", err
		}
		for i := n * t / txs; i < n*(t+1)/txs; i++ {
			ts := clk.next(g)
			a.fill(g, w, ts.Unix())
			switch {
			case maxSession > 0 && (maxID == 0 || g.chance(20)):
				_, err = updSession.Exec(ts.Add(30*24*time.Hour).UnixMilli(), 1+g.int64n(maxSession))
			case maxID > 0:
				_, err = updAudit.Exec(a.args[2], a.args[3], a.args[11], 1+g.int64n(maxID))
			}
			if err == nil {
				_, err = ins.Exec(a.args[:]...)
			}
			if err != nil {
				tx.Rollback()
				return "", err
			}
		}
		if err := tx.Commit(); err != nil {
			return "", err
		}
	}
	if err := db.Close(); err != nil {
		return "", err
	}
	after, err := pageHashes(path)
	if err != nil {
		return "", err
	}
	changed := changedPages(before, after)

	logBytes := int64(2*n) * 4096 / 100
	half := logBytes / 2
	if err := appendLines(dir, w, g, clk, PangolinLogPath, half, pangolinLine); err != nil {
		return "", err
	}
	if err := appendLines(dir, w, g, clk, AccessLogPath, logBytes-half, accessLine); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d row updates + %d inserts in %d transactions: %d of %d db pages rewritten or added (%d B, size %+d B); logs +%d B",
		n, n, txs, changed, len(after), int64(changed)*pageSize, int64(len(after)-len(before))*pageSize, logBytes), nil
}

func appendLines(dir string, w *world, g *gen, clk *clock, rel string, n int64, line lineFunc) error {
	if n <= 0 {
		return nil
	}
	return writeLines(filepath.Join(dir, rel), true, n, func(b []byte) []byte {
		return line(b, g, w, clk.next(g))
	})
}

// RenewACME rewrites config/letsencrypt/acme.json entirely, as Traefik does
// when it renews certificates: every certificate gets a new chain and key
// (same domains, same structure), and the file is replaced through a
// temporary file and a rename, keeping mode 0600.
func RenewACME(dir string, seed int64) (string, error) {
	path := filepath.Join(dir, ACMEPath)
	old, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var store map[string]*acmeResolver
	if err := json.Unmarshal(old, &store); err != nil {
		return "", fmt.Errorf("workload: %s: %w", ACMEPath, err)
	}
	g := newGen(seed, streamRenew)
	renewed := 0
	for _, name := range slices.Sorted(maps.Keys(store)) {
		if store[name] == nil {
			continue
		}
		for i := range store[name].Certificates {
			renewCert(&store[name].Certificates[i], g)
			renewed++
		}
	}
	data, err := marshalACME(store)
	if err != nil {
		return "", err
	}
	if err := replaceFile(path, data, 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf("acme.json rewritten via rename: %d certificates renewed, %d B written (was %d B)",
		renewed, len(data), len(old)), nil
}

// replaceFile writes data to a temporary file next to path, syncs it and
// renames it over path.
func replaceFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// RewriteFraction overwrites fraction (0..1, e.g. 0.10) of the largest file
// under dir/config in place: that many distinct 4 KiB pages at random
// offsets get random bytes, and the size does not change (a partial last
// page keeps its length).
//
// It writes raw pages even when the largest file is the SQLite database (the
// usual case), which leaves the database corrupt: this scenario is for
// measuring how much a backup re-reads and re-stores when scattered pages of
// a large file change, not for anything that opens the database afterwards.
// Regenerate the tree before running database scenarios again.
func RewriteFraction(dir string, fraction float64, seed int64) (string, error) {
	if !(fraction >= 0 && fraction <= 1) {
		return "", fmt.Errorf("workload: fraction %v outside [0, 1]", fraction)
	}
	var largest string
	var size int64 = -1
	err := configFiles(dir, func(p string, info fs.FileInfo) {
		if info.Size() > size {
			largest, size = p, info.Size()
		}
	})
	if err != nil {
		return "", err
	}
	if largest == "" {
		return "", fmt.Errorf("workload: no files under %s", filepath.Join(dir, "config"))
	}
	rel, _ := filepath.Rel(dir, largest)
	pages := int((size + pageSize - 1) / pageSize)
	k := int(math.Round(fraction * float64(pages)))
	if k == 0 && fraction > 0 && pages > 0 {
		k = 1
	}
	g := newGen(seed, streamRewrite)
	picked := g.r.Perm(pages)[:k]
	slices.Sort(picked)

	f, err := os.OpenFile(largest, os.O_WRONLY, 0)
	if err != nil {
		return "", err
	}
	buf := make([]byte, pageSize)
	var written int64
	for _, p := range picked {
		off := int64(p) * pageSize
		b := buf[:min(pageSize, size-off)]
		g.c.Read(b)
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return "", err
		}
		written += int64(len(b))
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	note := ""
	if rel == filepath.FromSlash(DBPath) {
		note = " (raw page writes: the database is now corrupt)"
	}
	return fmt.Sprintf("rewrote %d of %d pages of %s in place (%d B, %.1f%%)%s",
		k, pages, filepath.ToSlash(rel), written, 100*float64(written)/float64(max(size, 1)), note), nil
}

// AppendLog appends exactly n bytes of log lines to config/logs/pangolin.log.
func AppendLog(dir string, n int64) error {
	if n < 0 {
		return errors.New("workload: negative append size")
	}
	path := filepath.Join(dir, PangolinLogPath)
	var seed int64
	if info, err := os.Stat(path); err == nil {
		seed = info.Size()
	}
	g := newGen(seed, streamAppend)
	w := logWorld(dir)
	clk := &clock{t: time.Now().UTC(), step: 200 * time.Millisecond}
	return appendLines(dir, w, g, clk, PangolinLogPath, n, pangolinLine)
}

// logWorld returns the entities log lines refer to: those of the tree's
// database, or made-up ones if it cannot be read (e.g. after
// RewriteFraction).
func logWorld(dir string) *world {
	path := filepath.Join(dir, DBPath)
	if _, err := os.Stat(path); err == nil {
		if db, err := openDB(path, "query_only(1)"); err == nil {
			w, err := loadWorld(db)
			db.Close()
			if err == nil {
				return w
			}
		}
	}
	return newWorld(0)
}

var hashSeed = maphash.MakeSeed()

// pageHashes hashes every 4 KiB page of the file at path.
func pageHashes(path string) ([]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	page := make([]byte, pageSize)
	var hs []uint64
	for {
		n, err := io.ReadFull(r, page)
		if n > 0 {
			hs = append(hs, maphash.Bytes(hashSeed, page[:n]))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return hs, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// changedPages counts the pages of after that differ from before or were
// added.
func changedPages(before, after []uint64) int {
	n := 0
	for i, h := range after {
		if i >= len(before) || before[i] != h {
			n++
		}
	}
	return n
}
