package workload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// hashTree returns the SHA-256 of every regular file under dir, by path
// relative to dir.
func hashTree(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	m := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m[filepath.ToSlash(rel)] = sha256.Sum256(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// changedFiles lists the files that differ between two hashTree results,
// including added and removed ones.
func changedFiles(a, b map[string][32]byte) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			return false
		}
	}
	return true
}

func size(t *testing.T, p string) int64 {
	t.Helper()
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

// checkDB checks integrity and returns the row count of requestAuditLog.
func checkDB(t *testing.T, path string) int64 {
	t.Helper()
	db, err := openDB(path, "query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := integrityCheck(db); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.QueryRow(`SELECT COUNT(*) FROM requestAuditLog`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	const target = 8 << 20
	st, err := Generate(dir, Options{TargetSize: target, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", st)
	if d := math.Abs(float64(st.Bytes-target)) / target; d > 0.30 {
		t.Errorf("total %d bytes is %.0f%% off the %d target", st.Bytes, 100*d, target)
	}
	if share := float64(st.DBBytes) / float64(st.Bytes); share < 0.6 || share > 0.8 {
		t.Errorf("database is %.0f%% of the tree, want about 70%%", 100*share)
	}

	want := map[string]os.FileMode{
		ConfigPath: 0o644, KeyPath: 0o600, ACMEPath: 0o600, TraefikConfigPath: 0o644,
		TraefikDynPath: 0o644, DBPath: 0o644, PangolinLogPath: 0o644, AccessLogPath: 0o644,
	}
	hashes := hashTree(t, dir)
	if len(hashes) != len(want) || st.Files != len(want) {
		t.Errorf("files = %d (stats %d), want %d: %v", len(hashes), st.Files, len(want), hashes)
	}
	var total int64
	for rel, mode := range want {
		info, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size() == 0 {
			t.Errorf("%s is empty", rel)
		}
		total += info.Size()
		// Only the secret files are checked strictly; the others may be
		// narrowed by the umask.
		if got := info.Mode().Perm(); (mode == 0o600 && got != mode) || got&^mode != 0 {
			t.Errorf("%s mode = %v, want %v", rel, got, mode)
		}
	}
	if total != st.Bytes || size(t, filepath.Join(dir, DBPath)) != st.DBBytes {
		t.Errorf("stats %+v disagree with the files (total %d)", st, total)
	}

	key, _ := os.ReadFile(filepath.Join(dir, KeyPath))
	if raw, err := base64.StdEncoding.DecodeString(string(key)); err != nil || len(raw) != 32 {
		t.Errorf("key %q is not base64 of 32 bytes (%v)", key, err)
	}

	cfg, _ := os.ReadFile(filepath.Join(dir, ConfigPath))
	for _, section := range []string{"\napp:\n", "\ndomains:\n", "\nserver:\n", "\ngerbil:\n", "\ntraefik:\n"} {
		if !bytes.Contains(cfg, []byte(section)) {
			t.Errorf("config.yml has no %q section", strings.TrimSpace(section))
		}
	}
	for _, rel := range []string{TraefikConfigPath, TraefikDynPath} {
		data, _ := os.ReadFile(filepath.Join(dir, rel))
		if !bytes.Contains(data, []byte("letsencrypt")) {
			t.Errorf("%s does not mention the letsencrypt resolver", rel)
		}
	}

	acme, _ := os.ReadFile(filepath.Join(dir, ACMEPath))
	var store map[string]*acmeResolver
	if err := json.Unmarshal(acme, &store); err != nil {
		t.Fatal(err)
	}
	le := store["letsencrypt"]
	if len(store) != 1 || le == nil || le.Account == nil || le.Account.Email == "" || le.Account.PrivateKey == "" {
		t.Fatalf("acme.json has no letsencrypt resolver with an account: %.300s", acme)
	}
	if len(le.Certificates) != 5 {
		t.Errorf("acme.json has %d certificates, want 5", len(le.Certificates))
	}
	for _, c := range le.Certificates {
		for name, blob := range map[string]string{"certificate": c.Certificate, "key": c.Key} {
			if len(blob) < 3<<10 || len(blob) > 5<<10 {
				t.Errorf("%s %s is %d bytes, want 3-5 KiB", c.Domain.Main, name, len(blob))
			}
			pem, err := base64.StdEncoding.DecodeString(blob)
			if err != nil || !bytes.HasPrefix(pem, []byte("-----BEGIN ")) {
				t.Errorf("%s %s is not base64 of PEM (%v)", c.Domain.Main, name, err)
			}
		}
	}

	for _, rel := range []string{PangolinLogPath, AccessLogPath} {
		data, _ := os.ReadFile(filepath.Join(dir, rel))
		if !bytes.HasSuffix(data, []byte("\n")) || bytes.Count(data, []byte("\n")) < 100 {
			t.Errorf("%s is not a log of whole lines", rel)
		}
	}

	dbPath := filepath.Join(dir, DBPath)
	for _, suffix := range []string{"-journal", "-wal", "-shm"} {
		if _, err := os.Stat(dbPath + suffix); err == nil {
			t.Errorf("%s%s left behind", DBPath, suffix)
		}
	}
	if n := checkDB(t, dbPath); n < 1000 {
		t.Errorf("requestAuditLog has %d rows", n)
	}
	db, err := openDB(dbPath, "query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var journal string
	var pageSz int
	db.QueryRow(`PRAGMA journal_mode`).Scan(&journal)
	db.QueryRow(`PRAGMA page_size`).Scan(&pageSz)
	if journal != "delete" || pageSz != 4096 {
		t.Errorf("journal_mode %q page_size %d, want delete and 4096", journal, pageSz)
	}
	for _, table := range Tables {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM "` + table + `"`).Scan(&n); err != nil || n == 0 {
			t.Errorf("table %s: %d rows, %v", table, n, err)
		}
	}
	var indexes int
	db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requestAuditLog'`).Scan(&indexes)
	if indexes < 2 {
		t.Errorf("requestAuditLog has %d indexes", indexes)
	}
}

func TestGenerateDeterministic(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []struct {
		dir  string
		seed int64
	}{{a, 42}, {b, 42}, {c, 43}} {
		if _, err := Generate(d.dir, Options{TargetSize: 2 << 20, Seed: d.seed}); err != nil {
			t.Fatal(err)
		}
	}
	ha, hb, hc := hashTree(t, a), hashTree(t, b), hashTree(t, c)
	// The database is compared by content: its bytes may depend on the
	// SQLite version.
	if ch := changedFiles(ha, hb); len(ch) > 0 && !sameSet(ch, DBPath) {
		t.Errorf("same seed, different files: %v", ch)
	}
	if dumpAudit(t, a) != dumpAudit(t, b) {
		t.Error("same seed, different requestAuditLog content")
	}
	if ch := changedFiles(ha, hc); len(ch) != len(ha) {
		t.Errorf("different seeds, but only %v differ", ch)
	}
}

func dumpAudit(t *testing.T, dir string) [32]byte {
	t.Helper()
	db, err := openDB(filepath.Join(dir, DBPath), "query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, timestamp, orgId, headers, metadata, originalRequestURL FROM requestAuditLog ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	h := sha256.New()
	for rows.Next() {
		var id, ts int64
		var org, headers, meta, url string
		if err := rows.Scan(&id, &ts, &org, &headers, &meta, &url); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(h, id, ts, org, headers, meta, url)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

func TestScenarios(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(dir, Options{TargetSize: 4 << 20, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	p := func(rel string) string { return filepath.Join(dir, rel) }
	prefixUnchanged := func(rel string, old []byte) {
		t.Helper()
		now, _ := os.ReadFile(p(rel))
		if !bytes.HasPrefix(now, old) {
			t.Errorf("%s was not only appended to", rel)
		}
	}

	t.Run("ChangeNothing", func(t *testing.T) {
		before := hashTree(t, dir)
		desc, err := ChangeNothing(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(desc)
		if ch := changedFiles(before, hashTree(t, dir)); len(ch) > 0 {
			t.Errorf("changed %v", ch)
		}
	})

	t.Run("ChangeRows", func(t *testing.T) {
		before := hashTree(t, dir)
		rows := checkDB(t, p(DBPath))
		oldPangolin, _ := os.ReadFile(p(PangolinLogPath))
		oldAccess, _ := os.ReadFile(p(AccessLogPath))
		const n = 200
		desc, err := ChangeRows(dir, n, 7)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(desc)
		if ch := changedFiles(before, hashTree(t, dir)); !sameSet(ch, DBPath, PangolinLogPath, AccessLogPath) {
			t.Errorf("changed %v, want the database and the logs", ch)
		}
		if got := checkDB(t, p(DBPath)); got != rows+n {
			t.Errorf("requestAuditLog has %d rows, want %d", got, rows+n)
		}
		grown := size(t, p(PangolinLogPath)) + size(t, p(AccessLogPath)) - int64(len(oldPangolin)+len(oldAccess))
		if want := int64(2*n) * 4096 / 100; grown != want {
			t.Errorf("logs grew by %d bytes, want %d", grown, want)
		}
		prefixUnchanged(PangolinLogPath, oldPangolin)
		prefixUnchanged(AccessLogPath, oldAccess)
		if !strings.Contains(desc, "200 row updates") {
			t.Errorf("description %q", desc)
		}
	})

	t.Run("RenewACME", func(t *testing.T) {
		before := hashTree(t, dir)
		old, _ := os.ReadFile(p(ACMEPath))
		desc, err := RenewACME(dir, 9)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(desc)
		if ch := changedFiles(before, hashTree(t, dir)); !sameSet(ch, ACMEPath) {
			t.Errorf("changed %v, want only acme.json", ch)
		}
		info, err := os.Stat(p(ACMEPath))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("acme.json mode %v (%v), want 0600", info.Mode(), err)
		}
		var a, b map[string]*acmeResolver
		now, _ := os.ReadFile(p(ACMEPath))
		if err := json.Unmarshal(old, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(now, &b); err != nil {
			t.Fatal(err)
		}
		oa, ob := a["letsencrypt"], b["letsencrypt"]
		if len(oa.Certificates) != len(ob.Certificates) || !reflect.DeepEqual(oa.Account, ob.Account) {
			t.Fatalf("structure changed")
		}
		for i := range oa.Certificates {
			x, y := oa.Certificates[i], ob.Certificates[i]
			if x.Domain.Main != y.Domain.Main || x.Certificate == y.Certificate || x.Key == y.Key {
				t.Errorf("certificate %d: %s -> %s not renewed", i, x.Domain.Main, y.Domain.Main)
			}
		}
		if leftovers, _ := filepath.Glob(p("config/letsencrypt/.*tmp*")); len(leftovers) > 0 {
			t.Errorf("temporary files left: %v", leftovers)
		}
	})

	t.Run("AppendLog", func(t *testing.T) {
		before := hashTree(t, dir)
		old, _ := os.ReadFile(p(PangolinLogPath))
		if err := AppendLog(dir, 10000); err != nil {
			t.Fatal(err)
		}
		if ch := changedFiles(before, hashTree(t, dir)); !sameSet(ch, PangolinLogPath) {
			t.Errorf("changed %v, want only pangolin.log", ch)
		}
		now, _ := os.ReadFile(p(PangolinLogPath))
		if len(now)-len(old) != 10000 || !bytes.HasSuffix(now, []byte("\n")) {
			t.Errorf("pangolin.log grew by %d bytes, want 10000 of whole lines", len(now)-len(old))
		}
		prefixUnchanged(PangolinLogPath, old)
	})

	// Last: it corrupts the database.
	t.Run("RewriteFraction", func(t *testing.T) {
		before := hashTree(t, dir)
		dbSize := size(t, p(DBPath))
		oldPages, err := pageHashes(p(DBPath))
		if err != nil {
			t.Fatal(err)
		}
		desc, err := RewriteFraction(dir, 0.10, 5)
		if err != nil {
			t.Fatal(err)
		}
		t.Log(desc)
		if ch := changedFiles(before, hashTree(t, dir)); !sameSet(ch, DBPath) {
			t.Errorf("changed %v, want only the database (the largest file)", ch)
		}
		if got := size(t, p(DBPath)); got != dbSize {
			t.Errorf("size changed %d -> %d", dbSize, got)
		}
		newPages, _ := pageHashes(p(DBPath))
		want := int(math.Round(0.10 * float64(len(oldPages))))
		if got := changedPages(oldPages, newPages); got != want {
			t.Errorf("%d of %d pages changed, want %d", got, len(oldPages), want)
		}
		// Scenarios that only need the logs still work on the corrupt tree.
		if err := AppendLog(dir, 500); err != nil {
			t.Error(err)
		}
	})
}

func TestSeqWriterCheckSeq(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seq.db")
	run := func(d, interval time.Duration) int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		last, err := SeqWriter(ctx, path, interval)
		if err != nil {
			t.Fatal(err)
		}
		return last
	}
	last := run(200*time.Millisecond, 0)
	if last < 3 {
		t.Fatalf("only %d rows in 200ms", last)
	}
	if max, err := CheckSeq(path); err != nil || max != last {
		t.Fatalf("CheckSeq = %d, %v; want %d", max, err, last)
	}
	// A second writer continues the sequence.
	last2 := run(50*time.Millisecond, 5*time.Millisecond)
	if last2 <= last {
		t.Fatalf("resumed writer stopped at %d, first one at %d", last2, last)
	}
	if max, err := CheckSeq(path); err != nil || max != last2 {
		t.Fatalf("CheckSeq = %d, %v; want %d", max, err, last2)
	}
	t.Logf("%d rows in 200ms, %d after 50ms more at 5ms intervals", last, last2)

	t.Run("WAL", func(t *testing.T) {
		// Rows committed to a WAL that is not checkpointed, by a
		// connection still open: CheckSeq must see them, reading copies.
		db, err := openDB(path, "wal_autocheckpoint(0)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for n := last2 + 1; n <= last2+50; n++ {
			if _, err := db.Exec(`INSERT INTO seq (n, t) VALUES (?, ?)`, n, seqText(n)); err != nil {
				t.Fatal(err)
			}
		}
		if size(t, path+"-wal") == 0 {
			t.Fatal("no WAL")
		}
		before := hashTree(t, dir)
		if max, err := CheckSeq(path); err != nil || max != last2+50 {
			t.Errorf("CheckSeq = %d, %v; want %d", max, err, last2+50)
		}
		if ch := changedFiles(before, hashTree(t, dir)); len(ch) > 0 {
			t.Errorf("CheckSeq modified %v", ch)
		}
	})

	t.Run("Gap", func(t *testing.T) {
		gap := filepath.Join(t.TempDir(), "gap.db")
		if err := copyFile(path, gap); err != nil {
			t.Fatal(err)
		}
		db, err := openDB(gap)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`DELETE FROM seq WHERE n = ?`, last/2); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err = CheckSeq(gap)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("n=%d is missing", last/2)) {
			t.Errorf("CheckSeq with row %d deleted: %v", last/2, err)
		}
	})

	t.Run("Corrupt", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.db")
		if err := copyFile(path, bad); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(bad, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		pages := size(t, bad) / pageSize
		junk := bytes.Repeat([]byte("corrupt!"), pageSize/8)
		if _, err := f.WriteAt(junk, pages/2*pageSize); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := CheckSeq(bad); err == nil {
			t.Errorf("CheckSeq accepted a database with page %d of %d overwritten", pages/2, pages)
		} else {
			t.Log(err)
		}
		if _, err := CheckSeq(path); err != nil {
			t.Errorf("original: %v", err)
		}
	})
}

// TestGenerateLarge measures Generate at 1 GiB and a ChangeRows(500) on it.
// Run with HAUL_WORKLOAD_LARGE=1 (needs ~1 GiB of temporary disk).
func TestGenerateLarge(t *testing.T) {
	if os.Getenv("HAUL_WORKLOAD_LARGE") == "" {
		t.Skip("set HAUL_WORKLOAD_LARGE=1 to generate a 1 GiB tree")
	}
	dir := t.TempDir()
	start := time.Now()
	st, err := Generate(dir, Options{TargetSize: 1 << 30, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Generate 1 GiB: %v, %+v", time.Since(start), st)
	start = time.Now()
	desc, err := ChangeRows(dir, 500, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ChangeRows(500): %v, %s", time.Since(start), desc)
	start = time.Now()
	desc, err = RewriteFraction(dir, 0.10, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RewriteFraction(0.10): %v, %s", time.Since(start), desc)
}

func BenchmarkGenerate64MiB(b *testing.B) {
	dir := b.TempDir()
	b.SetBytes(64 << 20)
	for i := 0; i < b.N; i++ {
		if _, err := Generate(dir, Options{TargetSize: 64 << 20, Seed: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}
