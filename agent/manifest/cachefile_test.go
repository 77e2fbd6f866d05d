package manifest

import (
	"encoding/gob"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/haulproject/haul/proto"
)

// TestCacheFileFormats: the cache is written as a header and one record per
// file, read back whole; a file in the format before (one gob value) is
// still read; one cut short, or made with another polynomial, is empty.
func TestCacheFileFormats(t *testing.T) {
	dir := t.TempDir()
	files := map[string]cacheEntry{
		"/srv/a":  {Ino: 1, Size: 5, MTime: 2, CTime: 3, Chunks: []proto.ChunkRef{{ID: proto.Hash([]byte("a")), Length: 5}}, Blocks: []uint64{7}},
		"/srv/db": {Ino: 2, Size: 1 << 20, Chunks: []proto.ChunkRef{{ID: proto.Hash([]byte("db")), Length: 1 << 20}}, Blocks: make([]uint64, 256)},
		"/srv/e":  {Ino: 3},
	}
	check := func(what, path string, wantFiles map[string]cacheEntry, wantWalk string) {
		t.Helper()
		got, walk, err := loadCacheFile(path, testPol)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !maps.EqualFunc(got, wantFiles, func(a, b cacheEntry) bool { return reflect.DeepEqual(a, b) }) || walk != wantWalk {
			t.Errorf("%s: read %d entries, walk %q; want %d, %q", what, len(got), walk, len(wantFiles), wantWalk)
		}
	}

	cur := filepath.Join(dir, "now")
	if err := writeCacheFile(cur, testPol, files, "w1"); err != nil {
		t.Fatal(err)
	}
	check("version 2", cur, files, "w1")
	if got, _, _ := loadCacheFile(cur, testPol+2); len(got) != 0 {
		t.Errorf("read with another polynomial: %d entries, want none", len(got))
	}

	old := filepath.Join(dir, "old")
	f, err := os.Create(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := gob.NewEncoder(f).Encode(cacheFile{Polynomial: uint64(testPol), Files: files, Walk: "w0"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	check("the format before", old, files, "w0")

	b, err := os.ReadFile(cur)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut")
	if err := os.WriteFile(cut, b[:len(b)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	check("cut short", cut, map[string]cacheEntry{}, "")
}
