package quiesce

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Systemctl stops and starts systemd units by running systemctl (argv, no
// shell). Containers that NixOS declares (virtualisation.oci-containers)
// are units: a `docker stop` on one is undone by the unit's restart, so
// they are stopped through systemd.
type Systemctl struct {
	// Path of the executable; empty: systemctl on PATH, then the usual
	// places (NixOS keeps it in /run/current-system/sw/bin).
	Path string
}

var systemctlDirs = []string{"/run/current-system/sw/bin", "/usr/bin", "/bin"}

func (s *Systemctl) path() (string, error) {
	if s.Path != "" {
		return s.Path, nil
	}
	if p, err := exec.LookPath("systemctl"); err == nil {
		return p, nil
	}
	for _, d := range systemctlDirs {
		p := d + "/systemctl"
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("systemctl not found on PATH or in %s: quiesce.units needs systemd", strings.Join(systemctlDirs, ", "))
}

// run runs systemctl with args and returns its stdout.
func (s *Systemctl) run(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	bin, err := s.path()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("systemctl %s did not finish within %v", strings.Join(args, " "), timeout)
	}
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), fmt.Errorf("systemctl %s: %s", strings.Join(args, " "), msg)
	}
	return out.String(), nil
}

// IsActive reports whether unit is active (or activating, reloading);
// a unit systemd does not know is an error.
func (s *Systemctl) IsActive(ctx context.Context, unit string, timeout time.Duration) (bool, error) {
	out, err := s.run(ctx, timeout, "show", "--property=LoadState,ActiveState", "--", unit)
	if err != nil {
		return false, fmt.Errorf("unit %s: %w", unit, err)
	}
	props := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			props[k] = v
		}
	}
	switch props["LoadState"] {
	case "loaded":
	case "not-found":
		return false, fmt.Errorf("unit %s not found: check quiesce.units (`systemctl list-units --all` lists them)", unit)
	case "":
		return false, fmt.Errorf("unit %s: systemctl show printed no LoadState: %q", unit, out)
	default:
		return false, fmt.Errorf("unit %s cannot be used: its load state is %q (see `systemctl status %s`)", unit, props["LoadState"], unit)
	}
	switch props["ActiveState"] {
	case "active", "activating", "reloading":
		return true, nil
	}
	return false, nil
}

// Stop stops unit and waits for it; a stop that fails or outlasts timeout
// is an error naming the unit.
func (s *Systemctl) Stop(ctx context.Context, unit string, timeout time.Duration) error {
	if _, err := s.run(ctx, timeout, "stop", "--", unit); err != nil {
		return fmt.Errorf("unit %s will not stop: %w (see `systemctl status %s`)", unit, err, unit)
	}
	active, err := s.IsActive(ctx, unit, timeout)
	if err != nil {
		return err
	}
	if active {
		return fmt.Errorf("unit %s will not stop: systemctl stop returned but it is still active (another unit may pull it back in; see `systemctl status %s`)", unit, unit)
	}
	return nil
}

// Start starts unit and waits until systemd reports it started.
func (s *Systemctl) Start(ctx context.Context, unit string, timeout time.Duration) error {
	if _, err := s.run(ctx, timeout, "start", "--", unit); err != nil {
		return fmt.Errorf("unit %s did not start: %w (see `systemctl status %s`)", unit, err, unit)
	}
	return nil
}
