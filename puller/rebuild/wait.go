package rebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/transport"
	"github.com/hetznercloud/hcloud-go/v2/hcloud"
)

// hello opens a session, exchanges hellos and ends it: it proves the SSH
// pin, the key and the agent, and reports whether the host is ready.
func hello(ctx context.Context, conn transport.Connecter, timeout time.Duration) (*proto.HelloReply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := conn.Connect(ctx, "backup")
	if err != nil {
		return nil, err
	}
	c := proto.NewConn(w, w)
	var reply proto.HelloReply
	err = c.Send(proto.THello, &proto.Hello{Versions: proto.Versions(), Client: "haul " + backup.Version})
	if err == nil {
		err = c.Expect(proto.THelloReply, &reply)
	}
	_ = w.CloseWrite()
	// The agent ends a session closed after hello with a complaint on
	// stderr and a non-zero exit; that is expected here.
	_ = w.Close()
	if err != nil {
		if tail := w.Stderr(); tail != "" {
			return nil, fmt.Errorf("hello: %w (agent said: %s)", err, tail)
		}
		return nil, fmt.Errorf("hello: %w", err)
	}
	return &reply, nil
}

// unreachable reports whether err says nothing answered (no route, refused,
// timed out, closed before the SSH handshake), as opposed to something that
// answered wrongly (another host key, a refused key, an agent error).
func unreachable(err error) bool {
	var hk *transport.HostKeyError
	if errors.As(err, &hk) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "handshake") && (errors.Is(err, io.EOF) || strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset"))
}

// phaseFinalBackup pulls a last snapshot when the old server answers, so
// the rebuild loses nothing written since the last scheduled backup.
func (rb *rebuilder) phaseFinalBackup(ctx context.Context) (string, bool, error) {
	snap := rb.res.Snapshot
	keep := fmt.Sprintf("the restore uses snapshot %s of %s", snap.ID[:8], snap.Time.Format(time.RFC3339))
	if snap.Source == "chosen" {
		return "skipped: --snapshot chose the data; " + keep, true, nil
	}
	if rb.opts.SkipFinalBackup {
		return "skipped (--skip-final-backup); " + keep, true, nil
	}
	if rb.res.Preflight == nil || rb.res.Preflight.Server == nil {
		return "skipped: there is no old server; " + keep, true, nil
	}
	reply, err := hello(ctx, rb.opts.Probe, rb.opts.Host.ConnectTimeout.Or(20*time.Second))
	if err != nil {
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		if unreachable(err) {
			return fmt.Sprintf("skipped: the old server does not answer (%v); %s", err, keep), true, nil
		}
		return "", false, fmt.Errorf("the old server answers, but: %w. Nothing was changed: fix the cause and rerun, or rerun with --skip-final-backup to restore snapshot %s instead", err, snap.ID[:8])
	}
	if !reply.Ready {
		// A host that is not ready never had its data put back: a fresh
		// install (say, after --restart following a tofu apply). Its backup
		// would be empty, and restoring that would lose the data.
		return fmt.Sprintf("skipped: the server answering at %s reports not ready, so it is a fresh install, not the old server with the data; %s", rb.opts.Host.Address, keep), true, nil
	}
	sn, err := rb.opts.FinalBackup(ctx)
	if err != nil {
		return "", false, fmt.Errorf("%w. Nothing was changed on the server: fix the cause and rerun, or rerun with --skip-final-backup to restore snapshot %s of %s instead",
			err, snap.ID[:8], snap.Time.Format(time.RFC3339))
	}
	sn.Source = "final-backup"
	rb.res.Snapshot = sn
	return fmt.Sprintf("snapshot %s; the restore uses it", sn.ID[:8]), false, nil
}

// phaseWaitSSH waits, bounded by ssh_timeout, until the API shows the new
// server running on the kept primary IPs and its SSH answers with the
// pinned host key and the agent.
func (rb *rebuilder) phaseWaitSSH(ctx context.Context) (string, error) {
	timeout := rb.settings.SSHTimeout.Or(config.DefaultSSHTimeout)
	start := rb.now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	srv, err := rb.waitServer(wctx, start, timeout)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", err
	}
	addr := rb.opts.Host.Address
	var last, mismatch error
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		left := time.Until(start.Add(timeout))
		reply, err := hello(wctx, rb.opts.Probe, min(10*time.Second, max(left, time.Second)))
		if err == nil {
			detail := fmt.Sprintf("server %d running; SSH at %s answered with the pinned key after %d attempt(s); agent %s", srv.ID, addr, attempt, reply.Agent)
			if reply.Ready {
				detail += "; WARNING: it already reports ready (its stack may have started without the data; the restore will be refused unless allow_inplace_restore)"
			}
			return detail, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		// An attempt cut short by the end of the wait says nothing new; a
		// host key mismatch, once seen, is the news.
		var hk *transport.HostKeyError
		switch {
		case errors.As(err, &hk):
			mismatch = err
		case wctx.Err() == nil || last == nil:
			last = err
		}
		if wctx.Err() != nil || rb.now().Sub(start) >= timeout {
			break
		}
		if rb.now().Sub(lastLog) >= 10*time.Second {
			rb.logf("%s: waiting for SSH at %s (%s of %s): %v", rb.opts.Host.Name, addr, rb.now().Sub(start).Round(time.Second), timeout, err)
			lastLog = rb.now()
		}
		select {
		case <-wctx.Done():
		case <-time.After(time.Second):
		}
	}
	if mismatch != nil {
		return "", fmt.Errorf("the new server at %s offers another host key than the pinned one, so the kept key was not installed: check that tofu's extra_files_script ran `haul hostkey export`. Do not re-pin unless you checked the new key on the console. (%w)", addr, mismatch)
	}
	return "", fmt.Errorf("no SSH with the pinned host key at %s within ssh_timeout %s; last attempt: %v. Look at the server's console in Hetzner's web UI (still installing? boot failed?), then rerun: it continues with this wait", addr, timeout, last)
}

// waitServer waits until the API shows the server running, then checks it
// is a new server on the kept primary IPs.
func (rb *rebuilder) waitServer(ctx context.Context, start time.Time, timeout time.Duration) (*hcloud.Server, error) {
	c := rb.hcloudClient()
	name := rb.settings.Server
	pf := rb.res.Preflight
	for {
		srv, _, err := c.Server.GetByName(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("%s", apiError(err, name))
		}
		if srv != nil && srv.Status == hcloud.ServerStatusRunning {
			if pf != nil && pf.Server != nil && srv.ID == pf.Server.ID {
				return nil, fmt.Errorf("tofu apply finished, but server %s still has id %d: it was not replaced. Is tofu_resource (%s) the server's address in %s? Fix it, then rerun with --restart",
					name, srv.ID, rb.settings.TofuResource, rb.settings.TofuDir)
			}
			if pf != nil && pf.IPv4 != nil && srv.PublicNet.IPv4.ID != pf.IPv4.ID {
				return nil, fmt.Errorf("the new server %s (id %d) has IPv4 %s, not the kept primary IP %s (%s): DNS points at the kept one. Check public_net in tofu's main.tf",
					name, srv.ID, srv.PublicNet.IPv4.IP, pf.IPv4.Name, pf.IPv4.IP)
			}
			if pf != nil && pf.IPv6 != nil && srv.PublicNet.IPv6.ID != pf.IPv6.ID {
				return nil, fmt.Errorf("the new server %s (id %d) does not have the kept primary IPv6 %s (%s). Check public_net in tofu's main.tf",
					name, srv.ID, pf.IPv6.Name, pf.IPv6.IP)
			}
			rb.res.NewServerID = srv.ID
			return srv, nil
		}
		state := "missing"
		if srv != nil {
			state = string(srv.Status)
		}
		if rb.now().Sub(start) >= timeout {
			return nil, fmt.Errorf("server %s is %s, not running, after ssh_timeout %s: look at it in Hetzner's web UI, then rerun", name, state, timeout)
		}
		rb.logf("%s: server %s is %s; waiting for it to run", rb.opts.Host.Name, name, state)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("server %s is %s, not running, after ssh_timeout %s: look at it in Hetzner's web UI, then rerun", name, state, timeout)
		case <-time.After(5 * time.Second):
		}
	}
}

// phaseStart confirms the host reports ready: the restore wrote its ready
// marker, which the NixOS pangolin module's path unit waits for before it
// starts the stack.
func (rb *rebuilder) phaseStart(ctx context.Context) (string, error) {
	timeout := rb.settings.ReadyTimeout.Or(config.DefaultReadyTimeout)
	start := rb.now()
	var last error
	for {
		reply, err := hello(ctx, rb.opts.Probe, min(20*time.Second, timeout))
		switch {
		case err == nil && reply.Ready:
			return fmt.Sprintf("%s reports ready: the ready marker is in place, the stack starts on it", reply.Host), nil
		case err == nil:
			last = fmt.Errorf("%s answers but reports not ready", reply.Host)
		default:
			last = err
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if rb.now().Sub(start) >= timeout {
			return "", fmt.Errorf("%s does not report ready within ready_timeout %s (%v): the data is restored, but the ready marker is missing, so the stack stays off. Check the agent's ready_marker on the VPS (`haul-agent mark-ready` writes it), then rerun",
				rb.opts.Host.Name, timeout, last)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
