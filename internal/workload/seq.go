package workload

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SeqWriter opens (creating) the SQLite database at path in WAL mode with a
// table seq(n INTEGER PRIMARY KEY, t TEXT) and inserts n = 1, 2, 3, ... (or
// continues after the largest n already there), each row in its own
// transaction, waiting interval between inserts (none if interval <= 0),
// until ctx is done. It returns the last committed n and a nil error when it
// stopped because ctx was done.
//
// The database uses synchronous=NORMAL, SQLite's usual setting with WAL:
// every commit is in the WAL file (and the OS page cache) when Exec returns,
// so a copy of the files taken at any point holds every row up to some
// committed n; only a power failure could lose the newest commits. The WAL is
// checkpointed automatically as it grows, like a real application's.
func SeqWriter(ctx context.Context, path string, interval time.Duration) (last int64, err error) {
	db, err := openDB(path, "journal_mode(WAL)", "synchronous(NORMAL)")
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS seq (n INTEGER PRIMARY KEY, t TEXT)`); err != nil {
		return 0, err
	}
	if err := db.QueryRow(`SELECT COALESCE(MAX(n), 0) FROM seq`).Scan(&last); err != nil {
		return 0, err
	}
	stmt, err := db.Prepare(`INSERT INTO seq (n, t) VALUES (?, ?)`)
	if err != nil {
		return last, err
	}
	defer stmt.Close()

	var timer *time.Timer
	for ctx.Err() == nil {
		n := last + 1
		// Executed without ctx: an interrupt could race the commit and
		// leave it unknown whether n was committed.
		if _, err := stmt.Exec(n, seqText(n)); err != nil {
			return last, fmt.Errorf("workload: insert seq %d: %w", n, err)
		}
		last = n
		if interval <= 0 {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(interval)
			defer timer.Stop()
		} else {
			timer.Reset(interval)
		}
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
	return last, nil
}

// seqText is the t column of row n: a timestamp and ~100 bytes of filler so
// the table spans many pages.
func seqText(n int64) string {
	x := uint64(n) * 0x9e3779b97f4a7c15
	return fmt.Sprintf("row %d committed at %s %016x%016x%016x%016x%016x%016x", n,
		time.Now().UTC().Format(time.RFC3339Nano), x, x^1, x^2, x^3, x^4, x^5)
}

// CheckSeq verifies a database written by SeqWriter. It copies path and its
// -wal and -shm files, when present, to a temporary directory first, so the
// check (which may replay the WAL) never modifies the original. It runs
// PRAGMA integrity_check, which must return "ok", and checks that seq holds
// exactly 1..max with no gap. It returns max (0 for an empty table).
func CheckSeq(path string) (max int64, err error) {
	tmp, err := os.MkdirTemp("", "haul-checkseq-*")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	dst := filepath.Join(tmp, "db.sqlite")
	if err := copyFile(path, dst); err != nil {
		return 0, err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := copyFile(path+suffix, dst+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}

	db, err := openDB(dst)
	if err != nil {
		return 0, fmt.Errorf("workload: open copy of %s: %w", path, err)
	}
	defer db.Close()
	if err := integrityCheck(db); err != nil {
		return 0, fmt.Errorf("workload: %s: %w", path, err)
	}
	var count, lo, hi int64
	if err := db.QueryRow(`SELECT COUNT(*), COALESCE(MIN(n), 0), COALESCE(MAX(n), 0) FROM seq`).Scan(&count, &lo, &hi); err != nil {
		return 0, fmt.Errorf("workload: %s: %w", path, err)
	}
	if count == hi && (count == 0 || lo == 1) {
		return hi, nil
	}
	// Report the first missing n.
	missing := int64(1)
	if lo == 1 {
		err = db.QueryRow(`SELECT a.n + 1 FROM seq a LEFT JOIN seq b ON b.n = a.n + 1
		                   WHERE b.n IS NULL AND a.n < ? ORDER BY a.n LIMIT 1`, hi).Scan(&missing)
		if err != nil {
			return 0, fmt.Errorf("workload: %s: %w", path, err)
		}
	}
	return 0, fmt.Errorf("workload: %s: seq has %d rows for 1..%d: n=%d is missing", path, count, hi, missing)
}

// integrityCheck runs PRAGMA integrity_check and fails unless it reports ok.
func integrityCheck(db *sql.DB) error {
	rows, err := db.Query(`PRAGMA integrity_check`)
	if err != nil {
		return fmt.Errorf("integrity_check: %w", err)
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return fmt.Errorf("integrity_check: %w", err)
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("integrity_check: %w", err)
	}
	if len(msgs) == 1 && msgs[0] == "ok" {
		return nil
	}
	if len(msgs) > 5 {
		msgs = append(msgs[:5], fmt.Sprintf("(%d more)", len(msgs)-5))
	}
	return fmt.Errorf("integrity_check failed: %s", strings.Join(msgs, "; "))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
