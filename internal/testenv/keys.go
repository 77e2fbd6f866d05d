package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// KeyPair is an ed25519 SSH key pair on disk.
type KeyPair struct {
	PrivatePath    string // OpenSSH private key format, mode 0600
	PublicPath     string // PrivatePath + ".pub", one authorized_keys line
	AuthorizedLine string // "ssh-ed25519 AAAA..." (no comment, no newline)
}

// NewKeyPair writes a fresh ed25519 key pair into dir as name and name.pub.
func NewKeyPair(t testing.TB, dir, name string) KeyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("testenv: generate key: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatalf("testenv: marshal private key: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("testenv: public key: %v", err)
	}
	kp := KeyPair{
		PrivatePath:    filepath.Join(dir, name),
		PublicPath:     filepath.Join(dir, name+".pub"),
		AuthorizedLine: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.WriteFile(kp.PrivatePath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// WriteFile keeps the mode of an existing file; make sure it is 0600 (ssh
	// refuses keys readable by others).
	if err := os.Chmod(kp.PrivatePath, 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.WriteFile(kp.PublicPath, []byte(kp.AuthorizedLine+" "+name+"\n"), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return kp
}

// Signer parses the private key, for in-process SSH clients and servers
// (golang.org/x/crypto/ssh).
func (k KeyPair) Signer(t testing.TB) ssh.Signer {
	t.Helper()
	b, err := os.ReadFile(k.PrivatePath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", k.PrivatePath, err)
	}
	return s
}

// PublicKey parses AuthorizedLine.
func (k KeyPair) PublicKey(t testing.TB) ssh.PublicKey {
	t.Helper()
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.AuthorizedLine))
	if err != nil {
		t.Fatalf("testenv: parse %q: %v", k.AuthorizedLine, err)
	}
	return pk
}

// copyKeyPair copies k's files into dir (same base names) and returns the copy.
func copyKeyPair(t testing.TB, k KeyPair, dir string) KeyPair {
	t.Helper()
	priv, err := os.ReadFile(k.PrivatePath)
	if err != nil {
		t.Fatalf("testenv: host key: %v", err)
	}
	c := KeyPair{
		PrivatePath:    filepath.Join(dir, filepath.Base(k.PrivatePath)),
		PublicPath:     filepath.Join(dir, filepath.Base(k.PrivatePath)+".pub"),
		AuthorizedLine: k.AuthorizedLine,
	}
	if c.PrivatePath == k.PrivatePath {
		return k
	}
	if err := os.WriteFile(c.PrivatePath, priv, 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.WriteFile(c.PublicPath, []byte(k.AuthorizedLine+"\n"), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}
