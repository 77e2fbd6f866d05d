// Package hostkey keeps a VPS's SSH host keypair on the NAS, so that a
// rebuilt machine is given the same key (nixos-anywhere's extra files) and
// the puller's pin in known_hosts survives every rebuild.
package hostkey

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/haulproject/haul/internal/atomicfile"
	"golang.org/x/crypto/ssh"
)

// Key is a host's kept keypair.
type Key struct {
	Host string `json:"host"`
	// Type is the key's algorithm as sshd names its files: ed25519, ecdsa
	// or rsa.
	Type        string `json:"type"`
	PrivatePath string `json:"private_path"` // 0600
	PublicPath  string `json:"public_path"`  // PrivatePath + ".pub"
	Fingerprint string `json:"fingerprint"`  // SHA256:…
	// Authorized is the public half as one line: "ssh-ed25519 AAAA…".
	Authorized string        `json:"public_key"`
	Public     ssh.PublicKey `json:"-"`
}

// FileName is the name sshd gives this key under /etc/ssh.
func (k *Key) FileName() string { return "ssh_host_" + k.Type + "_key" }

// hostDir is where host's key lives: <dir>/<host>/, root-only.
func hostDir(dir, host string) string { return filepath.Join(dir, host) }

// Load reads host's kept key from dir.
func Load(dir, host string) (*Key, error) {
	matches, _ := filepath.Glob(filepath.Join(hostDir(dir, host), "ssh_host_*_key"))
	switch len(matches) {
	case 0:
		return nil, fmt.Errorf("no host key kept for %s in %s: create one with `haul hostkey generate --host %s` (or import the VPS's with `haul hostkey import`)", host, hostDir(dir, host), host)
	case 1:
	default:
		return nil, fmt.Errorf("%s holds several host keys (%s); keep one", hostDir(dir, host), strings.Join(matches, ", "))
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		return nil, fmt.Errorf("read host key of %s: %w", host, err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", matches[0], err)
	}
	k := describe(host, matches[0], signer.PublicKey())
	if fi, err := os.Stat(k.PrivatePath); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("host key %s is readable by others (mode %v): chmod 600 it; whoever reads it can impersonate %s", k.PrivatePath, fi.Mode().Perm(), host)
	}
	return k, nil
}

func describe(host, path string, pub ssh.PublicKey) *Key {
	typ := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "ssh_host_"), "_key")
	return &Key{
		Host:        host,
		Type:        typ,
		PrivatePath: path,
		PublicPath:  path + ".pub",
		Fingerprint: ssh.FingerprintSHA256(pub),
		Authorized:  strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		Public:      pub,
	}
}

// Generate makes a new ed25519 host key for host and keeps it in dir. An
// existing key is replaced only with force: every pin of the old key stops
// matching.
func Generate(dir, host string, force bool) (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return keep(dir, host, priv, force)
}

// Import keeps the private key in file (OpenSSH or PEM, unencrypted) as
// host's key: the key the VPS already has, so its existing pins stay valid.
func Import(dir, host, file string, force bool) (*Key, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("import host key: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("import host key: %s is encrypted; sshd's host keys are not (remove the passphrase from a copy with ssh-keygen -p)", file)
	}
	if err != nil {
		return nil, fmt.Errorf("import host key: %s: %w", file, err)
	}
	return keep(dir, host, raw, force)
}

func keyType(priv any) (string, error) {
	switch k := priv.(type) {
	case ed25519.PrivateKey, *ed25519.PrivateKey:
		return "ed25519", nil
	case *ecdsa.PrivateKey:
		return "ecdsa", nil
	case *rsa.PrivateKey:
		if k.N.BitLen() < 3072 {
			return "", fmt.Errorf("RSA host key has %d bits; use at least 3072, or ed25519", k.N.BitLen())
		}
		return "rsa", nil
	}
	return "", fmt.Errorf("host key type %T is not supported (ed25519, ecdsa or rsa)", priv)
}

func keep(dir, host string, priv any, force bool) (*Key, error) {
	if dir == "" {
		return nil, fmt.Errorf("host_keys_dir is not set")
	}
	typ, err := keyType(priv)
	if err != nil {
		return nil, err
	}
	hd := hostDir(dir, host)
	if old, _ := filepath.Glob(filepath.Join(hd, "ssh_host_*_key")); len(old) > 0 {
		if !force {
			return nil, fmt.Errorf("a host key for %s is already kept (%s); replacing it breaks every pin of it and the running VPS keeps the old one. Use --force if that is what you want", host, old[0])
		}
		for _, p := range old {
			_ = os.Remove(p)
			_ = os.Remove(p + ".pub")
		}
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "root@"+host)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(hd, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(hd, 0o700); err != nil {
		return nil, err
	}
	k := describe(host, filepath.Join(hd, "ssh_host_"+typ+"_key"), signer.PublicKey())
	if err := atomicfile.WriteFile(k.PrivatePath, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", k.PrivatePath, err)
	}
	if err := atomicfile.WriteFile(k.PublicPath, []byte(k.Authorized+" root@"+host+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", k.PublicPath, err)
	}
	return k, nil
}

// Export writes the key as the new machine needs it, below root:
// root/etc/ssh/ssh_host_<type>_key (0600) and its .pub (0644). That is
// the layout nixos-anywhere's extra files copy onto the installed system,
// so sshd starts with the kept key. It returns the paths written.
func Export(k *Key, root string) ([]string, error) {
	priv, err := os.ReadFile(k.PrivatePath)
	if err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(k.PublicPath)
	if err != nil {
		pub = []byte(k.Authorized + "\n")
	}
	sshDir := filepath.Join(root, "etc", "ssh")
	if err := os.MkdirAll(sshDir, 0o755); err != nil {
		return nil, fmt.Errorf("export host key: %w", err)
	}
	privOut := filepath.Join(sshDir, k.FileName())
	if err := atomicfile.WriteFile(privOut, priv, 0o600); err != nil {
		return nil, fmt.Errorf("export host key: %w", err)
	}
	if err := atomicfile.WriteFile(privOut+".pub", pub, 0o644); err != nil {
		return nil, fmt.Errorf("export host key: %w", err)
	}
	return []string{privOut, privOut + ".pub"}, nil
}
