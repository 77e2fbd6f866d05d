package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"

	"github.com/restic/chunker"
)

// Opening is a repository being opened in the background: the key derived
// from the password (restic's scrypt: about half a second for a key restic
// calibrated, milliseconds for haul's machine key, MachineKeyKDF) and the
// index loaded, while the caller connects to a host.
type Opening struct {
	// Polynomial is the repository's chunker polynomial remembered from an
	// earlier open (0: none), known before the key is: a pull greets the
	// agent with it while the key is derived, and checks it once the
	// repository is open.
	Polynomial chunker.Pol

	done chan struct{}
	r    *Repo
	err  error
}

// OpenAsync starts opening the repository at path (as Open does). stateDir
// (haul's cache_dir) keeps the polynomial of each repository opened
// before; "" remembers nothing.
func OpenAsync(ctx context.Context, path, password, stateDir string) *Opening {
	return openAsync(ctx, path, password, stateDir, Open)
}

// OpenAsyncForLock is OpenAsync for a caller that locks the repository
// before using it (see OpenForLock): the index is loaded by Lock.
func OpenAsyncForLock(ctx context.Context, path, password, stateDir string) *Opening {
	return openAsync(ctx, path, password, stateDir, OpenForLock)
}

func openAsync(ctx context.Context, path, password, stateDir string, open func(ctx context.Context, path, password string) (*Repo, error)) *Opening {
	o := &Opening{done: make(chan struct{})}
	memo := ""
	if stateDir != "" {
		if b, err := os.ReadFile(filepath.Join(path, "config")); err == nil {
			sum := sha256.Sum256(b)
			memo = filepath.Join(stateDir, "repositories", hex.EncodeToString(sum[:])+".json")
			o.Polynomial = readMemo(memo)
		}
	}
	go func() {
		defer close(o.done)
		o.r, o.err = open(ctx, path, password)
		if o.err == nil && memo != "" && o.r.Config().ChunkerPolynomial != o.Polynomial {
			writeMemo(memo, o.r)
		}
	}()
	return o
}

// Opened is an Opening of a repository already open.
func Opened(r *Repo) *Opening {
	o := &Opening{Polynomial: r.Config().ChunkerPolynomial, done: make(chan struct{}), r: r}
	close(o.done)
	return o
}

// Wait returns the open repository, or why it could not be opened.
func (o *Opening) Wait(ctx context.Context) (*Repo, error) {
	select {
	case <-o.done:
		return o.r, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Err is why the repository could not be opened: nil while it is being
// opened and once it is open.
func (o *Opening) Err() error {
	select {
	case <-o.done:
		return o.err
	default:
		return nil
	}
}

// The memo is named by the SHA-256 of the repository's (encrypted) config
// file, so a repository made anew at the same path is a new name; it holds
// the polynomial in hex. It is as secret as the password file beside it
// (the VPS is told the polynomial in every hello anyway).
type memoFile struct {
	ID         string `json:"id"`
	Polynomial string `json:"chunker_polynomial"`
}

func readMemo(path string) chunker.Pol {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var m memoFile
	if json.Unmarshal(b, &m) != nil {
		return 0
	}
	p, err := strconv.ParseUint(m.Polynomial, 16, 64)
	if err != nil || !chunker.Pol(p).Irreducible() {
		return 0
	}
	return chunker.Pol(p)
}

func writeMemo(path string, r *Repo) {
	b, _ := json.Marshal(memoFile{ID: r.Config().ID, Polynomial: strconv.FormatUint(uint64(r.Config().ChunkerPolynomial), 16)})
	if os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	tmp := path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, path)
	}
}
