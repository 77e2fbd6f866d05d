package backup

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// TestTreeJSONIsRestics: the puller's tree builder writes the bytes
// restic's does, so tree blob IDs (and dedup with restic's own backups)
// stay the same.
func TestTreeJSONIsRestics(t *testing.T) {
	mt := time.Date(2026, 11, 27, 9, 1, 2, 3, time.UTC)
	sub := restic.Hash([]byte("sub"))
	nodes := []*data.Node{
		{Name: "a", Type: data.NodeTypeFile, Mode: 0o600, ModTime: mt, Size: 3, Content: restic.IDs{restic.Hash([]byte("abc"))}},
		{Name: "d", Type: data.NodeTypeDir, Mode: os.ModeDir | 0o755, ModTime: mt, Subtree: &sub},
		{Name: "l", Type: data.NodeTypeSymlink, Mode: os.ModeSymlink | 0o777, LinkTarget: "../x\x00\xff"},
		{Name: "n\xffé" + strings.Repeat("x", 250), Type: data.NodeTypeFile, Content: restic.IDs{}},
	}
	ours, theirs := newTreeJSON(), data.NewTreeJSONBuilder()
	for _, n := range nodes {
		if ok, err := ours.add(n, 1<<20); err != nil || !ok {
			t.Fatal(ok, err)
		}
		if err := theirs.AddNode(n); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := theirs.Finalize()
	if got := ours.finish(); !bytes.Equal(got, want) {
		t.Fatalf("tree differs from restic's:\n%s\n%s", got, want)
	}
	empty, _ := data.NewTreeJSONBuilder().Finalize()
	if got := newTreeJSON().finish(); !bytes.Equal(got, empty) {
		t.Fatalf("empty tree differs: %q vs %q", got, empty)
	}
	b := newTreeJSON()
	_, _ = b.add(nodes[1], 1<<20)
	if _, err := b.add(nodes[0], 1<<20); err == nil {
		t.Fatal("unsorted names accepted")
	}
	// Many nodes: blocks of growing size give the same bytes, and the
	// budget is never exceeded.
	ours, theirs = newTreeJSON(), data.NewTreeJSONBuilder()
	for i := 0; i < 20000; i++ {
		n := &data.Node{Name: fmt.Sprintf("%06d%s", i, strings.Repeat("y", 200)), Type: data.NodeTypeFile, ModTime: mt, Content: restic.IDs{}}
		ok, err := ours.add(n, 3<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if ours.size() > 3<<20 || i < 5000 {
				t.Fatalf("refused at node %d holding %d bytes", i, ours.size())
			}
			break
		}
		_ = theirs.AddNode(n)
	}
	want, _ = theirs.Finalize()
	if got := ours.finish(); !bytes.Equal(got, want) {
		t.Fatal("a tree of many blocks differs from restic's")
	}
}
