// Package setup creates the NAS's secrets for `haul init`: the repository
// password file and the SSH key pair the NAS pulls with. Neither is ever
// overwritten: a lost password makes a repository unreadable, a replaced
// key locks the NAS out of the VPS.
package setup

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// AgentCommand is the forced command the VPS's authorized_keys entry runs
// for the backup key (the README's and the NixOS module's entry).
const AgentCommand = "/usr/local/bin/haul-agent serve --config /etc/haul-agent.json"

// writeNew writes data to a file that must not exist yet, with mode perm.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; haul never overwrites it (move it away first if you really mean to replace it)", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// CreatePasswordFile writes a random password (256 bits, base64url) to
// path, mode 0600, refusing to overwrite.
func CreatePasswordFile(path string) error {
	var b [passwordBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	return writeNew(path, []byte(base64.RawURLEncoding.EncodeToString(b[:])+"\n"), 0o600)
}

const passwordBytes = 32

// IsGeneratedPassword says whether pw has the form CreatePasswordFile
// writes: 256 bits in unpadded base64url (43 characters). Only such a
// password may go without restic's scrypt cost (haul key machine).
func IsGeneratedPassword(pw string) bool {
	b, err := base64.RawURLEncoding.DecodeString(pw)
	return err == nil && len(b) == passwordBytes
}

// KeyPair is a created SSH key pair.
type KeyPair struct {
	PrivatePath, PublicPath string
	// AuthorizedKey is the public key in authorized_keys form.
	AuthorizedKey string
	// Entry is the line to add to the VPS's authorized_keys: the key
	// limited to haul-agent by a forced command and restrict.
	Entry string
}

// CreateKeyPair writes a new ed25519 key pair: the private key in
// OpenSSH format at path (0600), the public key at path.pub (0644). It
// refuses to overwrite either.
func CreateKeyPair(path, comment string) (*KeyPair, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))) + " " + comment
	kp := &KeyPair{PrivatePath: path, PublicPath: path + ".pub", AuthorizedKey: line,
		Entry: fmt.Sprintf("command=%q,restrict %s", AgentCommand, line)}
	if _, err := os.Lstat(kp.PublicPath); err == nil {
		return nil, fmt.Errorf("%s already exists; haul never overwrites a key (move it away first)", kp.PublicPath)
	}
	if err := writeNew(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(kp.PublicPath, []byte(line+"\n"), 0o644); err != nil {
		os.Remove(path)
		return nil, err
	}
	return kp, nil
}
