package inspect_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/inspect"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
)

const password = "deep"

func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "rss-walk" {
		os.Exit(runWalk(os.Args[2], os.Args[3]))
	}
	os.Exit(m.Run())
}

// makeDeep writes two snapshots of a chain of depth nested directories
// "d" with a file "f" at the bottom, whose content differs between them;
// the second also adds a directory chain beside the first at depth/2.
func makeDeep(t testing.TB, dir string, depth int) (tree1, tree2 restic.ID) {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Init(ctx, dir, password, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mt := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for v, out := range []*restic.ID{&tree1, &tree2} {
		err := r.WithBlobUploader(ctx, func(ctx context.Context, up restic.BlobSaverWithAsync) error {
			save := func(nodes ...*data.Node) (restic.ID, error) {
				b := data.NewTreeJSONBuilder()
				for _, n := range nodes {
					if err := b.AddNode(n); err != nil {
						return restic.ID{}, err
					}
				}
				buf, _ := b.Finalize()
				id, _, _, err := up.SaveBlob(ctx, restic.TreeBlob, buf, restic.ID{}, false)
				return id, err
			}
			blob, _, _, err := up.SaveBlob(ctx, restic.DataBlob, []byte(fmt.Sprint("version ", v)), restic.ID{}, false)
			if err != nil {
				return err
			}
			id, err := save(&data.Node{Name: "f", Type: data.NodeTypeFile, Mode: 0o644, ModTime: mt, Size: 9, Content: restic.IDs{blob}})
			if err != nil {
				return err
			}
			for i := depth - 1; i >= 0; i-- {
				nodes := []*data.Node{{Name: "d", Type: data.NodeTypeDir, Mode: os.ModeDir | 0o755, ModTime: mt, Subtree: &id}}
				if v == 1 && i == depth/2 {
					empty, err := save()
					if err != nil {
						return err
					}
					nodes = append(nodes, &data.Node{Name: "e", Type: data.NodeTypeDir, Mode: os.ModeDir | 0o755, ModTime: mt, Subtree: &empty})
				}
				if id, err = save(nodes...); err != nil {
					return err
				}
			}
			*out = id
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return tree1, tree2
}

type walkCount struct {
	lines, bytes int
	last         string
	leaves       []string // the paths ending in /f or /e
}

func (c *walkCount) add(p string) {
	c.lines++
	c.bytes += len(p)
	c.last = p
	if strings.HasSuffix(p, "/f") || strings.HasSuffix(p, "/e") || strings.HasSuffix(p, "/e/") {
		c.leaves = append(c.leaves, p)
	}
}

func walk(ctx context.Context, r *repo.Repo, what string, tree1, tree2 restic.ID) (walkCount, error) {
	var c walkCount
	if what == "ls" {
		err := inspect.Ls(ctx, r, tree2, inspect.LsOptions{Recursive: true}, func(p string, _ *data.Node) error {
			c.add(p)
			return nil
		})
		return c, err
	}
	_, err := inspect.Diff(ctx, r, "a", "b", tree1, tree2, inspect.DiffOptions{}, func(ch inspect.Change) {
		c.add(ch.Modifier + " " + ch.Path)
	}, nil)
	return c, err
}

// TestDeepSnapshot: a deep snapshot lists and diffs with the right paths.
func TestDeepSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	const depth = 3000
	t1, t2 := makeDeep(t, dir, depth)
	r, err := repo.Open(context.Background(), dir, password)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bottom := strings.Repeat("/d", depth) + "/f"
	ls, err := walk(context.Background(), r, "ls", t1, t2)
	if err != nil {
		t.Fatal(err)
	}
	beside := strings.Repeat("/d", depth/2) + "/e"
	if ls.lines != depth+2 || len(ls.leaves) != 2 || ls.leaves[0] != bottom || ls.leaves[1] != beside {
		t.Fatalf("ls: %d lines (want %d), leaves of lengths %d", ls.lines, depth+2, lens(ls.leaves))
	}
	diff, err := walk(context.Background(), r, "diff", t1, t2)
	if err != nil {
		t.Fatal(err)
	}
	if diff.lines != 2 || len(diff.leaves) != 2 || diff.leaves[0] != "M? "+bottom || diff.leaves[1] != "+ "+beside+"/" {
		t.Fatalf("diff: %d changes, leaves of lengths %d", diff.lines, lens(diff.leaves))
	}
}

func lens(ss []string) []int {
	var n []int
	for _, s := range ss {
		n = append(n, len(s))
	}
	return n
}

// runWalk is the measured process of BenchmarkDeepWalkPeakRSS.
func runWalk(what, dir string) int {
	ctx := context.Background()
	r, err := repo.Open(ctx, dir, password)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	ids := strings.Split(os.Getenv("HAUL_DEEP_TREES"), ",")
	t1, _ := restic.ParseID(ids[0])
	t2, _ := restic.ParseID(ids[1])
	start := time.Now()
	c, err := walk(ctx, r, what, t1, t2)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%s: %d lines, %d path bytes in %v\n", what, c.lines, c.bytes, time.Since(start).Round(time.Millisecond))
	return 0
}

// BenchmarkDeepWalkPeakRSS measures the peak RSS of `haul ls --recursive`
// and `haul diff` over a 40 000-deep snapshot (the audit's case: 3.2 GB
// before paths were shared between levels):
//
//	go test -run '^$' -bench DeepWalkPeakRSS -benchtime 1x ./puller/inspect/
func BenchmarkDeepWalkPeakRSS(b *testing.B) {
	depth := 40_000
	if s := os.Getenv("HAUL_DEEP_DEPTH"); s != "" {
		depth, _ = strconv.Atoi(s)
	}
	dir := filepath.Join(b.TempDir(), "repo")
	t1, t2 := makeDeep(b, dir, depth)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, what := range []string{"ls", "diff"} {
		b.Run(fmt.Sprintf("%s-%d-deep", what, depth), func(b *testing.B) {
			var peak int64
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(self, "rss-walk", what, dir)
				cmd.Env = append(os.Environ(), "HAUL_DEEP_TREES="+t1.String()+","+t2.String())
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
				b.Logf("%s", strings.TrimSpace(string(out)))
			}
			b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
		})
	}
}
