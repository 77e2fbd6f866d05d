package hostkey

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh/knownhosts"
)

func TestGenerateLoadExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hostkeys")
	k, err := Generate(dir, "vps", false)
	if err != nil {
		t.Fatal(err)
	}
	if k.Type != "ed25519" || filepath.Base(k.PrivatePath) != "ssh_host_ed25519_key" {
		t.Fatalf("key %+v", k)
	}
	for path, mode := range map[string]os.FileMode{filepath.Join(dir, "vps"): 0o700, k.PrivatePath: 0o600, k.PublicPath: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	if _, err := Generate(dir, "vps", false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second generate without force: %v", err)
	}
	l, err := Load(dir, "vps")
	if err != nil {
		t.Fatal(err)
	}
	if l.Fingerprint != k.Fingerprint || l.Authorized != k.Authorized {
		t.Fatalf("loaded %+v, generated %+v", l, k)
	}

	// ssh-keygen (the tool sshd's admins trust) reads both halves and agrees.
	if kg, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(kg, "-y", "-f", k.PrivatePath).Output()
		if err != nil {
			t.Fatalf("ssh-keygen -y: %v", err)
		}
		if f := strings.Fields(string(out)); len(f) < 2 || f[0]+" "+f[1] != k.Authorized {
			t.Fatalf("ssh-keygen -y gives %q, want %q", out, k.Authorized)
		}
	}

	root := t.TempDir()
	files, err := Export(l, root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub")}
	if strings.Join(files, " ") != strings.Join(want, " ") {
		t.Fatalf("exported %v, want %v", files, want)
	}
	priv, _ := os.ReadFile(want[0])
	orig, _ := os.ReadFile(k.PrivatePath)
	if string(priv) != string(orig) {
		t.Fatal("exported private key differs from the kept one")
	}
	if fi, _ := os.Stat(want[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("exported private key mode %v", fi.Mode().Perm())
	}

	if err := os.Chmod(k.PrivatePath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "vps"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("load of a world-readable key: %v", err)
	}
	if _, err := Load(dir, "other"); err == nil || !strings.Contains(err.Error(), "haul hostkey generate --host other") {
		t.Fatalf("load of a missing key: %v", err)
	}
}

func TestImportKeepsTheKey(t *testing.T) {
	kg, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed")
	}
	src := filepath.Join(t.TempDir(), "ssh_host_ed25519_key")
	if out, err := exec.Command(kg, "-q", "-t", "ed25519", "-N", "", "-C", "old-vps", "-f", src).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, _ := os.ReadFile(src + ".pub")
	dir := t.TempDir()
	k, err := Import(dir, "vps", src, false)
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(string(pub)); k.Authorized != f[0]+" "+f[1] {
		t.Fatalf("imported %q, ssh-keygen made %q", k.Authorized, pub)
	}

	enc := filepath.Join(t.TempDir(), "enc")
	if out, err := exec.Command(kg, "-q", "-t", "ed25519", "-N", "secret", "-f", enc).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if _, err := Import(dir, "vps2", enc, false); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("import of an encrypted key: %v", err)
	}
}

func TestPin(t *testing.T) {
	dir := t.TempDir()
	a, err := Generate(dir, "a", false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(dir, "b", false)
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	salt := []byte("0123456789abcdefghij")
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte("[127.0.0.1]:2222"))
	hashed := "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	other := "nas.example.com " + a.Authorized
	orig := strings.Join([]string{
		"# pins",
		other,
		"[127.0.0.1]:2222 " + b.Authorized + " old pin",
		hashed + " " + b.Authorized,
		"vps.example.com,[127.0.0.1]:2222 " + b.Authorized,
		"@cert-authority *.example.com " + b.Authorized,
	}, "\n") + "\n"
	if err := os.WriteFile(kh, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}

	res, err := Pin(kh, "127.0.0.1:2222", a.Public)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Replaced != 3 || res.Pattern != "[127.0.0.1]:2222" {
		t.Fatalf("pin: %+v", res)
	}
	got, _ := os.ReadFile(kh)
	want := strings.Join([]string{
		"# pins",
		other,
		"vps.example.com " + b.Authorized,
		"@cert-authority *.example.com " + b.Authorized,
		"[127.0.0.1]:2222 " + a.Authorized,
	}, "\n") + "\n"
	if string(got) != want {
		t.Fatalf("known_hosts:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(kh); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode changed to %v", fi.Mode().Perm())
	}

	// Idempotent.
	res, err = Pin(kh, "127.0.0.1:2222", a.Public)
	if err != nil || res.Changed || res.Replaced != 0 {
		t.Fatalf("second pin: %+v, %v", res, err)
	}
	if again, _ := os.ReadFile(kh); string(again) != want {
		t.Fatalf("second pin changed the file:\n%s", again)
	}

	// The file is what x/crypto's knownhosts (haul's transport) accepts.
	check, err := knownhosts.New(kh)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
	if err := check("127.0.0.1:2222", addr, a.Public); err != nil {
		t.Fatalf("pinned key refused: %v", err)
	}
	if err := check("127.0.0.1:2222", addr, b.Public); err == nil {
		t.Fatal("the replaced key is still accepted")
	}

	// Port 22 is pinned without brackets; a missing file is created.
	kh2 := filepath.Join(dir, "sub", "known_hosts")
	res, err = Pin(kh2, "203.0.113.7:22", a.Public)
	if err != nil || !res.Changed {
		t.Fatalf("pin into a new file: %+v %v", res, err)
	}
	if got, _ := os.ReadFile(kh2); string(got) != "203.0.113.7 "+a.Authorized+"\n" {
		t.Fatalf("new file: %q", got)
	}
}
