package manifest

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReadLargeFile: chunking and hashing one changed 256 MiB file,
// as a walk reads a database that changed.
//
//	go test -run '^$' -bench ReadLargeFile -benchtime 3x ./agent/manifest
func BenchmarkReadLargeFile(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 256<<20)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	w := &Walker{Root: dir, Pol: 0x3DA3358B4DC173}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, _, err := w.read("/f"); err != nil {
			b.Fatal(err)
		}
	}
}
