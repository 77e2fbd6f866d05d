package workload

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"
)

// Random streams: every part of the tree draws from its own stream, so that
// changing how one file is generated does not reshuffle the others.
const (
	streamWorld = iota + 1
	streamKey
	streamACME
	streamDB
	streamLogs // and streamLogs+1
	_
	streamChange
	streamRenew
	streamRewrite
	streamAppend
)

// gen is a deterministic source of random values and realistic strings.
type gen struct {
	r    *rand.Rand
	c    *rand.ChaCha8
	reqs int64 // Traefik's request counter in access log lines
}

func newGen(seed int64, stream uint64) *gen {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], uint64(seed))
	binary.LittleEndian.PutUint64(key[8:], stream)
	copy(key[16:], "haul-workload-gn")
	return &gen{
		r: rand.New(rand.NewPCG(uint64(seed), stream*0x9e3779b97f4a7c15+1)),
		c: rand.NewChaCha8(key),
	}
}

func (g *gen) int64n(n int64) int64             { return g.r.Int64N(n) }
func (g *gen) intn(n int) int                   { return g.r.IntN(n) }
func (g *gen) between(lo, hi int) int           { return lo + g.r.IntN(hi-lo+1) }
func (g *gen) pick(list []string) string        { return list[g.r.IntN(len(list))] }
func (g *gen) chance(percent int) bool          { return g.r.IntN(100) < percent }
func (g *gen) randBytes(n int) []byte           { b := make([]byte, n); g.c.Read(b); return b }
func (g *gen) b64(n int) string                 { return base64.StdEncoding.EncodeToString(g.randBytes(n)) }
func (g *gen) appendHex(b []byte, n int) []byte { return g.appendFrom(b, n, "0123456789abcdef") }
func (g *gen) appendID(b []byte, n int) []byte {
	return g.appendFrom(b, n, "abcdefghijklmnopqrstuvwxyz0123456789")
}
func (g *gen) hex(n int) string { return string(g.appendHex(nil, n)) }
func (g *gen) id(n int) string  { return string(g.appendID(nil, n)) }

func (g *gen) appendFrom(b []byte, n int, alphabet string) []byte {
	for i := 0; i < n; i++ {
		b = append(b, alphabet[g.r.IntN(len(alphabet))])
	}
	return b
}

// appendIP appends a public-looking client address.
func (g *gen) appendIP(b []byte) []byte {
	first := []int{23, 31, 45, 62, 77, 81, 89, 94, 104, 109, 142, 151, 172, 185, 188, 203, 212, 217}
	b = strconv.AppendInt(b, int64(first[g.r.IntN(len(first))]), 10)
	for i := 0; i < 3; i++ {
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(g.r.IntN(254)+1), 10)
	}
	return b
}

// clock hands out increasing timestamps spread over a span for an expected
// number of events.
type clock struct {
	t    time.Time
	step time.Duration
}

func newClock(start time.Time, span time.Duration, events int64) *clock {
	if events < 1 {
		events = 1
	}
	step := span / time.Duration(events)
	if step < time.Millisecond {
		step = time.Millisecond
	}
	return &clock{t: start, step: step}
}

func (c *clock) next(g *gen) time.Time {
	c.t = c.t.Add(c.step/2 + time.Duration(g.r.Int64N(int64(c.step))))
	return c.t
}

// world is the set of entities (orgs, users, sites, resources) the files refer
// to, so the config, the certificates, the database and the logs agree.
type world struct {
	baseDomain string
	dashboard  string
	email      string
	secret     string
	start      time.Time // first log and audit timestamp
	span       time.Duration
	orgs       []org
	users      []user
	sites      []site
	resources  []resource
}

type org struct{ id, name, subnet string }

type user struct{ id, email, name string }

type site struct {
	id                           int
	orgID, niceID, name, pubKey  string
	subnet, address, endpoint    string
	exitNodeListen, newtVersion  string
	megabytesIn, megabytesOut    int
	lastHolePunch, lastPingEpoch int64
}

type resource struct {
	id                            int
	guid, orgID, niceID, name     string
	subdomain, fullDomain         string
	siteID                        int
	targetIP                      string
	targetPort                    int
	sso, applyRules, blockAccess  bool
	emailWhitelist, stickySession bool
}

var (
	adjectives = []string{"amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "happy", "icy", "jolly", "keen", "lucky", "mellow", "nimble", "odd", "proud", "quiet", "rapid", "shy", "tidy", "vivid", "witty"}
	animals    = []string{"otter", "badger", "falcon", "gecko", "heron", "ibex", "jackal", "koala", "lemur", "marten", "newt", "ocelot", "panda", "quail", "raven", "stoat", "tapir", "urchin", "vole", "walrus", "yak", "zebra"}
	firstNames = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "nina", "oscar", "peggy", "quentin", "rupert", "sybil", "trent", "ursula", "victor", "wendy", "xavier", "yvonne", "zach"}
	lastNames  = []string{"martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau", "simon", "laurent", "lefebvre", "michel", "garcia", "david", "bertrand", "roux", "vincent", "fournier"}
	apps       = []string{"jellyfin", "nextcloud", "grafana", "homeassistant", "vaultwarden", "gitea", "immich", "paperless", "portainer", "uptime", "sonarr", "radarr", "prowlarr", "overseerr", "audiobookshelf", "photoprism", "syncthing", "miniflux", "freshrss", "wikijs", "bookstack", "n8n", "nodered", "code", "pihole", "adguard", "minio", "plex", "navidrome", "kavita"}
	orgNames   = []string{"Home Lab", "Acme Corp", "Family", "Side Projects", "Lab Staging"}
	countries  = []string{"US", "FR", "DE", "GB", "NL", "CA", "ES", "IT", "BE", "CH", "SE", "PL", "BR", "JP", "IN", "AU"}
	userAgents = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
		"Jellyfin-Android/2.6.2 (Linux;Android 14;Pixel 8)",
		"Nextcloud-android/3.30.5",
		"HomeAssistant/2024.11.1 (io.robbie.HomeAssistant; build:2024.1104; iOS 18.1.0)",
		"curl/8.5.0",
		"Go-http-client/2.0",
		"Uptime-Kuma/1.23.15",
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"python-requests/2.32.3",
	}
	methods = []string{"GET", "GET", "GET", "GET", "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"}
	assets  = []string{"/", "/favicon.ico", "/manifest.json", "/robots.txt", "/login", "/web/index.html", "/static/js/main.", "/static/css/app.", "/assets/index-", "/api/v1/status", "/api/v1/items", "/api/v1/users/me", "/api/health", "/socket", "/remote.php/dav/files/", "/ocs/v2.php/apps/notifications/api/v2/notifications", "/Users/", "/Items/", "/Sessions/Playing/Progress", "/api/websocket"}
)

func newWorld(seed int64) *world {
	g := newGen(seed, streamWorld)
	w := &world{
		start: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(g.intn(30*24)) * time.Hour),
		span:  90 * 24 * time.Hour,
	}
	w.baseDomain = g.pick(adjectives) + g.pick(animals) + "." + g.pick([]string{"example.com", "example.net", "example.org"})
	w.dashboard = "pangolin." + w.baseDomain
	w.email = "admin@" + w.baseDomain
	w.secret = g.id(48)

	for i := 0; i < 3; i++ {
		name := orgNames[(i+g.intn(len(orgNames)))%len(orgNames)]
		w.orgs = append(w.orgs, org{
			id:     strings.ReplaceAll(strings.ToLower(name), " ", "-") + "-" + g.id(4),
			name:   name,
			subnet: fmt.Sprintf("100.90.%d.0/24", 128+i),
		})
	}
	for i := 0; i < 25; i++ {
		f, l := g.pick(firstNames), g.pick(lastNames)
		w.users = append(w.users, user{
			id:    g.id(15),
			email: fmt.Sprintf("%s.%s%d@%s", f, l, i, w.baseDomain),
			name:  strings.ToUpper(f[:1]) + f[1:] + " " + strings.ToUpper(l[:1]) + l[1:],
		})
	}
	for i := 0; i < 8; i++ {
		o := w.orgs[i%len(w.orgs)]
		w.sites = append(w.sites, site{
			id:             i + 1,
			orgID:          o.id,
			niceID:         g.pick(adjectives) + "-" + g.pick(animals),
			name:           g.pick([]string{"homelab", "nas", "office", "vps", "pi", "garage", "cloud"}) + "-" + strconv.Itoa(i+1),
			pubKey:         g.b64(32),
			subnet:         fmt.Sprintf("100.89.137.%d/30", 4*(i+1)),
			address:        fmt.Sprintf("100.89.137.%d/30", 4*(i+1)+1),
			endpoint:       fmt.Sprintf("%d.%d.%d.%d:%d", 80+g.intn(100), g.intn(256), g.intn(256), 1+g.intn(254), 30000+g.intn(30000)),
			exitNodeListen: "51820",
			newtVersion:    fmt.Sprintf("1.%d.%d", 2+g.intn(4), g.intn(6)),
			megabytesIn:    g.intn(200000),
			megabytesOut:   g.intn(900000),
			lastHolePunch:  w.start.Unix() + int64(g.intn(3600)),
			lastPingEpoch:  w.start.Unix() + int64(g.intn(3600)),
		})
	}
	for i := 0; i < 40; i++ {
		s := w.sites[g.intn(len(w.sites))]
		app := apps[i%len(apps)]
		sub := app
		if i >= len(apps) {
			sub = app + "-" + strconv.Itoa(i/len(apps)+1)
		}
		w.resources = append(w.resources, resource{
			id:             i + 1,
			guid:           uuid(g),
			orgID:          s.orgID,
			niceID:         g.pick(adjectives) + "-" + g.pick(animals),
			name:           strings.ToUpper(sub[:1]) + sub[1:],
			subdomain:      sub,
			fullDomain:     sub + "." + w.baseDomain,
			siteID:         s.id,
			targetIP:       fmt.Sprintf("10.0.%d.%d", g.intn(4), 2+g.intn(250)),
			targetPort:     []int{80, 443, 3000, 8080, 8096, 8123, 9000, 5000, 8000, 2283}[g.intn(10)],
			sso:            g.chance(80),
			applyRules:     g.chance(30),
			blockAccess:    g.chance(5),
			emailWhitelist: g.chance(15),
			stickySession:  g.chance(10),
		})
	}
	return w
}

func uuid(g *gen) string {
	h := g.hex(32)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// wireguardKey returns a Gerbil private key file: base64 of a clamped
// Curve25519 scalar.
func wireguardKey(g *gen) []byte {
	k := g.randBytes(32)
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return []byte(base64.StdEncoding.EncodeToString(k))
}

func pangolinConfig(w *world) []byte {
	return []byte(fmt.Sprintf(`# To see all available options, please visit the docs:
# https://docs.pangolin.net/self-host/advanced/config-file

app:
  dashboard_url: "https://%[1]s"
  log_level: "info"
  save_logs: true
  log_failed_attempts: true
  telemetry:
    anonymous_usage: false

domains:
  domain1:
    base_domain: "%[2]s"
    cert_resolver: "letsencrypt"
    prefer_wildcard_cert: false

server:
  external_port: 3000
  internal_port: 3001
  next_port: 3002
  integration_port: 3003
  internal_hostname: "pangolin"
  session_cookie_name: "p_session_token"
  resource_access_token_param: "p_token"
  resource_access_token_headers:
    id: "P-Access-Token-Id"
    token: "P-Access-Token"
  resource_session_request_param: "p_session_request"
  secret: "%[3]s"
  cors:
    origins: ["https://%[1]s"]
    methods: ["GET", "POST", "PUT", "DELETE", "PATCH"]
    allowed_headers: ["X-CSRF-Token", "Content-Type"]
    credentials: false
  trust_proxy: 1
  dashboard_session_length_hours: 720
  resource_session_length_hours: 720

traefik:
  cert_resolver: "letsencrypt"
  http_entrypoint: "web"
  https_entrypoint: "websecure"
  prefer_wildcard_cert: false
  additional_middlewares: []

gerbil:
  start_port: 51820
  base_endpoint: "%[1]s"
  use_subdomain: false
  block_size: 24
  site_block_size: 30
  subnet_group: 100.89.137.0/20

rate_limits:
  global:
    window_minutes: 1
    max_requests: 500

email:
  smtp_host: "smtp.%[2]s"
  smtp_port: 587
  smtp_user: "%[4]s"
  smtp_pass: "%[5]s"
  no_reply: "noreply@%[2]s"

flags:
  require_email_verification: false
  disable_signup_without_invite: true
  disable_user_create_org: true
  allow_raw_resources: true
  enable_integration_api: false
`, w.dashboard, w.baseDomain, w.secret, w.email, w.secret[:20]))
}

func traefikConfig(w *world) []byte {
	return []byte(fmt.Sprintf(`api:
  insecure: true
  dashboard: true

providers:
  http:
    endpoint: "http://pangolin:3001/api/v1/traefik-config"
    pollInterval: "5s"
  file:
    filename: "/etc/traefik/dynamic_config.yml"

experimental:
  plugins:
    badger:
      moduleName: "github.com/fosrl/badger"
      version: "v1.2.0"

log:
  level: "INFO"
  format: "common"

accessLog:
  filePath: "/var/log/traefik/access.log"
  bufferingSize: 100
  fields:
    defaultMode: keep
    headers:
      defaultMode: drop

certificatesResolvers:
  letsencrypt:
    acme:
      httpChallenge:
        entryPoint: web
      email: "%[1]s"
      storage: "/letsencrypt/acme.json"
      caServer: "https://acme-v02.api.letsencrypt.org/directory"

entryPoints:
  web:
    address: ":80"
  websecure:
    address: ":443"
    transport:
      respondingTimeouts:
        readTimeout: "30m"
    http:
      tls:
        certResolver: "letsencrypt"

serversTransport:
  insecureSkipVerify: true

ping:
  entryPoint: "web"
`, w.email))
}

func traefikDynamicConfig(w *world) []byte {
	return []byte(fmt.Sprintf("http:\n"+`  middlewares:
    redirect-to-https:
      redirectScheme:
        scheme: https

  routers:
    # HTTP to HTTPS redirect router
    main-app-router-redirect:
      rule: "Host(%[1]s)"
      service: next-service
      entryPoints:
        - web
      middlewares:
        - redirect-to-https

    # Next.js router (everything except the API and WebSocket paths)
    next-router:
      rule: "Host(%[1]s) && !PathPrefix(%[2]s)"
      service: next-service
      entryPoints:
        - websecure
      tls:
        certResolver: letsencrypt

    # API router (/api/v1)
    api-router:
      rule: "Host(%[1]s) && PathPrefix(%[2]s)"
      service: api-service
      entryPoints:
        - websecure
      tls:
        certResolver: letsencrypt

    # WebSocket router
    ws-router:
      rule: "Host(%[1]s)"
      service: api-service
      entryPoints:
        - websecure
      tls:
        certResolver: letsencrypt

  services:
    next-service:
      loadBalancer:
        servers:
          - url: "http://pangolin:3002" # Next.js server

    api-service:
      loadBalancer:
        servers:
          - url: "http://pangolin:3000" # API/WebSocket server
`, "`"+w.dashboard+"`", "`/api/v1`"))
}

// Traefik's acme.json, as written by its local store (json.MarshalIndent with
// two spaces, one top-level key per certificate resolver).
type acmeResolver struct {
	Account      *acmeAccount `json:"Account"`
	Certificates []acmeCert   `json:"Certificates"`
}

type acmeAccount struct {
	Email        string
	Registration *acmeRegistration
	PrivateKey   string
	KeyType      string
}

type acmeRegistration struct {
	Body struct {
		Status  string   `json:"status"`
		Contact []string `json:"contact,omitempty"`
	} `json:"body"`
	URI string `json:"uri"`
}

type acmeCert struct {
	Domain      acmeDomain `json:"domain"`
	Certificate string     `json:"certificate"`
	Key         string     `json:"key"`
	Store       string     `json:"Store"`
}

type acmeDomain struct {
	Main string   `json:"main"`
	SANs []string `json:"sans,omitempty"`
}

func acmeJSON(w *world, g *gen) ([]byte, error) {
	acct := &acmeAccount{
		Email:        w.email,
		Registration: &acmeRegistration{URI: "https://acme-v02.api.letsencrypt.org/acme/acct/" + strconv.Itoa(1_000_000_000+g.intn(900_000_000))},
		PrivateKey:   g.b64(2350), // DER of an RSA-4096 key
		KeyType:      "4096",
	}
	acct.Registration.Body.Status = "valid"
	acct.Registration.Body.Contact = []string{"mailto:" + w.email}

	certs := []acmeCert{{Domain: acmeDomain{Main: w.dashboard}}}
	for _, r := range w.resources[:4] {
		certs = append(certs, acmeCert{Domain: acmeDomain{Main: r.fullDomain}})
	}
	for i := range certs {
		certs[i].Store = "default"
		renewCert(&certs[i], g)
	}
	return marshalACME(map[string]*acmeResolver{"letsencrypt": {Account: acct, Certificates: certs}})
}

// renewCert gives c a new certificate chain (leaf + intermediate, PEM, then
// base64 as Traefik stores it, ~4.7 KiB) and a new RSA-4096 key (~4.2 KiB).
func renewCert(c *acmeCert, g *gen) {
	chain := pemBlock(nil, "CERTIFICATE", g.randBytes(g.between(1150, 1400)))
	chain = pemBlock(chain, "CERTIFICATE", g.randBytes(g.between(1280, 1310)))
	c.Certificate = base64.StdEncoding.EncodeToString(chain)
	c.Key = base64.StdEncoding.EncodeToString(pemBlock(nil, "RSA PRIVATE KEY", g.randBytes(g.between(2340, 2350))))
}

func pemBlock(b []byte, typ string, der []byte) []byte {
	b = append(b, "-----BEGIN "+typ+"-----\n"...)
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 64 {
		b = append(b, enc[:64]...)
		b = append(b, '\n')
		enc = enc[64:]
	}
	b = append(b, enc...)
	b = append(b, '\n')
	return append(b, "-----END "+typ+"-----\n"...)
}

func marshalACME(v map[string]*acmeResolver) ([]byte, error) {
	return json.MarshalIndent(v, "", "  ")
}

// lineFunc appends one log line, newline included, for an event at t.
type lineFunc func(b []byte, g *gen, w *world, t time.Time) []byte

// pangolinLine appends a line in Pangolin's winston format.
func pangolinLine(b []byte, g *gen, w *world, t time.Time) []byte {
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	r := w.resources[g.intn(len(w.resources))]
	s := w.sites[g.intn(len(w.sites))]
	switch k := g.intn(100); {
	case k < 35:
		u := w.users[g.intn(len(w.users))]
		b = append(b, " [info]: Verified session for user "...)
		b = append(b, u.email...)
		b = append(b, " on resource "...)
		b = strconv.AppendInt(b, int64(r.id), 10)
		b = append(b, " ("...)
		b = append(b, r.fullDomain...)
		b = append(b, ") from "...)
		b = g.appendIP(b)
	case k < 50:
		b = append(b, " [debug]: Bandwidth update for site "...)
		b = append(b, s.niceID...)
		b = append(b, ": in="...)
		b = strconv.AppendFloat(b, float64(g.intn(100000))/100, 'f', 2, 64)
		b = append(b, "MB out="...)
		b = strconv.AppendFloat(b, float64(g.intn(100000))/100, 'f', 2, 64)
		b = append(b, "MB"...)
	case k < 60:
		b = append(b, " [info]: Peer "...)
		b = append(b, s.pubKey...)
		b = append(b, " added to exit node 1 for site "...)
		b = append(b, s.niceID...)
		b = append(b, " (allowed IPs "...)
		b = append(b, s.subnet...)
		b = append(b, ')')
	case k < 72:
		b = append(b, " [warn]: Resource access denied: no valid session for resource "...)
		b = strconv.AppendInt(b, int64(r.id), 10)
		b = append(b, " from "...)
		b = g.appendIP(b)
		b = append(b, " ("...)
		b = append(b, g.pick(userAgents)...)
		b = append(b, ')')
	case k < 82:
		b = append(b, " [debug]: Traefik config requested by 172.18.0.3: "...)
		b = strconv.AppendInt(b, int64(len(w.resources)*2+4), 10)
		b = append(b, " routers, "...)
		b = strconv.AppendInt(b, int64(len(w.resources)+2), 10)
		b = append(b, " services, "...)
		b = strconv.AppendInt(b, int64(g.between(1, 9)), 10)
		b = append(b, "ms"...)
	case k < 92:
		b = append(b, " [info]: Handling ping from newt "...)
		b = append(b, s.niceID...)
		b = append(b, " (client "...)
		b = g.appendID(b, 15)
		b = append(b, ", version "...)
		b = append(b, s.newtVersion...)
		b = append(b, ')')
	case k < 98:
		b = append(b, " [error]: Failed to send message to newt for site "...)
		b = append(b, s.niceID...)
		b = append(b, ": WebSocket is not open: readyState 3 (CLOSED)"...)
	default:
		b = append(b, " [info]: Cleaned up "...)
		b = strconv.AppendInt(b, int64(g.between(1, 40)), 10)
		b = append(b, " expired sessions"...)
	}
	return append(b, '\n')
}

// request is one HTTP request through Traefik, shared by access log lines and
// audit rows.
type request struct {
	method, path, query, ua string
	status, size            int
}

func (g *gen) request() request {
	q := request{method: g.pick(methods), ua: g.pick(userAgents)}
	p := g.pick(assets)
	var b []byte
	switch {
	case strings.HasSuffix(p, "."):
		b = g.appendHex(append(b, p...), 8)
		b = append(b, g.pick([]string{".js", ".css", ".js.map"})...)
	case strings.HasSuffix(p, "-"):
		b = g.appendID(append(b, p...), 8)
		b = append(b, ".js"...)
	case strings.HasSuffix(p, "/") && len(p) > 1:
		b = g.appendHex(append(b, p...), 32)
	default:
		b = append(b, p...)
	}
	q.path = string(b)
	if g.chance(25) {
		q.query = g.pick([]string{"page=", "limit=50&offset=", "ts=", "api_key=", "StartIndex=", "v="}) + strconv.Itoa(g.intn(100000))
	}
	switch k := g.intn(100); {
	case k < 78:
		q.status = 200
	case k < 84:
		q.status = 304
	case k < 88:
		q.status = 302
	case k < 94:
		q.status = 401
	case k < 97:
		q.status = 404
	case k < 99:
		q.status = 403
	default:
		q.status = 502
	}
	q.size = g.between(0, 60000)
	if q.status == 304 {
		q.size = 0
	}
	return q
}

// accessLine appends a line in Traefik's common log format (CLF plus request
// count, router, server URL and duration).
func accessLine(b []byte, g *gen, w *world, t time.Time) []byte {
	r := &w.resources[g.intn(len(w.resources))]
	q := g.request()
	g.reqs++
	b = g.appendIP(b)
	b = append(b, " - - ["...)
	b = t.UTC().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	b = append(b, q.method...)
	b = append(b, ' ')
	b = append(b, q.path...)
	if q.query != "" {
		b = append(b, '?')
		b = append(b, q.query...)
	}
	b = append(b, " HTTP/2.0\" "...)
	b = strconv.AppendInt(b, int64(q.status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(q.size), 10)
	b = append(b, " \""...)
	if g.chance(40) {
		b = append(b, "https://"...)
		b = append(b, r.fullDomain...)
		b = append(b, '/')
	} else {
		b = append(b, '-')
	}
	b = append(b, "\" \""...)
	b = append(b, q.ua...)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, g.reqs, 10)
	b = append(b, " \""...)
	b = strconv.AppendInt(b, int64(r.id), 10)
	b = append(b, '-')
	b = append(b, r.niceID...)
	b = append(b, "-router@http\" \"http://"...)
	b = append(b, r.targetIP...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(r.targetPort), 10)
	b = append(b, "\" "...)
	b = strconv.AppendInt(b, int64(g.between(1, 400)), 10)
	return append(b, "ms\n"...)
}

// writeLines writes exactly n bytes of lines produced by line to path,
// truncating the file first unless appendTo is set. The last line is cut
// short (still newline-terminated) to land on n.
func writeLines(path string, appendTo bool, n int64, line func([]byte) []byte) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if appendTo {
		flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, 0, 1024)
	for n > 0 {
		buf = line(buf[:0])
		if int64(len(buf)) > n {
			buf = append(buf[:n-1], '\n')
		}
		bw.Write(buf)
		n -= int64(len(buf))
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
