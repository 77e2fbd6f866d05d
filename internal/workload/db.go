package workload

import (
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// pageSize is SQLite's page size in the generated database and the unit of
// the page-level change measurements.
const pageSize = 4096

// openDB opens the SQLite database at path with a single connection, so
// PRAGMAs and transactions apply to every statement. pragmas are PRAGMA
// bodies such as "journal_mode(WAL)", run on open.
func openDB(path string, pragmas ...string) (*sql.DB, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("workload: unsupported '?' in database path %q", path)
	}
	q := url.Values{"_pragma": append([]string{"busy_timeout(10000)"}, pragmas...)}
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Pangolin-like schema: the tables the brief lists, with the columns and
// indexes Pangolin's Drizzle schema gives them (abridged).
const schema = `
CREATE TABLE orgs (
  orgId TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  subnet TEXT,
  createdAt TEXT,
  requireTwoFactor INTEGER,
  maxSessionLengthHours INTEGER,
  passwordExpiryDays INTEGER,
  settingsLogRetentionDaysRequest INTEGER DEFAULT 7 NOT NULL,
  settingsLogRetentionDaysAccess INTEGER DEFAULT 0 NOT NULL,
  settingsLogRetentionDaysAction INTEGER DEFAULT 0 NOT NULL
);
CREATE TABLE users (
  id TEXT PRIMARY KEY NOT NULL,
  email TEXT,
  username TEXT NOT NULL,
  name TEXT,
  type TEXT NOT NULL,
  idpId INTEGER,
  passwordHash TEXT,
  twoFactorEnabled INTEGER DEFAULT 0 NOT NULL,
  twoFactorSetupRequested INTEGER DEFAULT 0,
  twoFactorSecret TEXT,
  emailVerified INTEGER DEFAULT 0 NOT NULL,
  dateCreated TEXT NOT NULL,
  termsAcceptedTimestamp TEXT,
  termsVersion TEXT,
  serverAdmin INTEGER DEFAULT 0 NOT NULL,
  lastPasswordChange INTEGER
);
CREATE UNIQUE INDEX users_email_idx ON users (email);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY NOT NULL,
  userId TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  expiresAt INTEGER NOT NULL,
  issuedAt INTEGER
);
CREATE INDEX idx_sessions_userId ON sessions (userId);
CREATE TABLE roles (
  roleId INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  orgId TEXT NOT NULL REFERENCES orgs(orgId) ON DELETE CASCADE,
  isAdmin INTEGER,
  name TEXT NOT NULL,
  description TEXT
);
CREATE TABLE userOrgs (
  userId TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  orgId TEXT NOT NULL REFERENCES orgs(orgId) ON DELETE CASCADE,
  roleId INTEGER NOT NULL REFERENCES roles(roleId),
  isOwner INTEGER DEFAULT 0 NOT NULL,
  autoProvisioned INTEGER DEFAULT 0
);
CREATE INDEX idx_userOrgs_userId ON userOrgs (userId);
CREATE INDEX idx_userOrgs_orgId ON userOrgs (orgId);
CREATE TABLE sites (
  siteId INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  orgId TEXT NOT NULL REFERENCES orgs(orgId) ON DELETE CASCADE,
  niceId TEXT NOT NULL,
  exitNode INTEGER,
  name TEXT NOT NULL,
  pubKey TEXT,
  subnet TEXT,
  bytesIn INTEGER DEFAULT 0,
  bytesOut INTEGER DEFAULT 0,
  lastBandwidthUpdate TEXT,
  type TEXT NOT NULL,
  online INTEGER DEFAULT 0 NOT NULL,
  address TEXT,
  endpoint TEXT,
  publicKey TEXT,
  lastHolePunch INTEGER,
  listenPort INTEGER,
  dockerSocketEnabled INTEGER DEFAULT 1 NOT NULL
);
CREATE INDEX idx_sites_orgId ON sites (orgId);
CREATE TABLE resources (
  resourceId INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  resourceGuid TEXT(36) NOT NULL,
  orgId TEXT NOT NULL REFERENCES orgs(orgId) ON DELETE CASCADE,
  niceId TEXT NOT NULL,
  name TEXT NOT NULL,
  subdomain TEXT,
  fullDomain TEXT,
  domainId TEXT,
  ssl INTEGER DEFAULT 0 NOT NULL,
  blockAccess INTEGER DEFAULT 0 NOT NULL,
  sso INTEGER DEFAULT 1 NOT NULL,
  http INTEGER DEFAULT 1 NOT NULL,
  protocol TEXT NOT NULL,
  proxyPort INTEGER,
  emailWhitelistEnabled INTEGER DEFAULT 0 NOT NULL,
  applyRules INTEGER DEFAULT 0 NOT NULL,
  enabled INTEGER DEFAULT 1 NOT NULL,
  stickySession INTEGER DEFAULT 0 NOT NULL,
  tlsServerName TEXT,
  setHostHeader TEXT,
  enableProxy INTEGER DEFAULT 1,
  headers TEXT
);
CREATE UNIQUE INDEX resources_resourceGuid_unique ON resources (resourceGuid);
CREATE INDEX idx_resources_orgId ON resources (orgId);
CREATE TABLE targets (
  targetId INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  resourceId INTEGER NOT NULL REFERENCES resources(resourceId) ON DELETE CASCADE,
  siteId INTEGER NOT NULL REFERENCES sites(siteId) ON DELETE CASCADE,
  ip TEXT NOT NULL,
  method TEXT,
  port INTEGER NOT NULL,
  internalPort INTEGER,
  enabled INTEGER DEFAULT 1 NOT NULL,
  path TEXT,
  pathMatchType TEXT,
  rewritePath TEXT,
  rewritePathType TEXT,
  priority INTEGER DEFAULT 100 NOT NULL
);
CREATE INDEX idx_targets_resourceId ON targets (resourceId);
CREATE TABLE resourceRules (
  ruleId INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  resourceId INTEGER NOT NULL REFERENCES resources(resourceId) ON DELETE CASCADE,
  enabled INTEGER DEFAULT 1 NOT NULL,
  priority INTEGER NOT NULL,
  action TEXT NOT NULL,
  "match" TEXT NOT NULL,
  value TEXT NOT NULL
);
CREATE INDEX idx_resourceRules_resourceId ON resourceRules (resourceId);
CREATE TABLE requestAuditLog (
  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  timestamp INTEGER NOT NULL,
  orgId TEXT REFERENCES orgs(orgId) ON DELETE CASCADE,
  action INTEGER NOT NULL,
  reason INTEGER NOT NULL,
  actorType TEXT,
  actor TEXT,
  actorId TEXT,
  resourceId INTEGER,
  ip TEXT,
  location TEXT,
  userAgent TEXT,
  metadata TEXT,
  headers TEXT,
  query TEXT,
  originalRequestURL TEXT,
  scheme TEXT,
  host TEXT,
  path TEXT,
  method TEXT,
  tls INTEGER
);
CREATE INDEX idx_requestAuditLog_timestamp ON requestAuditLog (timestamp);
CREATE INDEX idx_requestAuditLog_org_timestamp ON requestAuditLog (orgId, timestamp);
`

// Tables lists the tables of the generated database.
var Tables = []string{"orgs", "users", "sessions", "roles", "userOrgs", "sites", "resources", "targets", "resourceRules", "requestAuditLog"}

const insertAudit = `INSERT INTO requestAuditLog (timestamp, orgId, action, reason, actorType, actor, actorId,
  resourceId, ip, location, userAgent, metadata, headers, query, originalRequestURL, scheme, host, path, method, tls)
  VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`

// removeDB removes a database and its journal, WAL and shared-memory files.
func removeDB(path string) error {
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// generateDB creates the database at path and fills requestAuditLog until the
// file reaches about target bytes. It returns the final file size.
func generateDB(path string, w *world, seed int64, target int64) (int64, error) {
	if err := removeDB(path); err != nil {
		return 0, err
	}
	// No journal and no syncs while generating: a crash leaves a file that
	// Generate would recreate anyway.
	db, err := openDB(path, "page_size(4096)", "journal_mode(OFF)", "synchronous(OFF)", "cache_size(-65536)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	g := newGen(seed, streamDB)

	if _, err := db.Exec(schema); err != nil {
		return 0, fmt.Errorf("schema: %w", err)
	}
	nSessions := int(min(max(target/4000, 100), 5000))
	if err := fillSmallTables(db, w, g, nSessions); err != nil {
		return 0, err
	}

	pageCount := func() (int64, error) {
		var n int64
		err := db.QueryRow("PRAGMA page_count").Scan(&n)
		return n * pageSize, err
	}
	base, err := pageCount()
	if err != nil {
		return 0, err
	}
	stmt, err := db.Prepare(insertAudit)
	if err != nil {
		return 0, err
	}
	defer stmt.Close()

	// Batches of rows, each in one transaction; after each, the bytes per
	// row seen so far size the next batch so the file lands on target.
	const firstBatch = 2000
	estRows := max(target/1300, 1)
	next, stop := auditRows(g, w, newClock(w.start, w.span, estRows))
	defer stop()
	size, rows := base, int64(0)
	for {
		batch := int64(firstBatch)
		if rows > 0 {
			perRow := float64(size-base) / float64(rows)
			batch = int64(float64(target-size) / perRow)
			batch = min(batch, max(estRows/8, firstBatch))
		}
		if batch <= 0 || size >= target {
			break
		}
		tx, err := db.Begin()
		if err != nil {
			return 0, err
		}
		ts := tx.Stmt(stmt)
		for i := int64(0); i < batch; i++ {
			if _, err := ts.Exec(next()...); err != nil {
				tx.Rollback()
				return 0, fmt.Errorf("insert audit row: %w", err)
			}
		}
		if err := tx.Commit(); err != nil {
			return 0, err
		}
		rows += batch
		if size, err = pageCount(); err != nil {
			return 0, err
		}
	}
	if _, err := db.Exec("PRAGMA journal_mode=DELETE"); err != nil {
		return 0, err
	}
	if err := db.Close(); err != nil {
		return 0, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return info.Size(), nil
}

// auditRows makes audit rows in a goroutine, so that building them overlaps
// with SQLite inserting the previous ones. next returns the values of the next
// row (valid until the following call); the sequence is the same as filling
// rows one by one from g. stop ends the goroutine; g must not be used until
// then.
func auditRows(g *gen, w *world, clk *clock) (next func() []any, stop func()) {
	const batchRows = 256
	ch := make(chan [][20]any, 16)
	done := make(chan struct{})
	go func() {
		var a auditRow
		for {
			batch := make([][20]any, batchRows)
			for i := range batch {
				a.fill(g, w, clk.next(g).Unix())
				batch[i] = a.args
			}
			select {
			case ch <- batch:
			case <-done:
				return
			}
		}
	}()
	var cur [][20]any
	next = func() []any {
		if len(cur) == 0 {
			cur = <-ch
		}
		row := cur[0][:]
		cur = cur[1:]
		return row
	}
	return next, func() { close(done) }
}

func fillSmallTables(db *sql.DB, w *world, g *gen, nSessions int) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	exec := func(q string, args ...any) {
		if err == nil {
			_, err = tx.Exec(q, args...)
		}
	}
	created := w.start.Add(-200 * 24 * time.Hour)
	day := func(d int) string { return created.Add(time.Duration(d) * 24 * time.Hour).Format(time.RFC3339) }
	roleOf := map[string]int{}
	for i, o := range w.orgs {
		exec(`INSERT INTO orgs (orgId, name, subnet, createdAt, requireTwoFactor) VALUES (?,?,?,?,?)`,
			o.id, o.name, o.subnet, day(i), i == 0)
		for j, r := range []string{"Admin", "Member", "Viewer", "Guests"} {
			exec(`INSERT INTO roles (orgId, isAdmin, name, description) VALUES (?,?,?,?)`,
				o.id, j == 0, r, r+" role for "+o.name)
		}
		roleOf[o.id] = i*4 + 1
	}
	for i, u := range w.users {
		pw := "$argon2id$v=19$m=19456,t=2,p=1$" + g.b64(16)[:22] + "$" + g.b64(32)[:43]
		exec(`INSERT INTO users (id, email, username, name, type, passwordHash, twoFactorEnabled, emailVerified, dateCreated, serverAdmin, lastPasswordChange)
		      VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
			u.id, u.email, u.email, u.name, "internal", pw, g.chance(30), true, day(i+3), i == 0, created.Unix()*1000)
		for j, o := range w.orgs {
			if i%3 == j || i == 0 {
				exec(`INSERT INTO userOrgs (userId, orgId, roleId, isOwner) VALUES (?,?,?,?)`,
					u.id, o.id, roleOf[o.id]+min(i, 1+g.intn(3)), i == 0)
			}
		}
	}
	for i := 0; i < nSessions; i++ {
		u := w.users[g.intn(len(w.users))]
		issued := w.start.Add(time.Duration(g.int64n(int64(w.span)))).UnixMilli()
		exec(`INSERT INTO sessions (id, userId, expiresAt, issuedAt) VALUES (?,?,?,?)`,
			g.hex(64), u.id, issued+30*24*3600*1000, issued)
	}
	for _, s := range w.sites {
		exec(`INSERT INTO sites (siteId, orgId, niceId, exitNode, name, pubKey, subnet, bytesIn, bytesOut, lastBandwidthUpdate, type, online, address, endpoint, publicKey, lastHolePunch, listenPort)
		      VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			s.id, s.orgID, s.niceID, 1, s.name, s.pubKey, s.subnet, s.megabytesIn, s.megabytesOut,
			w.start.Format(time.RFC3339), "newt", true, s.address, s.endpoint, s.pubKey, s.lastHolePunch, 51820)
	}
	for _, r := range w.resources {
		exec(`INSERT INTO resources (resourceId, resourceGuid, orgId, niceId, name, subdomain, fullDomain, domainId, ssl, blockAccess, sso, protocol, emailWhitelistEnabled, applyRules, stickySession)
		      VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			r.id, r.guid, r.orgID, r.niceID, r.name, r.subdomain, r.fullDomain, "domain1", true,
			r.blockAccess, r.sso, "tcp", r.emailWhitelist, r.applyRules, r.stickySession)
		for k := 0; k < 1+g.intn(2); k++ {
			exec(`INSERT INTO targets (resourceId, siteId, ip, method, port, enabled, path, pathMatchType, priority) VALUES (?,?,?,?,?,?,?,?,?)`,
				r.id, r.siteID, r.targetIP, "http", r.targetPort+k, true, nil, nil, 100)
		}
		if r.applyRules {
			for k := 0; k < 2+g.intn(4); k++ {
				var match, value string
				switch g.intn(3) {
				case 0:
					match, value = "CIDR", fmt.Sprintf("10.%d.0.0/16", g.intn(256))
				case 1:
					match, value = "IP", string(g.appendIP(nil))
				default:
					match, value = "PATH", g.pick([]string{"/api/*", "/public/*", "/share/*", "/.well-known/*"})
				}
				exec(`INSERT INTO resourceRules (resourceId, enabled, priority, action, "match", value) VALUES (?,?,?,?,?,?)`,
					r.id, true, k+1, g.pick([]string{"ACCEPT", "DROP", "PASS"}), match, value)
			}
		}
	}
	if err != nil {
		return err
	}
	return tx.Commit()
}

// auditRow holds the 20 bound values of one requestAuditLog insert; fill
// reuses its buffers.
type auditRow struct {
	args [20]any
	buf  []byte
}

var (
	actorTypes = []string{"user", "user", "user", "resourceAccessToken", "whitelistedEmail"}
	accepts    = []string{"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", "application/json, text/plain, */*", "*/*", "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"}
	languages  = []string{"en-US,en;q=0.9", "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "de-DE,de;q=0.9,en;q=0.8", "en-GB,en;q=0.9"}
)

func (a *auditRow) fill(g *gen, w *world, ts int64) {
	r := &w.resources[g.intn(len(w.resources))]
	q := g.request()
	allowed := q.status < 400 || g.chance(10)
	ip := string(g.appendIP(a.buf[:0]))

	var actorType, actor, actorID any
	reason := 100 + g.intn(8)
	if allowed {
		t := g.pick(actorTypes)
		actorType = t
		switch t {
		case "user", "whitelistedEmail":
			u := w.users[g.intn(len(w.users))]
			actor, actorID = u.email, u.id
		default:
			actor, actorID = "token-"+r.niceID, g.id(15)
		}
	} else {
		reason = 201 + g.intn(5)
	}

	b := a.buf[:0]
	b = append(b, `{"resourceName":"`...)
	b = append(b, r.name...)
	b = append(b, `","resourceNiceId":"`...)
	b = append(b, r.niceID...)
	b = append(b, `","sessionId":`...)
	if allowed {
		b = append(b, '"')
		b = g.appendHex(b, 40)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"ruleId":`...)
	if r.applyRules && g.chance(50) {
		b = strconv.AppendInt(b, int64(g.between(1, 200)), 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"durationMs":`...)
	b = strconv.AppendInt(b, int64(g.between(1, 300)), 10)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(q.status), 10)
	b = append(b, '}')
	metadata := string(b)

	b = b[:0]
	b = append(b, `{"accept":"`...)
	b = append(b, g.pick(accepts)...)
	b = append(b, `","accept-encoding":"gzip, deflate, br, zstd","accept-language":"`...)
	b = append(b, g.pick(languages)...)
	b = append(b, `","cookie":"p_session_token=`...)
	b = g.appendID(b, 40)
	if g.chance(50) {
		b = append(b, `; _ga=GA1.1.`...)
		b = strconv.AppendInt(b, int64(g.r.Uint32()), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, ts-int64(g.intn(1e6)), 10)
	}
	b = append(b, `","host":"`...)
	b = append(b, r.fullDomain...)
	b = append(b, `","sec-fetch-dest":"document","sec-fetch-mode":"navigate","sec-fetch-site":"none","user-agent":"`...)
	b = append(b, q.ua...)
	b = append(b, `","x-forwarded-for":"`...)
	b = append(b, ip...)
	b = append(b, `","x-forwarded-host":"`...)
	b = append(b, r.fullDomain...)
	b = append(b, `","x-forwarded-port":"443","x-forwarded-proto":"https","x-forwarded-server":"`...)
	b = g.appendHex(b, 12)
	b = append(b, `","x-real-ip":"`...)
	b = append(b, ip...)
	b = append(b, `"}`...)
	headers := string(b)

	var query any
	reqURL := "https://" + r.fullDomain + q.path
	if q.query != "" {
		k, v, _ := strings.Cut(q.query, "=")
		query = `{"` + k + `":"` + v + `"}`
		reqURL += "?" + q.query
	}
	a.buf = b

	a.args = [20]any{
		ts, r.orgID, allowed, reason, actorType, actor, actorID,
		r.id, ip, g.pick(countries), q.ua, metadata, headers, query, reqURL,
		"https", r.fullDomain, q.path, q.method, true,
	}
}

// loadWorld reads back, from a generated database, the entities needed to
// produce more audit rows and log lines.
func loadWorld(db *sql.DB) (*world, error) {
	w := &world{}
	rows, err := db.Query(`SELECT id, email FROM users ORDER BY rowid`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var u user
		if err := rows.Scan(&u.id, &u.email); err != nil {
			rows.Close()
			return nil, err
		}
		w.users = append(w.users, u)
	}
	rows.Close()
	rows, err = db.Query(`SELECT resourceId, orgId, niceId, name, fullDomain,
	    COALESCE((SELECT ip FROM targets t WHERE t.resourceId = r.resourceId LIMIT 1), '127.0.0.1'),
	    COALESCE((SELECT port FROM targets t WHERE t.resourceId = r.resourceId LIMIT 1), 80),
	    applyRules
	  FROM resources r ORDER BY resourceId`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var r resource
		if err := rows.Scan(&r.id, &r.orgID, &r.niceID, &r.name, &r.fullDomain, &r.targetIP, &r.targetPort, &r.applyRules); err != nil {
			rows.Close()
			return nil, err
		}
		w.resources = append(w.resources, r)
	}
	rows.Close()
	rows, err = db.Query(`SELECT niceId, COALESCE(pubKey, ''), COALESCE(subnet, '') FROM sites ORDER BY siteId`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		s := site{newtVersion: "1.4.0"}
		if err := rows.Scan(&s.niceID, &s.pubKey, &s.subnet); err != nil {
			rows.Close()
			return nil, err
		}
		w.sites = append(w.sites, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(w.users) == 0 || len(w.resources) == 0 || len(w.sites) == 0 {
		return nil, errors.New("workload: database has no users, resources or sites; was it made by Generate?")
	}
	return w, nil
}
