// Package fakehcloud is a stateful stand-in for the Hetzner Cloud API on
// loopback, for tests that run the real OpenTofu and the real
// terraform-provider-hcloud (which honours HCLOUD_ENDPOINT) and haul's own
// hcloud-go client against it.
//
// It serves what tofu/ and haul use: locations, server types, images,
// SSH keys, firewalls, primary IPs, servers and actions, with the wire
// format of hcloud-go's hcloud/schema and the rules of the real API that
// matter to a rebuild: names are unique, a server cannot be created with a
// server type that is not available in its location, deleting a server
// unassigns its primary IPs (and deletes those with auto_delete), a
// delete-protected primary IP cannot be deleted, a firewall in use cannot
// be deleted. Actions finish at once. Every request is logged, so a test
// can assert what reached the API (say, that no DELETE did).
package fakehcloud

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"
)

// Request is one logged API request.
type Request struct {
	Method string
	Path   string // without /v1 prefix and query
	Query  url.Values
	Body   string
	Status int
	// UserAgent names the client: hcloud-go adds the application
	// ("hcloud-terraform/<version>" for the provider, "haul/<version>").
	UserAgent string
}

func (r Request) String() string {
	s := r.Method + " " + r.Path
	if len(r.Query) > 0 {
		s += "?" + r.Query.Encode()
	}
	return fmt.Sprintf("%s -> %d", s, r.Status)
}

// Server is the fake API.
type Server struct {
	URL   string // the endpoint, for HCLOUD_ENDPOINT / hcloud_endpoint
	Token string // the only token accepted

	srv *httptest.Server

	mu  sync.Mutex
	log []Request
	now func() time.Time
	State
}

// State is everything the fake API holds. Tests change it behind the
// API's back (as someone in Hetzner's console would) with Edit.
type State struct {
	NextID      int64
	IPv4Pool    []string
	IPv6Next    int
	Locations   []schema.Location
	ServerTypes []schema.ServerType
	Images      []schema.Image
	SSHKeys     map[int64]*schema.SSHKey
	Firewalls   map[int64]*schema.Firewall
	PrimaryIPs  map[int64]*schema.PrimaryIP
	Servers     map[int64]*schema.Server
	Actions     map[int64]*schema.Action
}

// Edit changes the state directly, under the API's lock.
func (s *Server) Edit(f func(st *State)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.State)
}

// Checkpoint saves the state; the returned function puts it back.
func (s *Server) Checkpoint() (restore func()) {
	s.mu.Lock()
	b, err := json.Marshal(s.State)
	s.mu.Unlock()
	if err != nil {
		panic(err)
	}
	return func() {
		var st State
		if err := json.Unmarshal(b, &st); err != nil {
			panic(err)
		}
		s.mu.Lock()
		s.State = st
		s.mu.Unlock()
	}
}

// Option configures a Server.
type Option func(*Server)

// WithIPv4Pool sets the addresses primary IPv4s get, in order (default
// documentation addresses from 203.0.113.0/24).
func WithIPv4Pool(ips ...string) Option { return func(s *Server) { s.IPv4Pool = ips } }

// Start starts a fake API for token; it stops when the test ends.
func Start(t testing.TB, token string, opts ...Option) *Server {
	s := &Server{Token: token, now: time.Now, State: State{
		NextID:     1000,
		SSHKeys:    map[int64]*schema.SSHKey{},
		Firewalls:  map[int64]*schema.Firewall{},
		PrimaryIPs: map[int64]*schema.PrimaryIP{},
		Servers:    map[int64]*schema.Server{},
		Actions:    map[int64]*schema.Action{},
	}}
	for i := 10; i < 60; i++ {
		s.IPv4Pool = append(s.IPv4Pool, fmt.Sprintf("203.0.113.%d", i))
	}
	for _, o := range opts {
		o(s)
	}
	s.catalog()
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/v1"
	t.Cleanup(s.srv.Close)
	return s
}

func (s *Server) id() int64 { s.NextID++; return s.NextID }

// catalog is a small copy of Hetzner's public catalog: three locations,
// the current x86 type cx23 and an Arm type everywhere, cx22 deprecated
// (as Hetzner announced in 2025) and unavailable after a date in the
// past, and Debian images.
func (s *Server) catalog() {
	s.Locations = []schema.Location{
		{ID: 1, Name: "fsn1", Description: "Falkenstein DC Park 1", Country: "DE", City: "Falkenstein", Latitude: 50.47612, Longitude: 12.370071, NetworkZone: "eu-central"},
		{ID: 2, Name: "nbg1", Description: "Nuremberg DC Park 1", Country: "DE", City: "Nuremberg", Latitude: 49.452102, Longitude: 11.076665, NetworkZone: "eu-central"},
		{ID: 3, Name: "hel1", Description: "Helsinki DC Park 1", Country: "FI", City: "Helsinki", Latitude: 60.169855, Longitude: 24.938379, NetworkZone: "eu-central"},
	}
	st := func(id int64, name, arch string, cores int, mem float32, disk int, deprecated bool) schema.ServerType {
		t := schema.ServerType{ID: id, Name: name, Description: strings.ToUpper(name), Category: "cost_optimized", Cores: cores, Memory: mem, Disk: disk,
			StorageType: "local", CPUType: "shared", Architecture: arch}
		for _, l := range s.Locations {
			loc := schema.ServerTypeLocation{ID: l.ID, Name: l.Name, Available: !deprecated}
			if deprecated {
				loc.Deprecation = &schema.DeprecationInfo{
					Announced:        time.Date(2025, 10, 16, 0, 0, 0, 0, time.UTC),
					UnavailableAfter: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
				}
			}
			t.Locations = append(t.Locations, loc)
			t.Prices = append(t.Prices, schema.PricingServerTypePrice{Location: l.Name})
		}
		return t
	}
	s.ServerTypes = []schema.ServerType{
		st(22, "cx22", "x86", 2, 4, 40, true),
		st(114, "cx23", "x86", 2, 4, 40, false),
		st(45, "cax11", "arm", 2, 4, 40, false),
	}
	created := time.Date(2025, 8, 15, 0, 0, 0, 0, time.UTC)
	img := func(id int64, name, arch, version string) schema.Image {
		n := name
		return schema.Image{ID: id, Status: "available", Type: "system", Name: &n, Description: "Debian " + version,
			DiskSize: 5, Created: &created, OSFlavor: "debian", OSVersion: &version, Architecture: arch, RapidDeploy: true, Labels: map[string]string{}}
	}
	s.Images = []schema.Image{
		img(114690387, "debian-12", "x86", "12"),
		img(114690389, "debian-12", "arm", "12"),
		img(161547269, "debian-13", "x86", "13"),
	}
}

// SetServerTypeAvailable marks a server type as orderable (or not) in a
// location, as Hetzner does when a type sells out or is withdrawn there.
func (s *Server) SetServerTypeAvailable(name, location string, available bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.ServerTypes {
		if s.ServerTypes[i].Name != name {
			continue
		}
		for j := range s.ServerTypes[i].Locations {
			if s.ServerTypes[i].Locations[j].Name == location {
				s.ServerTypes[i].Locations[j].Available = available
			}
		}
	}
}

// Requests returns the log so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// Mark returns the log's length, for Since.
func (s *Server) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log)
}

// Since returns the requests logged after mark.
func (s *Server) Since(mark int) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log[mark:])
}

// Mutating returns the requests that changed (or tried to change) state.
func Mutating(reqs []Request) []Request {
	var out []Request
	for _, r := range reqs {
		if r.Method != http.MethodGet {
			out = append(out, r)
		}
	}
	return out
}

// ServerMap returns the servers, by ID.
func (s *Server) ServerMap() map[int64]schema.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int64]schema.Server{}
	for id, v := range s.Servers {
		out[id] = *v
	}
	return out
}

// ServerByName returns the server named name, if any.
func (s *Server) ServerByName(name string) (schema.Server, bool) {
	for _, v := range s.ServerMap() {
		if v.Name == name {
			return v, true
		}
	}
	return schema.Server{}, false
}

// PrimaryIPByName returns the primary IP named name, if any.
func (s *Server) PrimaryIPByName(name string) (schema.PrimaryIP, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.PrimaryIPs {
		if v.Name == name {
			return *v, true
		}
	}
	return schema.PrimaryIP{}, false
}

// FirewallList returns the firewalls.
func (s *Server) FirewallList() []schema.Firewall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []schema.Firewall
	for _, v := range s.Firewalls {
		out = append(out, *v)
	}
	return out
}

// RemoveServer deletes a server behind the API's back (someone did it in
// the console), with the API's rules: its primary IPs are unassigned.
func (st *State) RemoveServer(id int64) {
	for _, p := range st.PrimaryIPs {
		if p.AssigneeID != nil && *p.AssigneeID == id {
			p.AssigneeID = nil
		}
	}
	for _, f := range st.Firewalls {
		f.AppliedTo = slices.DeleteFunc(f.AppliedTo, func(r schema.FirewallResource) bool { return r.Server != nil && r.Server.ID == id })
	}
	delete(st.Servers, id)
}

// SetServerLocked sets a server's locked flag (an action running on it).
func (s *Server) SetServerLocked(id int64, locked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.Servers[id]; v != nil {
		v.Locked = locked
	}
}

type apiError struct {
	status  int
	code    string
	message string
}

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

var (
	reCollection = regexp.MustCompile(`^/(locations|server_types|images|ssh_keys|firewalls|primary_ips|servers|actions)$`)
	reItem       = regexp.MustCompile(`^/(locations|server_types|images|ssh_keys|firewalls|primary_ips|servers|actions)/(\d+)$`)
	reAction     = regexp.MustCompile(`^/(firewalls|primary_ips|servers)/(\d+)/actions/([a-z_]+)$`)
	reGetAction  = regexp.MustCompile(`^/(firewalls|primary_ips|servers)(?:/\d+)?/actions/(\d+)$`)
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	path := strings.TrimPrefix(r.URL.Path, "/v1")
	status, resp := s.handle(r, path, body)
	s.mu.Lock()
	s.log = append(s.log, Request{Method: r.Method, Path: path, Query: r.URL.Query(), Body: string(body), Status: status, UserAgent: r.UserAgent()})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Server) handle(r *http.Request, path string, body []byte) (int, any) {
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		return 401, schema.ErrorResponse{Error: schema.Error{Code: "unauthorized", Message: "unable to authenticate"}}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	status, resp, aerr := s.route(r.Method, path, r.URL.Query(), body)
	if aerr != nil {
		return aerr.status, schema.ErrorResponse{Error: schema.Error{Code: aerr.code, Message: aerr.message}}
	}
	return status, resp
}

func decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return errorf(400, "json_error", "invalid JSON: %v", err)
	}
	return nil
}

func (s *Server) route(method, path string, q url.Values, body []byte) (int, any, *apiError) {
	if m := reGetAction.FindStringSubmatch(path); m != nil && method == http.MethodGet {
		id, _ := strconv.ParseInt(m[2], 10, 64)
		a := s.Actions[id]
		if a == nil {
			return 0, nil, errorf(404, "not_found", "action %d not found", id)
		}
		return 200, schema.ActionGetResponse{Action: *a}, nil
	}
	if m := reAction.FindStringSubmatch(path); m != nil && method == http.MethodPost {
		id, _ := strconv.ParseInt(m[2], 10, 64)
		return s.resourceAction(m[1], id, m[3], body)
	}
	if m := reCollection.FindStringSubmatch(path); m != nil {
		switch method {
		case http.MethodGet:
			return s.list(m[1], q)
		case http.MethodPost:
			return s.create(m[1], body)
		}
		return 0, nil, errorf(405, "method_not_allowed", "%s %s", method, path)
	}
	if m := reItem.FindStringSubmatch(path); m != nil {
		id, _ := strconv.ParseInt(m[2], 10, 64)
		switch method {
		case http.MethodGet:
			return s.get(m[1], id)
		case http.MethodPut:
			return s.update(m[1], id, body)
		case http.MethodDelete:
			return s.delete(m[1], id)
		}
		return 0, nil, errorf(405, "method_not_allowed", "%s %s", method, path)
	}
	return 0, nil, errorf(404, "not_found", "the fake Hetzner API does not serve %s %s", method, path)
}

func meta(n int) schema.Meta {
	return schema.Meta{Pagination: &schema.MetaPagination{Page: 1, PerPage: max(n, 25), LastPage: 1, TotalEntries: n}}
}

type listResponse[T any] struct {
	Items []T
	key   string
	Meta  schema.Meta
}

func (l listResponse[T]) MarshalJSON() ([]byte, error) {
	if l.Items == nil {
		l.Items = []T{}
	}
	return json.Marshal(map[string]any{l.key: l.Items, "meta": l.Meta})
}

func list[T any](key string, items []T) (int, any, *apiError) {
	return 200, listResponse[T]{Items: items, key: key, Meta: meta(len(items))}, nil
}

func sortedIDs[T any](m map[int64]*T) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func labelsMatch(labels map[string]string, selector string) bool {
	if selector == "" {
		return true
	}
	for _, term := range strings.Split(selector, ",") {
		k, v, hasV := strings.Cut(strings.TrimSpace(term), "=")
		got, ok := labels[k]
		if !ok || (hasV && got != v) {
			return false
		}
	}
	return true
}

func (s *Server) list(kind string, q url.Values) (int, any, *apiError) {
	name := q.Get("name")
	sel := q.Get("label_selector")
	switch kind {
	case "locations":
		var out []schema.Location
		for _, l := range s.Locations {
			if name == "" || l.Name == name {
				out = append(out, l)
			}
		}
		return list("locations", out)
	case "server_types":
		var out []schema.ServerType
		for _, t := range s.ServerTypes {
			if name == "" || t.Name == name {
				out = append(out, t)
			}
		}
		return list("server_types", out)
	case "images":
		var out []schema.Image
		for _, im := range s.Images {
			if name != "" && (im.Name == nil || *im.Name != name) {
				continue
			}
			if a := q["architecture"]; len(a) > 0 && !slices.Contains(a, im.Architecture) {
				continue
			}
			if t := q["type"]; len(t) > 0 && !slices.Contains(t, im.Type) {
				continue
			}
			if st := q["status"]; len(st) > 0 && !slices.Contains(st, im.Status) {
				continue
			}
			if im.Deprecated != nil && q.Get("include_deprecated") != "true" {
				continue
			}
			if !labelsMatch(im.Labels, sel) {
				continue
			}
			out = append(out, im)
		}
		return list("images", out)
	case "ssh_keys":
		var out []schema.SSHKey
		for _, id := range sortedIDs(s.SSHKeys) {
			k := s.SSHKeys[id]
			if (name == "" || k.Name == name) && (q.Get("fingerprint") == "" || k.Fingerprint == q.Get("fingerprint")) && labelsMatch(k.Labels, sel) {
				out = append(out, *k)
			}
		}
		return list("ssh_keys", out)
	case "firewalls":
		var out []schema.Firewall
		for _, id := range sortedIDs(s.Firewalls) {
			if f := s.Firewalls[id]; (name == "" || f.Name == name) && labelsMatch(f.Labels, sel) {
				out = append(out, *f)
			}
		}
		return list("firewalls", out)
	case "primary_ips":
		var out []schema.PrimaryIP
		for _, id := range sortedIDs(s.PrimaryIPs) {
			p := s.PrimaryIPs[id]
			if (name == "" || p.Name == name) && (q.Get("ip") == "" || p.IP == q.Get("ip")) && labelsMatch(p.Labels, sel) {
				out = append(out, *p)
			}
		}
		return list("primary_ips", out)
	case "servers":
		var out []schema.Server
		for _, id := range sortedIDs(s.Servers) {
			v := s.Servers[id]
			if (name == "" || v.Name == name) && labelsMatch(v.Labels, sel) && (len(q["status"]) == 0 || slices.Contains(q["status"], v.Status)) {
				out = append(out, *v)
			}
		}
		return list("servers", out)
	case "actions":
		var out []schema.Action
		for _, sid := range q["id"] {
			id, _ := strconv.ParseInt(sid, 10, 64)
			if a := s.Actions[id]; a != nil && (len(q["status"]) == 0 || slices.Contains(q["status"], a.Status)) {
				out = append(out, *a)
			}
		}
		return list("actions", out)
	}
	return 0, nil, errorf(404, "not_found", "no list %s", kind)
}

func (s *Server) get(kind string, id int64) (int, any, *apiError) {
	notFound := errorf(404, "not_found", "%s with ID %d not found", strings.TrimSuffix(kind, "s"), id)
	switch kind {
	case "locations":
		for _, l := range s.Locations {
			if l.ID == id {
				return 200, schema.LocationGetResponse{Location: l}, nil
			}
		}
	case "server_types":
		for _, t := range s.ServerTypes {
			if t.ID == id {
				return 200, schema.ServerTypeGetResponse{ServerType: t}, nil
			}
		}
	case "images":
		for _, im := range s.Images {
			if im.ID == id {
				return 200, schema.ImageGetResponse{Image: im}, nil
			}
		}
	case "ssh_keys":
		if k := s.SSHKeys[id]; k != nil {
			return 200, schema.SSHKeyGetResponse{SSHKey: *k}, nil
		}
	case "firewalls":
		if f := s.Firewalls[id]; f != nil {
			return 200, schema.FirewallGetResponse{Firewall: *f}, nil
		}
	case "primary_ips":
		if p := s.PrimaryIPs[id]; p != nil {
			return 200, schema.PrimaryIPGetResponse{PrimaryIP: *p}, nil
		}
	case "servers":
		if v := s.Servers[id]; v != nil {
			return 200, schema.ServerGetResponse{Server: *v}, nil
		}
	case "actions":
		if a := s.Actions[id]; a != nil {
			return 200, schema.ActionGetResponse{Action: *a}, nil
		}
	}
	return 0, nil, notFound
}

// action records a finished action on resources.
func (s *Server) action(command string, res ...schema.ActionResourceReference) schema.Action {
	now := s.now()
	a := &schema.Action{ID: s.id(), Status: "success", Command: command, Progress: 100, Started: now, Finished: &now, Resources: res}
	s.Actions[a.ID] = a
	return *a
}

func ref(typ string, id int64) schema.ActionResourceReference {
	return schema.ActionResourceReference{ID: id, Type: typ}
}

func (s *Server) location(name string) (schema.Location, bool) {
	for _, l := range s.Locations {
		if l.Name == name || strconv.FormatInt(l.ID, 10) == name {
			return l, true
		}
	}
	return schema.Location{}, false
}

func labels(l *map[string]string) map[string]string {
	if l == nil || *l == nil {
		return map[string]string{}
	}
	return *l
}

func (s *Server) nameTaken(kind, name string) bool {
	switch kind {
	case "ssh_keys":
		for _, k := range s.SSHKeys {
			if k.Name == name {
				return true
			}
		}
	case "firewalls":
		for _, f := range s.Firewalls {
			if f.Name == name {
				return true
			}
		}
	case "primary_ips":
		for _, p := range s.PrimaryIPs {
			if p.Name == name {
				return true
			}
		}
	case "servers":
		for _, v := range s.Servers {
			if v.Name == name {
				return true
			}
		}
	}
	return false
}

func (s *Server) create(kind string, body []byte) (int, any, *apiError) {
	switch kind {
	case "ssh_keys":
		var req schema.SSHKeyCreateRequest
		if err := decode(body, &req); err != nil {
			return 0, nil, err
		}
		fp, err := fingerprint(req.PublicKey)
		if err != nil {
			return 0, nil, errorf(400, "invalid_input", "invalid public key: %v", err)
		}
		for _, k := range s.SSHKeys {
			if k.Fingerprint == fp {
				return 0, nil, errorf(409, "uniqueness_error", "SSH key with the same fingerprint already exists")
			}
		}
		if req.Name == "" || s.nameTaken(kind, req.Name) {
			return 0, nil, errorf(409, "uniqueness_error", "name is already used")
		}
		k := &schema.SSHKey{ID: s.id(), Name: req.Name, Fingerprint: fp, PublicKey: req.PublicKey, Labels: labels(req.Labels), Created: s.now()}
		s.SSHKeys[k.ID] = k
		return 201, schema.SSHKeyCreateResponse{SSHKey: *k}, nil
	case "firewalls":
		var req schema.FirewallCreateRequest
		if err := decode(body, &req); err != nil {
			return 0, nil, err
		}
		if req.Name == "" || s.nameTaken(kind, req.Name) {
			return 0, nil, errorf(409, "uniqueness_error", "name is already used")
		}
		rules, aerr := firewallRules(req.Rules)
		if aerr != nil {
			return 0, nil, aerr
		}
		f := &schema.Firewall{ID: s.id(), Name: req.Name, Labels: labels(req.Labels), Created: s.now(), Rules: rules, AppliedTo: []schema.FirewallResource{}}
		s.Firewalls[f.ID] = f
		var actions []schema.Action
		for _, a := range req.ApplyTo {
			if a.Server == nil || s.Servers[a.Server.ID] == nil {
				return 0, nil, errorf(404, "firewall_resource_not_found", "apply_to resource not found")
			}
			actions = append(actions, s.applyFirewall(f, a.Server.ID))
		}
		return 201, schema.FirewallCreateResponse{Firewall: *f, Actions: orEmpty(actions)}, nil
	case "primary_ips":
		var req schema.PrimaryIPCreateRequest
		if err := decode(body, &req); err != nil {
			return 0, nil, err
		}
		if req.Name == "" || s.nameTaken(kind, req.Name) {
			return 0, nil, errorf(409, "uniqueness_error", "name is already used")
		}
		if req.Type != "ipv4" && req.Type != "ipv6" {
			return 0, nil, errorf(400, "invalid_input", "type must be ipv4 or ipv6")
		}
		if req.AssigneeType != "" && req.AssigneeType != "server" {
			return 0, nil, errorf(400, "invalid_input", "assignee_type must be server")
		}
		loc, ok := s.location(req.Location)
		if req.AssigneeID != nil {
			if v := s.Servers[*req.AssigneeID]; v != nil {
				loc, ok = v.Location, true
			}
		}
		if !ok {
			return 0, nil, errorf(400, "invalid_input", "location %q not found (a primary IP needs a location or an assignee)", req.Location)
		}
		p, aerr := s.newPrimaryIP(req.Name, req.Type, loc, req.AutoDelete != nil && *req.AutoDelete, req.Labels)
		if aerr != nil {
			return 0, nil, aerr
		}
		var act *schema.Action
		if req.AssigneeID != nil {
			v := s.Servers[*req.AssigneeID]
			if v == nil {
				return 0, nil, errorf(404, "not_found", "server %d not found", *req.AssigneeID)
			}
			if aerr := s.assignIP(p, v); aerr != nil {
				delete(s.PrimaryIPs, p.ID)
				return 0, nil, aerr
			}
			a := s.action("assign_primary_ip", ref("primary_ip", p.ID), ref("server", v.ID))
			act = &a
		}
		a := s.action("create_primary_ip", ref("primary_ip", p.ID))
		if act == nil {
			act = &a
		}
		return 201, schema.PrimaryIPCreateResponse{PrimaryIP: *p, Action: act}, nil
	case "servers":
		return s.createServer(body)
	}
	return 0, nil, errorf(405, "method_not_allowed", "POST /%s", kind)
}

func (s *Server) newPrimaryIP(name, typ string, loc schema.Location, autoDelete bool, l *map[string]string) (*schema.PrimaryIP, *apiError) {
	p := &schema.PrimaryIP{ID: s.id(), Name: name, Type: typ, Labels: labels(l), AssigneeType: "server",
		AutoDelete: autoDelete, Created: s.now(), Location: loc, DNSPtr: []schema.PrimaryIPDNSPTR{}}
	if typ == "ipv4" {
		if len(s.IPv4Pool) == 0 {
			return nil, errorf(403, "resource_limit_exceeded", "no IPv4 addresses left in the fake's pool")
		}
		p.IP, s.IPv4Pool = s.IPv4Pool[0], s.IPv4Pool[1:]
	} else {
		s.IPv6Next++
		p.IP = fmt.Sprintf("2001:db8:%x::/64", s.IPv6Next)
	}
	s.PrimaryIPs[p.ID] = p
	return p, nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func firewallRules(in []schema.FirewallRuleRequest) ([]schema.FirewallRule, *apiError) {
	out := []schema.FirewallRule{}
	for _, r := range in {
		if r.Direction != "in" && r.Direction != "out" {
			return nil, errorf(400, "invalid_input", "rule direction %q", r.Direction)
		}
		if (r.Protocol == "tcp" || r.Protocol == "udp") && (r.Port == nil || *r.Port == "") {
			return nil, errorf(400, "invalid_input", "a %s rule needs a port", r.Protocol)
		}
		out = append(out, schema.FirewallRule{Direction: r.Direction, SourceIPs: orEmpty(r.SourceIPs), DestinationIPs: orEmpty(r.DestinationIPs),
			Protocol: r.Protocol, Port: r.Port, Description: r.Description})
	}
	return out, nil
}

func (s *Server) applyFirewall(f *schema.Firewall, serverID int64) schema.Action {
	f.AppliedTo = append(f.AppliedTo, schema.FirewallResource{Type: "server", Server: &schema.FirewallResourceServer{ID: serverID}})
	v := s.Servers[serverID]
	v.PublicNet.Firewalls = append(v.PublicNet.Firewalls, schema.ServerFirewall{ID: f.ID, Status: "applied"})
	return s.action("apply_firewall", ref("firewall", f.ID), ref("server", serverID))
}

func (s *Server) assignIP(p *schema.PrimaryIP, v *schema.Server) *apiError {
	if p.AssigneeID != nil {
		return errorf(409, "primary_ip_assigned", "primary IP %d is already assigned to server %d", p.ID, *p.AssigneeID)
	}
	if p.Location.Name != v.Location.Name {
		return errorf(422, "primary_ip_datacenter_mismatch", "primary IP %d is in %s, the server in %s", p.ID, p.Location.Name, v.Location.Name)
	}
	id := v.ID
	p.AssigneeID = &id
	if p.Type == "ipv4" {
		v.PublicNet.IPv4 = schema.ServerPublicNetIPv4{ID: p.ID, IP: p.IP, DNSPtr: "static." + p.IP + ".clients.your-server.de"}
	} else {
		v.PublicNet.IPv6 = schema.ServerPublicNetIPv6{ID: p.ID, IP: p.IP, DNSPtr: []schema.ServerPublicNetIPv6DNSPtr{}}
	}
	return nil
}

func (s *Server) unassignIP(p *schema.PrimaryIP) {
	if p.AssigneeID == nil {
		return
	}
	if v := s.Servers[*p.AssigneeID]; v != nil {
		if p.Type == "ipv4" {
			v.PublicNet.IPv4 = schema.ServerPublicNetIPv4{}
		} else {
			v.PublicNet.IPv6 = schema.ServerPublicNetIPv6{}
		}
	}
	p.AssigneeID = nil
}

func (s *Server) createServer(body []byte) (int, any, *apiError) {
	var req schema.ServerCreateRequest
	if err := decode(body, &req); err != nil {
		return 0, nil, err
	}
	if req.Name == "" || s.nameTaken("servers", req.Name) {
		return 0, nil, errorf(409, "uniqueness_error", "server name is already used")
	}
	var st *schema.ServerType
	for i := range s.ServerTypes {
		t := &s.ServerTypes[i]
		if t.Name == req.ServerType.Name || (req.ServerType.ID != 0 && t.ID == req.ServerType.ID) {
			st = t
		}
	}
	if st == nil {
		return 0, nil, errorf(400, "invalid_input", "server type %v not found", req.ServerType)
	}
	loc, ok := s.location(req.Location)
	if !ok {
		return 0, nil, errorf(400, "invalid_input", "location %q not found", req.Location)
	}
	orderable := false
	for _, l := range st.Locations {
		if l.Name == loc.Name && l.Available && (l.Deprecation == nil || s.now().Before(l.Deprecation.UnavailableAfter)) {
			orderable = true
		}
	}
	if !orderable {
		return 0, nil, errorf(412, "resource_unavailable", "server type %s is unavailable in %s", st.Name, loc.Name)
	}
	var img *schema.Image
	for i := range s.Images {
		im := &s.Images[i]
		if (im.Name != nil && *im.Name == req.Image.Name && im.Architecture == st.Architecture) || (req.Image.ID != 0 && im.ID == req.Image.ID) {
			img = im
		}
	}
	if img == nil || img.Architecture != st.Architecture {
		return 0, nil, errorf(400, "invalid_input", "image %v not found for %s", req.Image, st.Architecture)
	}
	for _, k := range req.SSHKeys {
		if s.SSHKeys[k] == nil {
			return 0, nil, errorf(400, "invalid_input", "SSH key %d not found", k)
		}
	}
	for _, f := range req.Firewalls {
		if s.Firewalls[f.Firewall] == nil {
			return 0, nil, errorf(400, "invalid_input", "firewall %d not found", f.Firewall)
		}
	}
	pn := req.PublicNet
	if pn == nil {
		pn = &schema.ServerCreatePublicNet{EnableIPv4: true, EnableIPv6: true}
	}
	var ips []*schema.PrimaryIP
	for _, want := range []struct {
		id  int64
		typ string
	}{{pn.IPv4ID, "ipv4"}, {pn.IPv6ID, "ipv6"}} {
		if want.id == 0 {
			continue
		}
		p := s.PrimaryIPs[want.id]
		switch {
		case p == nil:
			return 0, nil, errorf(400, "invalid_input", "primary IP %d not found", want.id)
		case p.Type != want.typ:
			return 0, nil, errorf(422, "primary_ip_version_mismatch", "primary IP %d is %s, not %s", p.ID, p.Type, want.typ)
		case p.AssigneeID != nil:
			return 0, nil, errorf(409, "primary_ip_assigned", "primary IP %d is already assigned to server %d", p.ID, *p.AssigneeID)
		case p.Location.Name != loc.Name:
			return 0, nil, errorf(422, "primary_ip_datacenter_mismatch", "primary IP %d is in %s, not %s", p.ID, p.Location.Name, loc.Name)
		}
		ips = append(ips, p)
	}
	now := s.now()
	status := "running"
	if req.StartAfterCreate != nil && !*req.StartAfterCreate {
		status = "off"
	}
	imgCopy := *img
	v := &schema.Server{ID: s.id(), Name: req.Name, Status: status, Created: now, ServerType: *st, Location: loc, Image: &imgCopy,
		Labels: labels(req.Labels), PrivateNet: []schema.ServerPrivateNet{}, Volumes: []int64{}, LoadBalancers: []int64{},
		PrimaryDiskSize: st.Disk, IncludedTraffic: 21990232555520,
		PublicNet: schema.ServerPublicNet{FloatingIPs: []int64{}, Firewalls: []schema.ServerFirewall{}}}
	s.Servers[v.ID] = v
	for _, p := range ips {
		_ = s.assignIP(p, v) // checked above
	}
	// Without a primary IP named for it, Hetzner creates one that is
	// deleted with the server.
	for _, auto := range []struct {
		enabled bool
		typ     string
		has     bool
	}{{pn.EnableIPv4, "ipv4", pn.IPv4ID != 0}, {pn.EnableIPv6, "ipv6", pn.IPv6ID != 0}} {
		if !auto.enabled || auto.has {
			continue
		}
		p, aerr := s.newPrimaryIP(fmt.Sprintf("primary_ip-%d", s.NextID+1), auto.typ, loc, true, nil)
		if aerr != nil {
			return 0, nil, aerr
		}
		_ = s.assignIP(p, v)
	}
	for _, f := range req.Firewalls {
		s.applyFirewall(s.Firewalls[f.Firewall], v.ID)
	}
	a := s.action("create_server", ref("server", v.ID))
	next := []schema.Action{s.action("start_server", ref("server", v.ID))}
	return 201, schema.ServerCreateResponse{Server: *v, Action: a, NextActions: next}, nil
}

func (s *Server) update(kind string, id int64, body []byte) (int, any, *apiError) {
	var req struct {
		Name       *string            `json:"name"`
		Labels     *map[string]string `json:"labels"`
		AutoDelete *bool              `json:"auto_delete"`
	}
	if err := decode(body, &req); err != nil {
		return 0, nil, err
	}
	if req.Name != nil && s.nameTaken(kind, *req.Name) {
		// Renaming to its own name is fine; to another's is not.
		if st, resp, _ := s.get(kind, id); st == 200 && nameOf(resp) != *req.Name {
			return 0, nil, errorf(409, "uniqueness_error", "name is already used")
		}
	}
	switch kind {
	case "ssh_keys":
		k := s.SSHKeys[id]
		if k == nil {
			break
		}
		if req.Name != nil {
			k.Name = *req.Name
		}
		if req.Labels != nil {
			k.Labels = labels(req.Labels)
		}
		return 200, schema.SSHKeyUpdateResponse{SSHKey: *k}, nil
	case "firewalls":
		f := s.Firewalls[id]
		if f == nil {
			break
		}
		if req.Name != nil {
			f.Name = *req.Name
		}
		if req.Labels != nil {
			f.Labels = labels(req.Labels)
		}
		return 200, schema.FirewallUpdateResponse{Firewall: *f}, nil
	case "primary_ips":
		p := s.PrimaryIPs[id]
		if p == nil {
			break
		}
		if req.Name != nil {
			p.Name = *req.Name
		}
		if req.Labels != nil {
			p.Labels = labels(req.Labels)
		}
		if req.AutoDelete != nil {
			p.AutoDelete = *req.AutoDelete
		}
		return 200, schema.PrimaryIPUpdateResponse{PrimaryIP: *p}, nil
	case "servers":
		v := s.Servers[id]
		if v == nil {
			break
		}
		if req.Name != nil {
			v.Name = *req.Name
		}
		if req.Labels != nil {
			v.Labels = labels(req.Labels)
		}
		return 200, schema.ServerUpdateResponse{Server: *v}, nil
	default:
		return 0, nil, errorf(405, "method_not_allowed", "PUT /%s/%d", kind, id)
	}
	return 0, nil, errorf(404, "not_found", "%s %d not found", kind, id)
}

func nameOf(resp any) string {
	b, _ := json.Marshal(resp)
	var m map[string]struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(b, &m)
	for _, v := range m {
		return v.Name
	}
	return ""
}

func (s *Server) delete(kind string, id int64) (int, any, *apiError) {
	switch kind {
	case "ssh_keys":
		if s.SSHKeys[id] == nil {
			break
		}
		delete(s.SSHKeys, id)
		return 204, nil, nil
	case "firewalls":
		f := s.Firewalls[id]
		if f == nil {
			break
		}
		if len(f.AppliedTo) > 0 {
			return 0, nil, errorf(422, "resource_in_use", "firewall %d is still applied to resources", id)
		}
		delete(s.Firewalls, id)
		return 204, nil, nil
	case "primary_ips":
		p := s.PrimaryIPs[id]
		if p == nil {
			break
		}
		if p.Protection.Delete {
			return 0, nil, errorf(403, "protected", "primary IP %d is delete protected", id)
		}
		if p.AssigneeID != nil {
			if v := s.Servers[*p.AssigneeID]; v != nil && v.Status != "off" {
				return 0, nil, errorf(422, "server_not_stopped", "primary IP %d is assigned to running server %d", id, v.ID)
			}
			s.unassignIP(p)
		}
		delete(s.PrimaryIPs, id)
		return 204, nil, nil
	case "servers":
		v := s.Servers[id]
		if v == nil {
			break
		}
		if v.Protection.Delete {
			return 0, nil, errorf(403, "protected", "server %d is delete protected", id)
		}
		for _, pid := range sortedIDs(s.PrimaryIPs) {
			p := s.PrimaryIPs[pid]
			if p.AssigneeID != nil && *p.AssigneeID == id {
				s.unassignIP(p)
				if p.AutoDelete {
					delete(s.PrimaryIPs, pid)
				}
			}
		}
		for _, f := range s.Firewalls {
			f.AppliedTo = slices.DeleteFunc(f.AppliedTo, func(r schema.FirewallResource) bool { return r.Server != nil && r.Server.ID == id })
		}
		delete(s.Servers, id)
		return 200, schema.ServerDeleteResponse{Action: s.action("delete_server", ref("server", id))}, nil
	default:
		return 0, nil, errorf(405, "method_not_allowed", "DELETE /%s/%d", kind, id)
	}
	return 0, nil, errorf(404, "not_found", "%s %d not found", kind, id)
}

func (s *Server) resourceAction(kind string, id int64, command string, body []byte) (int, any, *apiError) {
	actionResp := func(a schema.Action) (int, any, *apiError) {
		return 201, schema.ActionGetResponse{Action: a}, nil
	}
	switch kind {
	case "primary_ips":
		p := s.PrimaryIPs[id]
		if p == nil {
			return 0, nil, errorf(404, "not_found", "primary IP %d not found", id)
		}
		switch command {
		case "change_protection":
			var req schema.PrimaryIPActionChangeProtectionRequest
			if err := decode(body, &req); err != nil {
				return 0, nil, err
			}
			p.Protection.Delete = req.Delete
			return actionResp(s.action("change_protection", ref("primary_ip", id)))
		case "assign":
			var req schema.PrimaryIPActionAssignRequest
			if err := decode(body, &req); err != nil {
				return 0, nil, err
			}
			v := s.Servers[req.AssigneeID]
			if v == nil {
				return 0, nil, errorf(404, "not_found", "server %d not found", req.AssigneeID)
			}
			if v.Status != "off" {
				return 0, nil, errorf(422, "server_not_stopped", "server %d must be off to assign a primary IP", v.ID)
			}
			if p.AssigneeID != nil && *p.AssigneeID == v.ID {
				return actionResp(s.action("assign_primary_ip", ref("primary_ip", id), ref("server", v.ID)))
			}
			if aerr := s.assignIP(p, v); aerr != nil {
				return 0, nil, aerr
			}
			return actionResp(s.action("assign_primary_ip", ref("primary_ip", id), ref("server", v.ID)))
		case "unassign":
			if p.AssigneeID != nil {
				if v := s.Servers[*p.AssigneeID]; v != nil && v.Status != "off" {
					return 0, nil, errorf(422, "server_not_stopped", "server %d must be off to unassign a primary IP", v.ID)
				}
			}
			s.unassignIP(p)
			return actionResp(s.action("unassign_primary_ip", ref("primary_ip", id)))
		case "change_dns_ptr":
			return actionResp(s.action("change_dns_ptr", ref("primary_ip", id)))
		}
	case "firewalls":
		f := s.Firewalls[id]
		if f == nil {
			return 0, nil, errorf(404, "not_found", "firewall %d not found", id)
		}
		switch command {
		case "set_rules":
			var req schema.FirewallActionSetRulesRequest
			if err := decode(body, &req); err != nil {
				return 0, nil, err
			}
			rules, aerr := firewallRules(req.Rules)
			if aerr != nil {
				return 0, nil, aerr
			}
			f.Rules = rules
			return 201, schema.FirewallActionSetRulesResponse{Actions: []schema.Action{s.action("set_firewall_rules", ref("firewall", id))}}, nil
		case "apply_to_resources":
			var req schema.FirewallActionApplyToResourcesRequest
			if err := decode(body, &req); err != nil {
				return 0, nil, err
			}
			var acts []schema.Action
			for _, r := range req.ApplyTo {
				if r.Server == nil || s.Servers[r.Server.ID] == nil {
					return 0, nil, errorf(404, "firewall_resource_not_found", "resource not found")
				}
				for _, a := range f.AppliedTo {
					if a.Server != nil && a.Server.ID == r.Server.ID {
						return 0, nil, errorf(422, "firewall_already_applied", "firewall %d is already applied to server %d", id, r.Server.ID)
					}
				}
				acts = append(acts, s.applyFirewall(f, r.Server.ID))
			}
			return 201, schema.FirewallActionApplyToResourcesResponse{Actions: orEmpty(acts)}, nil
		case "remove_from_resources":
			var req schema.FirewallActionRemoveFromResourcesRequest
			if err := decode(body, &req); err != nil {
				return 0, nil, err
			}
			var acts []schema.Action
			for _, r := range req.RemoveFrom {
				if r.Server == nil {
					continue
				}
				f.AppliedTo = slices.DeleteFunc(f.AppliedTo, func(a schema.FirewallResource) bool { return a.Server != nil && a.Server.ID == r.Server.ID })
				if v := s.Servers[r.Server.ID]; v != nil {
					v.PublicNet.Firewalls = slices.DeleteFunc(v.PublicNet.Firewalls, func(sf schema.ServerFirewall) bool { return sf.ID == id })
				}
				acts = append(acts, s.action("remove_firewall", ref("firewall", id), ref("server", r.Server.ID)))
			}
			return 201, schema.FirewallActionRemoveFromResourcesResponse{Actions: orEmpty(acts)}, nil
		}
	case "servers":
		v := s.Servers[id]
		if v == nil {
			return 0, nil, errorf(404, "not_found", "server %d not found", id)
		}
		if v.Locked {
			return 0, nil, errorf(423, "locked", "server %d is locked", id)
		}
		switch command {
		case "poweroff", "shutdown":
			v.Status = "off"
			return actionResp(s.action("stop_server", ref("server", id)))
		case "poweron":
			v.Status = "running"
			return actionResp(s.action("start_server", ref("server", id)))
		case "reboot", "reset":
			return actionResp(s.action(command+"_server", ref("server", id)))
		case "change_protection":
			var req struct {
				Delete  *bool `json:"delete"`
				Rebuild *bool `json:"rebuild"`
			}
			if err := decode(body, &req); err != nil {
				return 0, nil, err
			}
			if req.Delete != nil {
				v.Protection.Delete = *req.Delete
			}
			if req.Rebuild != nil {
				v.Protection.Rebuild = *req.Rebuild
			}
			return actionResp(s.action("change_protection", ref("server", id)))
		}
	}
	return 0, nil, errorf(404, "not_found", "the fake Hetzner API does not serve action %s on %s", command, kind)
}

// fingerprint is the MD5 fingerprint Hetzner shows for a public key
// (colon-separated hex of the key blob).
func fingerprint(authorized string) (string, error) {
	f := strings.Fields(authorized)
	if len(f) < 2 {
		return "", fmt.Errorf("not an authorized_keys line")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return "", err
	}
	sum := md5.Sum(blob)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02x", b)
	}
	return strings.Join(parts, ":"), nil
}
