package fakehcloud_test

import (
	"context"
	"testing"

	"github.com/haulproject/haul/tofu/fakehcloud"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"
)

// The fake through hcloud-go, as haul and the provider use it: the rules
// a rebuild relies on hold.
func TestRules(t *testing.T) {
	ctx := context.Background()
	api := fakehcloud.Start(t, "token")
	c := hcloud.NewClient(hcloud.WithToken("token"), hcloud.WithEndpoint(api.URL), hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(0)}))
	fsn1 := &hcloud.Location{Name: "fsn1"}
	ip := func(name string, typ hcloud.PrimaryIPType) *hcloud.PrimaryIP {
		res, _, err := c.PrimaryIP.Create(ctx, hcloud.PrimaryIPCreateOpts{Name: name, Type: typ, Location: "fsn1", AssigneeType: "server", AutoDelete: hcloud.Ptr(false)})
		if err != nil {
			t.Fatal(err)
		}
		a, _, err := c.PrimaryIP.ChangeProtection(ctx, hcloud.PrimaryIPChangeProtectionOpts{ID: res.PrimaryIP.ID, Delete: true})
		if err != nil || c.Action.WaitFor(ctx, a) != nil {
			t.Fatal(err)
		}
		return res.PrimaryIP
	}
	v4, v6 := ip("vps-ipv4", hcloud.PrimaryIPTypeIPv4), ip("vps-ipv6", hcloud.PrimaryIPTypeIPv6)
	if _, _, err := c.PrimaryIP.Create(ctx, hcloud.PrimaryIPCreateOpts{Name: "vps-ipv4", Type: hcloud.PrimaryIPTypeIPv4, Location: "fsn1", AssigneeType: "server"}); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Errorf("a second primary IP named vps-ipv4: %v", err)
	}
	create := func(typ string) (*hcloud.Server, error) {
		res, _, err := c.Server.Create(ctx, hcloud.ServerCreateOpts{
			Name: "vps", ServerType: &hcloud.ServerType{Name: typ}, Image: &hcloud.Image{Name: "debian-12"}, Location: fsn1,
			PublicNet: &hcloud.ServerCreatePublicNet{EnableIPv4: true, EnableIPv6: true, IPv4: v4, IPv6: v6},
		})
		if err != nil {
			return nil, err
		}
		if err := c.Action.WaitFor(ctx, append([]*hcloud.Action{res.Action}, res.NextActions...)...); err != nil {
			return nil, err
		}
		return res.Server, nil
	}
	if _, err := create("cx22"); !hcloud.IsError(err, hcloud.ErrorCodeResourceUnavailable) {
		t.Fatalf("creating a retired cx22: %v", err)
	}
	api.SetServerTypeAvailable("cx23", "fsn1", false)
	if _, err := create("cx23"); !hcloud.IsError(err, hcloud.ErrorCodeResourceUnavailable) {
		t.Fatalf("creating an unavailable cx23: %v", err)
	}
	api.SetServerTypeAvailable("cx23", "fsn1", true)
	srv, err := create("cx23")
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := c.Server.GetByName(ctx, "vps")
	if err != nil || got.ID != srv.ID || got.PublicNet.IPv4.ID != v4.ID || got.PublicNet.IPv6.ID != v6.ID || got.Status != hcloud.ServerStatusRunning {
		t.Fatalf("server %+v, %v", got, err)
	}
	if _, err := create("cx23"); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Errorf("a second server named vps: %v", err)
	}
	if _, err := c.PrimaryIP.Delete(ctx, v4); !hcloud.IsError(err, hcloud.ErrorCodeProtected) {
		t.Errorf("deleting a protected primary IP: %v", err)
	}
	res, _, err := c.Server.DeleteWithResult(ctx, srv)
	if err != nil || c.Action.WaitFor(ctx, res.Action) != nil {
		t.Fatal(err)
	}
	for _, want := range []*hcloud.PrimaryIP{v4, v6} {
		p, _, err := c.PrimaryIP.GetByID(ctx, want.ID)
		if err != nil || p == nil || p.AssigneeID != 0 {
			t.Errorf("primary IP %d after the server's delete: %+v %v (want kept, unassigned)", want.ID, p, err)
		}
	}
	var deletes int
	for _, r := range api.Requests() {
		if r.Method == "DELETE" {
			deletes++
		}
	}
	if deletes != 2 {
		t.Errorf("%d DELETEs logged, want 2", deletes)
	}
	bad := hcloud.NewClient(hcloud.WithToken("wrong"), hcloud.WithEndpoint(api.URL))
	if _, _, err := bad.Server.GetByName(ctx, "vps"); !hcloud.IsError(err, hcloud.ErrorCodeUnauthorized) {
		t.Errorf("a wrong token: %v", err)
	}
}
