package setup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedPasswordIsRecognised: what CreatePasswordFile writes is what
// IsGeneratedPassword accepts (haul key machine relies on it); a
// passphrase, or a value one character short or long, is not.
func TestGeneratedPasswordIsRecognised(t *testing.T) {
	p := filepath.Join(t.TempDir(), "password")
	if err := CreatePasswordFile(p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	pw := strings.TrimSpace(string(b))
	if !IsGeneratedPassword(pw) {
		t.Errorf("IsGeneratedPassword(%q) = false for CreatePasswordFile's own password", pw)
	}
	for _, bad := range []string{"correct horse battery staple", pw[:42], pw + "A", strings.Repeat("!", 43)} {
		if IsGeneratedPassword(bad) {
			t.Errorf("IsGeneratedPassword(%q) = true", bad)
		}
	}
}
