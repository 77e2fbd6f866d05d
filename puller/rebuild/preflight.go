package rebuild

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/haulproject/haul/internal/version"
	"github.com/haulproject/haul/puller/hostkey"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Preflight is what was checked before anything changed.
type Preflight struct {
	Checks []Check `json:"checks"`
	// Server is the server as the API showed it; nil when it is missing.
	Server *ServerInfo `json:"server,omitempty"`
	IPv4   *IPInfo     `json:"primary_ipv4,omitempty"`
	IPv6   *IPInfo     `json:"primary_ipv6,omitempty"`
	// TofuPath is the tofu executable found.
	TofuPath string `json:"tofu"`
}

// Check is one preflight check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// ServerInfo is a Hetzner Cloud server.
type ServerInfo struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Locked bool   `json:"locked"`
	IPv4ID int64  `json:"ipv4_id"`
	IPv4   string `json:"ipv4"`
	IPv6ID int64  `json:"ipv6_id"`
	IPv6   string `json:"ipv6"`
}

// IPInfo is a primary IP.
type IPInfo struct {
	ID               int64  `json:"id"`
	Name             string `json:"name"`
	IP               string `json:"ip"`
	AssigneeID       int64  `json:"assignee_id"`
	AutoDelete       bool   `json:"auto_delete"`
	DeleteProtection bool   `json:"delete_protection"`
}

// SnapshotInfo names the snapshot a rebuild restores.
type SnapshotInfo struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Paths []string  `json:"paths"`
	// Source is "preflight" (the newest snapshot before the rebuild) or
	// "final-backup".
	Source string `json:"source"`
}

// Failed lists the failed checks.
func (p *Preflight) Failed() []Check {
	var out []Check
	for _, c := range p.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

func (p *Preflight) add(name string, ok bool, format string, args ...any) {
	p.Checks = append(p.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

// PreflightError is a preflight that found problems; nothing was changed.
type PreflightError struct{ Failed []Check }

func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight found %d problem(s); nothing was changed:", len(e.Failed))
	for _, c := range e.Failed {
		fmt.Fprintf(&b, "\n  %s: %s", c.Name, c.Detail)
	}
	return b.String()
}

func (rb *rebuilder) hcloudClient() *hcloud.Client {
	opts := []hcloud.ClientOption{
		hcloud.WithToken(rb.opts.Token),
		hcloud.WithApplication("haul", version.Version),
	}
	if ep := rb.settings.HcloudEndpoint; ep != "" {
		opts = append(opts, hcloud.WithEndpoint(ep))
	}
	return hcloud.NewClient(opts...)
}

// preflight checks, without changing anything, that the rebuild can
// succeed: the local pieces (tofu and its version, nix with flakes, the
// install key, the kept host key and its pin, the restore key), the Hetzner objects (token, server, primary IPs) and a
// recent snapshot whose every tree and chunk is in the repository.
func (rb *rebuilder) preflight(ctx context.Context) (*Preflight, *SnapshotInfo, error) {
	p := &Preflight{}
	h := rb.opts.Host

	// Local pieces first: they need no network.
	rb.checkTofu(ctx, p)
	rb.checkNix(ctx, p)
	rb.checkInstallKey(p)
	rb.checkHostKey(p)
	if _, err := os.Stat(h.RestoreIdentityFile); err != nil {
		p.add("restore key", false, "restore_identity_file: %v; the restore needs it", err)
	} else {
		p.add("restore key", true, "%s", h.RestoreIdentityFile)
	}

	rb.preflightHetzner(ctx, p)

	sn := rb.preflightSnapshot(ctx, p)
	if f := p.Failed(); len(f) > 0 {
		return p, sn, &PreflightError{Failed: f}
	}
	return p, sn, nil
}

func (rb *rebuilder) checkHostKey(p *Preflight) {
	h := rb.opts.Host
	k, err := hostkey.Load(rb.opts.Config.HostKeysDir, h.Name)
	if err != nil {
		p.add("host key", false, "%v", err)
		return
	}
	check, err := knownhosts.New(h.KnownHosts)
	if err != nil {
		p.add("host key", false, "known_hosts %s: %v; pin the kept key with `haul hostkey pin --host %s`", h.KnownHosts, err, h.Name)
		return
	}
	addr, _ := net.ResolveTCPAddr("tcp", h.Address)
	if addr == nil {
		addr = &net.TCPAddr{}
	}
	if err := check(h.Address, addr, k.Public); err != nil {
		p.add("host key", false, "the kept key %s is not what %s pins for %s (%v): the rebuilt server would be refused. Pin it with `haul hostkey pin --host %s` (after checking that the running VPS has this key)",
			k.Fingerprint, h.KnownHosts, knownhosts.Normalize(h.Address), err, h.Name)
		return
	}
	p.add("host key", true, "kept key %s (%s) is pinned for %s", k.Fingerprint, k.PrivatePath, knownhosts.Normalize(h.Address))
}

func (rb *rebuilder) preflightHetzner(ctx context.Context, p *Preflight) {
	s := rb.settings
	c := rb.hcloudClient()
	srv, _, err := c.Server.GetByName(ctx, s.Server)
	if err != nil {
		p.add("hetzner", false, "%s", apiError(err, s.Server))
		return
	}
	p.add("hetzner", true, "the API token is accepted")
	switch {
	case srv == nil && rb.opts.AllowMissingServer:
		p.add("server", true, "server %s does not exist; tofu creates it (--allow-missing-server)", s.Server)
	case srv == nil:
		p.add("server", false, "no server named %s in the project this token belongs to. If it was deleted, rerun with --allow-missing-server and tofu creates it; otherwise check server in [hosts.rebuild] and that the token is the project's", s.Server)
	default:
		p.Server = &ServerInfo{
			ID: srv.ID, Name: srv.Name, Status: string(srv.Status), Locked: srv.Locked,
			IPv4ID: srv.PublicNet.IPv4.ID, IPv6ID: srv.PublicNet.IPv6.ID,
		}
		if !srv.PublicNet.IPv4.IsUnspecified() {
			p.Server.IPv4 = srv.PublicNet.IPv4.IP.String()
		}
		if !srv.PublicNet.IPv6.IsUnspecified() {
			p.Server.IPv6 = srv.PublicNet.IPv6.IP.String()
		}
		if srv.Locked {
			p.add("server", false, "server %s (id %d) is locked: an action is running on it (a backup, rescue or another rebuild). Wait until `hcloud server describe %s` shows it unlocked, then rerun", s.Server, srv.ID, s.Server)
		} else {
			p.add("server", true, "server %s: id %d, %s, not locked", s.Server, srv.ID, srv.Status)
		}
	}
	p.IPv4 = rb.checkPrimaryIP(ctx, c, p, "primary ipv4", s.PrimaryIPv4, func(si *ServerInfo) int64 { return si.IPv4ID })
	p.IPv6 = rb.checkPrimaryIP(ctx, c, p, "primary ipv6", s.PrimaryIPv6, func(si *ServerInfo) int64 { return si.IPv6ID })
	if p.IPv4 != nil {
		rb.checkAddress(ctx, p)
	}
}

func (rb *rebuilder) checkPrimaryIP(ctx context.Context, c *hcloud.Client, p *Preflight, check, name string, serverIP func(*ServerInfo) int64) *IPInfo {
	ip, _, err := c.PrimaryIP.GetByName(ctx, name)
	if err != nil {
		p.add(check, false, "%s", apiError(err, name))
		return nil
	}
	if ip == nil {
		p.add(check, false, "no primary IP named %s: without it the new server gets a new address and DNS points at nothing. Create it with tofu (hcloud_primary_ip), or name the kept one in [hosts.rebuild]", name)
		return nil
	}
	info := &IPInfo{ID: ip.ID, Name: ip.Name, AssigneeID: ip.AssigneeID, AutoDelete: ip.AutoDelete, DeleteProtection: ip.Protection.Delete}
	switch {
	case ip.Network != nil:
		info.IP = ip.Network.String()
	case ip.IP != nil:
		info.IP = ip.IP.String()
	}
	var problems []string
	if ip.AutoDelete {
		problems = append(problems, "auto_delete is on, so deleting the old server deletes the address: set auto_delete = false")
	}
	if !ip.Protection.Delete {
		problems = append(problems, "delete protection is off: turn it on (delete_protection = true) so no rebuild or slip can lose the address")
	}
	if p.Server == nil && ip.AssigneeID != 0 {
		problems = append(problems, fmt.Sprintf("it is assigned to server %d, not to %s, so the new server cannot take it", ip.AssigneeID, rb.settings.Server))
	}
	if srv := p.Server; srv != nil && ip.AssigneeID != srv.ID {
		if ip.AssigneeID == 0 {
			problems = append(problems, fmt.Sprintf("it is not assigned, but server %s uses another address", srv.Name))
		} else {
			problems = append(problems, fmt.Sprintf("it is assigned to server %d, not to %s (%d)", ip.AssigneeID, srv.Name, srv.ID))
		}
	}
	if len(problems) > 0 {
		p.add(check, false, "%s (%s): %s", name, info.IP, strings.Join(problems, "; "))
	} else {
		p.add(check, true, "%s (%s): assigned to the server, delete protection on, auto_delete off", name, info.IP)
	}
	return info
}

// checkAddress makes sure haul will wait for the new server where the
// primary IP is: the host's address must be it (or a name resolving to it).
func (rb *rebuilder) checkAddress(ctx context.Context, p *Preflight) {
	h := rb.opts.Host
	host, _, _ := net.SplitHostPort(h.Address)
	var addrs []string
	if net.ParseIP(host) != nil {
		addrs = []string{host}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		found, err := net.DefaultResolver.LookupHost(rctx, host)
		if err != nil {
			p.add("address", true, "%s could not be resolved here (%v); haul connects to it after the rebuild", host, err)
			return
		}
		addrs = found
	}
	_, v6net, _ := net.ParseCIDR(orEmpty(p.IPv6))
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			continue
		}
		if ip.Equal(net.ParseIP(p.IPv4.IP)) || (v6net != nil && v6net.Contains(ip)) {
			p.add("address", true, "%s is the kept primary IP", h.Address)
			return
		}
	}
	p.add("address", false, "host address %s (%s) is not the primary IP %s: after the rebuild haul would wait for the wrong machine. Set address to the primary IPv4", h.Address, strings.Join(addrs, ", "), p.IPv4.IP)
}

func orEmpty(ip *IPInfo) string {
	if ip == nil {
		return ""
	}
	return ip.IP
}

// apiError turns an API error into a sentence with the next step. The
// token never appears in it.
func apiError(err error, what string) string {
	switch {
	case hcloud.IsError(err, hcloud.ErrorCodeUnauthorized):
		return "Hetzner Cloud rejected the API token (unauthorized): check hcloud_token_file (or $HCLOUD_TOKEN); it must be a Read & Write token of the project holding " + what
	case hcloud.IsError(err, hcloud.ErrorCodeForbidden):
		return "the API token may not do this (forbidden): use a Read & Write token"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Sprintf("the Hetzner Cloud API did not answer: %v", err)
	}
	return fmt.Sprintf("Hetzner Cloud API: %v (looking up %s)", err, what)
}

// preflightSnapshot finds the newest snapshot of the host and checks it
// is recent and whole: every tree loads (decrypted and authenticated) and
// every chunk is in the index. `haul check --read-data` reads the chunks
// themselves.
func (rb *rebuilder) preflightSnapshot(ctx context.Context, p *Preflight) *SnapshotInfo {
	h := rb.opts.Host
	r, err := rb.opts.OpenRepo(ctx)
	if err != nil {
		p.add("snapshot", false, "open the repository: %v", err)
		return nil
	}
	defer r.Close()
	spec := rb.opts.Snapshot
	if spec == "" {
		spec = "latest"
	}
	sn, err := r.Find(ctx, h.Name, spec)
	if err != nil {
		if rb.opts.Snapshot != "" {
			p.add("snapshot", false, "--snapshot %s: %v (list them with `haul snapshots`)", rb.opts.Snapshot, err)
			return nil
		}
		p.add("snapshot", false, "%v: the rebuild would have nothing to restore. Run `haul backup --host %s` first", err, h.Name)
		return nil
	}
	info := &SnapshotInfo{ID: sn.ID.String(), Time: sn.Time, Paths: sn.Paths, Source: "preflight"}
	age := rb.now().Sub(sn.Time)
	max := time.Duration(rb.settings.MaxSnapshotAge)
	if rb.opts.Snapshot != "" {
		info.Source = "chosen"
	} else if age > max {
		p.add("snapshot", false, "the newest snapshot of %s, %s, is %s old (max_snapshot_age %s): take a backup first (`haul backup --host %s`), or raise max_snapshot_age if this is the data you want back",
			h.Name, sn.ID.Str(), age.Round(time.Minute), max, h.Name)
		return info
	}
	files, err := verifySnapshot(ctx, r, sn)
	if err != nil {
		p.add("snapshot", false, "snapshot %s of %s is damaged: %v. Run `haul check`; restore an older snapshot by hand if needed", sn.ID.Str(), h.Name, err)
		return info
	}
	chosen := ""
	if info.Source == "chosen" {
		chosen = " (chosen with --snapshot)"
	}
	p.add("snapshot", true, "%s of %s%s, %s old: %d files, every tree readable, every chunk indexed", sn.ID.Str(), sn.Time.Format(time.RFC3339), chosen, age.Round(time.Second), files)
	return info
}

func verifySnapshot(ctx context.Context, r *repo.Repo, sn *repo.Snapshot) (files int, err error) {
	if sn.Tree == nil {
		return 0, fmt.Errorf("it has no tree")
	}
	blobs := restic.NewBlobSet()
	if err := data.FindUsedBlobs(ctx, r.Repository, restic.IDs{*sn.Tree}, blobs, nil); err != nil {
		return 0, err
	}
	for h := range blobs {
		if h.Type != restic.DataBlob {
			continue
		}
		if _, ok := r.LookupBlobSize(restic.DataBlob, h.ID); !ok {
			return 0, fmt.Errorf("chunk %s is not in the index", h.ID.Str())
		}
	}
	// Count the files by walking again; cheap next to the tree loads, which
	// the repository caches.
	var walk func(id restic.ID) error
	walk = func(id restic.ID) error {
		it, err := data.LoadTree(ctx, r, id)
		if err != nil {
			return err
		}
		for item := range it {
			if item.Error != nil {
				return item.Error
			}
			switch item.Node.Type {
			case data.NodeTypeFile:
				files++
			case data.NodeTypeDir:
				if item.Node.Subtree != nil {
					if err := walk(*item.Node.Subtree); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return files, walk(*sn.Tree)
}
