package rebuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsimple"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// MinTofuVersion is the oldest OpenTofu tofu/ accepts (versions.tf's
// required_version): terraform-provider-hcloud v1.68.0 is tested with
// OpenTofu 1.10 to 1.12 (its .github/workflows/test.yml).
const MinTofuVersion = "1.10.0"

const installTofu = "install OpenTofu " + MinTofuVersion + " or later (https://opentofu.org/docs/intro/install/) or set tofu in [hosts.rebuild] to its path"

// checkTofu finds tofu, asks its version and looks for the configuration.
func (rb *rebuilder) checkTofu(ctx context.Context, p *Preflight) {
	s := rb.settings
	path, err := exec.LookPath(s.Tofu)
	if err != nil {
		p.add("tofu", false, "%s not found (%v): %s", s.Tofu, err, installTofu)
		return
	}
	version, err := tofuVersion(ctx, path)
	if err != nil {
		p.add("tofu", false, "%s: %v: %s", path, err, installTofu)
		return
	}
	if !versionAtLeast(version, MinTofuVersion) {
		p.add("tofu", false, "%s is OpenTofu %s, but tofu/ needs %s or later (required_version in versions.tf): %s", path, version, MinTofuVersion, installTofu)
		return
	}
	if tfs, _ := filepath.Glob(filepath.Join(s.TofuDir, "*.tf")); len(tfs) == 0 {
		p.add("tofu", false, "tofu_dir %s holds no *.tf files: point it at the tofu/ configuration", s.TofuDir)
		return
	}
	if _, err := os.Stat(filepath.Join(s.TofuDir, ".terraform")); err != nil {
		p.add("tofu", false, "tofu_dir %s has not been initialised (no .terraform/): run `tofu init` there once (it needs the network for the providers and nixos-anywhere's module)", s.TofuDir)
		return
	}
	p.TofuPath = path
	p.add("tofu", true, "%s (OpenTofu %s), configuration in %s, replaces %s", path, version, s.TofuDir, s.TofuResource)
}

// tofuVersion runs `tofu version -json` (OpenTofu keeps Terraform's
// terraform_version key).
func tofuVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "version", "-json")
	cmd.Env = append(cleanEnv(), "TF_IN_AUTOMATION=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("`tofu version -json` failed: %v (%s)", err, sanitize(errb.String(), 200))
	}
	var v struct {
		Version string `json:"terraform_version"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Version == "" {
		return "", fmt.Errorf("`tofu version -json` printed no version (%s): is it OpenTofu?", sanitize(out.String(), 200))
	}
	return v.Version, nil
}

// versionAtLeast compares dotted versions numerically ("1.12.6-rc1" is 1.12.6).
func versionAtLeast(have, want string) bool {
	parse := func(v string) [3]int {
		v = strings.TrimPrefix(v, "v")
		if i := strings.IndexAny(v, "-+"); i >= 0 {
			v = v[:i]
		}
		var out [3]int
		for i, f := range strings.SplitN(v, ".", 3) {
			out[i], _ = strconv.Atoi(f)
		}
		return out
	}
	h, w := parse(have), parse(want)
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}

// checkNix: nixos-anywhere's module builds the system on this machine
// with `nix build <flake>#…` (terraform/nix-build/nix-build.sh at 1.13.0,
// without --extra-experimental-features), so nix must be installed with
// nix-command and flakes enabled; that script reads its input with jq.
// The build fetches the flake's inputs, so it also needs the network.
func (rb *rebuilder) checkNix(ctx context.Context, p *Preflight) {
	const enable = "add `experimental-features = nix-command flakes` to /etc/nix/nix.conf (or ~/.config/nix/nix.conf, or export NIX_CONFIG)"
	path, err := exec.LookPath("nix")
	if err != nil {
		p.add("nix", false, "nix not found on PATH: nixos-anywhere builds nixosConfigurations.vps with it on this machine. Install Nix (https://nixos.org/download, or your distribution's nix package), then %s", enable)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// `nix show-config` exists from Nix 2.4 on (later an alias of `nix
	// config show`); it needs nix-command itself, which is the first check.
	cmd := exec.CommandContext(ctx, path, "show-config")
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if strings.Contains(errb.String(), "nix-command") {
			p.add("nix", false, "%s has the nix-command feature disabled, and nixos-anywhere needs it and flakes: %s", path, enable)
		} else {
			p.add("nix", false, "`%s show-config` failed: %v (%s)", path, err, sanitize(errb.String(), 200))
		}
		return
	}
	var features []string
	for _, line := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "experimental-features" {
			features = strings.Fields(v)
		}
	}
	if !contains(features, "flakes") || !contains(features, "nix-command") {
		p.add("nix", false, "%s has experimental-features %q, without flakes: nixos-anywhere builds the flake's nixosConfigurations.vps. %s", path, strings.Join(features, " "), enable)
		return
	}
	if _, err := exec.LookPath("jq"); err != nil {
		p.add("nix", false, "jq not found on PATH: nixos-anywhere's module runs it to read its inputs. Install jq (apt-get install jq, or nix profile install nixpkgs#jq)")
		return
	}
	p.add("nix", true, "%s with flakes; jq present (the build fetches the flake's inputs: this machine needs the network)", path)
}

// checkInstallKey makes sure nixos-anywhere can log in to the fresh
// server: install_identity_file is a readable, unencrypted private key,
// or else the ssh-agent holds a key; and, when terraform.tfvars names
// admin_ssh_public_key, that key is the one offered.
func (rb *rebuilder) checkInstallKey(p *Preflight) {
	s := rb.settings
	want, wantSource := rb.adminPublicKey()
	if f := s.InstallIdentityFile; f != "" {
		signer, err := loadInstallKey(f)
		if err != nil {
			p.add("install key", false, "%v", err)
			return
		}
		fp := ssh.FingerprintSHA256(signer.PublicKey())
		if want != nil && !bytes.Equal(want.Marshal(), signer.PublicKey().Marshal()) {
			p.add("install key", false, "install_identity_file %s is %s, but %s is %s: Hetzner puts that one on the fresh server, so nixos-anywhere could not log in. Point install_identity_file at its private half", f, fp, wantSource, ssh.FingerprintSHA256(want))
			return
		}
		p.add("install key", true, "install_identity_file %s (%s) loads; tofu gets it as TF_VAR_install_ssh_key", f, fp)
		return
	}
	const fix = "set install_identity_file in [hosts.rebuild] to the private half of tofu's admin_ssh_public_key, or start an ssh-agent holding it (eval $(ssh-agent); ssh-add <key>) for haul"
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		p.add("install key", false, "no install key: install_identity_file is not set and SSH_AUTH_SOCK is empty, so nixos-anywhere has no key to log in to the fresh server with: %s", fix)
		return
	}
	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		p.add("install key", false, "the ssh-agent at SSH_AUTH_SOCK=%s does not answer (%v): %s", sock, err, fix)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	keys, err := agent.NewClient(conn).List()
	if err != nil || len(keys) == 0 {
		p.add("install key", false, "the ssh-agent at %s holds no key (%v): %s", sock, err, fix)
		return
	}
	if want != nil {
		for _, k := range keys {
			if bytes.Equal(k.Marshal(), want.Marshal()) {
				p.add("install key", true, "the ssh-agent holds %s (%s)", ssh.FingerprintSHA256(want), wantSource)
				return
			}
		}
		p.add("install key", false, "the ssh-agent holds %d key(s), but not %s from %s, the one Hetzner puts on the fresh server: ssh-add its private half, or set install_identity_file", len(keys), ssh.FingerprintSHA256(want), wantSource)
		return
	}
	p.add("install key", true, "the ssh-agent holds %d key(s) (terraform.tfvars names no admin_ssh_public_key to compare with)", len(keys))
}

func loadInstallKey(path string) (ssh.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("install_identity_file: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("install_identity_file %s is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("install_identity_file: %v", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	var pp *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &pp):
		return nil, fmt.Errorf("install_identity_file %s is passphrase-protected, and nixos-anywhere cannot ask for the passphrase: load it into an ssh-agent (ssh-add) and unset install_identity_file, or use an unencrypted key only root reads", path)
	case err != nil:
		return nil, fmt.Errorf("install_identity_file %s is not an SSH private key (%v): it must be the private half of tofu's admin_ssh_public_key", path, err)
	}
	return signer, nil
}

// adminPublicKey reads admin_ssh_public_key from tofu_dir's
// terraform.tfvars, if it is there.
func (rb *rebuilder) adminPublicKey() (ssh.PublicKey, string) {
	path := filepath.Join(rb.settings.TofuDir, "terraform.tfvars")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, ""
	}
	var vars struct {
		Key  *string  `hcl:"admin_ssh_public_key"`
		Rest hcl.Body `hcl:",remain"`
	}
	if err := hclsimple.Decode("terraform.tfvars.hcl", b, nil, &vars); err != nil || vars.Key == nil {
		return nil, ""
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*vars.Key))
	if err != nil {
		return nil, ""
	}
	return k, "admin_ssh_public_key in " + path
}

// installKeyEnv is TF_VAR_install_ssh_key for tofu, when install_identity_file is set.
func (rb *rebuilder) installKeyEnv() ([]string, error) {
	f := rb.settings.InstallIdentityFile
	if f == "" {
		return nil, nil
	}
	if _, err := loadInstallKey(f); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, err
	}
	return []string{"TF_VAR_install_ssh_key=" + string(b)}, nil
}

// cleanEnv is haul's environment without the variables haul sets for tofu.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "TF_VAR_"), k == "HCLOUD_TOKEN", k == "HCLOUD_ENDPOINT", k == "TF_IN_AUTOMATION":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sanitize shortens a tool's output for a message and drops control
// characters, so nothing it printed can drive the terminal.
func sanitize(s string, max int) string {
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
