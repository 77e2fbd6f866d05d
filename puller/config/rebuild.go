package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Rebuild is how `haul rebuild` recreates a host ([hosts.rebuild]): the
// Hetzner Cloud objects it checks, the OpenTofu configuration that
// replaces the server, and the health check that says it is back.
type Rebuild struct {
	// HcloudTokenFile holds the Hetzner Cloud API token (Read & Write, of
	// the project holding the server). Without it, $HCLOUD_TOKEN is used.
	// The token is never printed or put on a command line: tofu gets it
	// as TF_VAR_hcloud_token.
	HcloudTokenFile string `toml:"hcloud_token_file"`
	// HcloudEndpoint is the API's URL. Default: Hetzner's.
	HcloudEndpoint string `toml:"hcloud_endpoint"`
	// Server is the server's name in Hetzner Cloud. Default: the host's name.
	Server string `toml:"server"`
	// PrimaryIPv4 and PrimaryIPv6 name the kept primary IPs. Default:
	// <server>-ipv4 and <server>-ipv6 (as tofu/ names them).
	PrimaryIPv4 string `toml:"primary_ipv4"`
	PrimaryIPv6 string `toml:"primary_ipv6"`

	// Tofu is the OpenTofu executable. Default: tofu on PATH.
	Tofu string `toml:"tofu"`
	// TofuDir is the directory holding the configuration (tofu/ of this
	// repository, with its terraform.tfvars and state).
	TofuDir string `toml:"tofu_dir"`
	// TofuResource is the server's address in that configuration, the one
	// `tofu apply -replace=` replaces. Default: hcloud_server.vps.
	TofuResource string `toml:"tofu_resource"`
	// TofuArgs are added to `tofu apply`, e.g. ["-var-file=prod.tfvars"].
	TofuArgs []string `toml:"tofu_args"`
	// InstallIdentityFile is the private key nixos-anywhere logs in to the
	// fresh server with (the private half of tofu's admin_ssh_public_key).
	// haul passes it to tofu as TF_VAR_install_ssh_key. Unset: nixos-anywhere
	// uses the ssh-agent at $SSH_AUTH_SOCK, which must hold that key.
	InstallIdentityFile string `toml:"install_identity_file"`

	// MaxSnapshotAge is how old the newest snapshot may be for preflight to
	// pass. Default: the host's max_age, else 48h.
	MaxSnapshotAge Duration `toml:"max_snapshot_age"`
	// SSHTimeout bounds the wait for the new server's SSH after tofu.
	// Default 15m.
	SSHTimeout Duration `toml:"ssh_timeout"`
	// ReadyTimeout bounds the wait for the host to report ready after the
	// restore. Default 2m.
	ReadyTimeout Duration `toml:"ready_timeout"`

	// Dashboard is Pangolin's dashboard domain: the SNI name and Host of
	// the health check's HTTPS request.
	Dashboard string `toml:"dashboard"`
	// HealthAddress is where the health check connects (host:port).
	// Default: the primary IPv4, port 443.
	HealthAddress string `toml:"health_address"`
	// HealthPath is requested with GET; a 2xx or 3xx answer is healthy.
	// Default "/".
	HealthPath string `toml:"health_path"`
	// HealthCAFile verifies the dashboard's certificate against these PEM
	// certificates instead of the system's roots.
	HealthCAFile string `toml:"health_ca_file"`
	// HealthTimeout bounds the wait for a healthy answer (containers
	// starting, Traefik loading its certificates). Default 5m.
	HealthTimeout Duration `toml:"health_timeout"`
}

// RebuildDefaults are the defaults of [hosts.rebuild].
const (
	DefaultTofuResource   = "hcloud_server.vps"
	DefaultSSHTimeout     = 15 * time.Minute
	DefaultReadyTimeout   = 2 * time.Minute
	DefaultHealthTimeout  = 5 * time.Minute
	DefaultMaxSnapshotAge = 48 * time.Hour
)

var tofuAddress = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_-]*(\[[^\]]+\])?$`)

func (r *Rebuild) validate(base string, h *Host) error {
	if r == nil {
		return nil
	}
	if h.Address == "" {
		return fmt.Errorf("a rebuilt host is reached over SSH: set address (the primary IPv4) rather than command")
	}
	if h.RestoreIdentityFile == "" {
		return fmt.Errorf("restore_identity_file is not set: the rebuild restores the data with the restore key")
	}
	if r.Server == "" {
		r.Server = h.Name
	}
	if r.PrimaryIPv4 == "" {
		r.PrimaryIPv4 = r.Server + "-ipv4"
	}
	if r.PrimaryIPv6 == "" {
		r.PrimaryIPv6 = r.Server + "-ipv6"
	}
	if r.Tofu == "" {
		r.Tofu = "tofu"
	} else if strings.ContainsRune(r.Tofu, '/') {
		r.Tofu = abs(base, r.Tofu)
	}
	if r.TofuDir == "" {
		return fmt.Errorf("tofu_dir is not set: the directory holding tofu/'s configuration and state")
	}
	r.TofuDir = abs(base, r.TofuDir)
	if r.TofuResource == "" {
		r.TofuResource = DefaultTofuResource
	}
	if !tofuAddress.MatchString(r.TofuResource) {
		return fmt.Errorf("tofu_resource %q is not a resource address like hcloud_server.vps", r.TofuResource)
	}
	for _, a := range r.TofuArgs {
		if strings.HasPrefix(a, "-replace") || a == "-destroy" || strings.Contains(a, "hcloud_token") {
			return fmt.Errorf("tofu_args %q: haul sets -replace itself, never destroys, and passes the token in the environment", a)
		}
	}
	r.HcloudTokenFile = abs(base, r.HcloudTokenFile)
	r.InstallIdentityFile = abs(base, r.InstallIdentityFile)
	r.HealthCAFile = abs(base, r.HealthCAFile)
	if r.Dashboard == "" {
		return fmt.Errorf("dashboard is not set: Pangolin's dashboard domain, which the health check asks for")
	}
	if r.HealthAddress != "" {
		if _, _, err := net.SplitHostPort(r.HealthAddress); err != nil {
			return fmt.Errorf("health_address %q: %v (host:port)", r.HealthAddress, err)
		}
	}
	if r.HealthPath == "" {
		r.HealthPath = "/"
	}
	if !strings.HasPrefix(r.HealthPath, "/") {
		return fmt.Errorf("health_path %q must start with /", r.HealthPath)
	}
	if r.MaxSnapshotAge == 0 {
		r.MaxSnapshotAge = Duration(h.MaxAge.Or(DefaultMaxSnapshotAge))
	}
	return nil
}

// HcloudToken reads the API token: from hcloud_token_file, else
// $HCLOUD_TOKEN. Its value never appears in an error.
func (r *Rebuild) HcloudToken() (string, error) {
	if r.HcloudTokenFile != "" {
		b, err := os.ReadFile(r.HcloudTokenFile)
		if err != nil {
			return "", fmt.Errorf("read hcloud_token_file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("hcloud_token_file %s is empty", r.HcloudTokenFile)
		}
		return t, nil
	}
	if t := strings.TrimSpace(os.Getenv("HCLOUD_TOKEN")); t != "" {
		return t, nil
	}
	return "", fmt.Errorf("no Hetzner Cloud API token: set hcloud_token_file in [hosts.rebuild] (a file only root reads) or export HCLOUD_TOKEN")
}

// HostKeysDirDefault is where host keys are kept when host_keys_dir is not
// set: "hostkeys" beside the config file.
func hostKeysDirDefault(base string) string { return filepath.Join(base, "hostkeys") }
