package backup_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/repo"
)

// rssCases are the memory attacks of issue 18, as manifests generated on
// the fly (the evil agent holds nothing), each pulled by a fresh process
// whose peak RSS is the measurement.
var rssCases = map[string]struct {
	manifest func(w *proto.Writer) error
	limits   backup.Limits // zero: the defaults
}{
	// 2 M empty files in one directory: refused at max_dir_entries.
	"2M-empty-files-one-dir": {manifest: func(w *proto.Writer) error { return manyFiles(w, 2_000_000, 7) }},
	// The same 2 M files in 2 000 directories: accepted.
	"2M-empty-files-2000-dirs": {manifest: func(w *proto.Writer) error { return spread(w, 2000, 1000, 7) }},
	// 1 M 255-byte names in one directory: refused at max_tree_bytes.
	"1M-255-byte-names-one-dir": {manifest: func(w *proto.Writer) error { return longNames(w, 1_000_000) }},
	// 1 M 255-byte names in 1 000 directories: accepted.
	"1M-255-byte-names-1000-dirs": {manifest: func(w *proto.Writer) error { return spread(w, 1000, 1000, 255) }},
	// 1 M nested directories: refused at max_depth.
	"1M-nested-dirs": {manifest: func(w *proto.Writer) error { return nested(w, 1_000_000) }},
	// 40 000 nested directories with max_depth raised: accepted; the
	// cost is per level (one open tree each).
	"40k-nested-dirs-max-depth-raised": {manifest: func(w *proto.Writer) error { return nested(w, 40_000) }, limits: backup.Limits{MaxDepth: 50_000}},
}

// spread writes dirs directories of per files each, names of width bytes.
func spread(w *proto.Writer, dirs, per, width int) error {
	for d := 0; d < dirs; d++ {
		if err := dirNode(w, fmt.Sprintf("d%05d", d)); err != nil {
			return err
		}
		for i := 0; i < per; i++ {
			name := fmt.Sprintf("%07d", i)
			if width > len(name) {
				name += strings.Repeat("x", width-len(name))
			}
			if err := node(w, &proto.Node{Name: []byte(name), Type: proto.NodeFile, Mode: 0o644}); err != nil {
				return err
			}
		}
		if err := w.Write(proto.TDirEnd); err != nil {
			return err
		}
	}
	return nil
}

// runRSSCase is the measured process: one pull of the case's manifest into
// a fresh repository. It prints one line: the outcome.
func runRSSCase(name string) int {
	c, ok := rssCases[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "no case %q\n", name)
		return 2
	}
	dir, err := os.MkdirTemp("", "haul-rss-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	r, err := repo.Init(ctx, filepath.Join(dir, "repo"), password, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	e := evil{manifest: c.manifest}
	start := time.Now()
	res, err := backup.Run(ctx, r, e.inProcess(), backup.Options{Host: "evil", CacheDir: filepath.Join(dir, "cache"), Limits: c.limits})
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		msg := err.Error()
		if len(msg) > 160 {
			msg = msg[:160] + "…"
		}
		fmt.Printf("refused after %v: %s\n", took, msg)
		return 0
	}
	fmt.Printf("accepted after %v: %d files, %d dirs\n", took, res.Files, res.Dirs)
	return 0
}

// BenchmarkPullerPeakRSS measures the puller's peak resident memory for
// each hostile manifest of issue 18 (reported as peak-RSS-MiB; see
// docs/BENCHMARKS.md):
//
//	go test -run '^$' -bench PullerPeakRSS -benchtime 1x ./puller/backup/
func BenchmarkPullerPeakRSS(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range sortedKeys(rssCases) {
		b.Run(name, func(b *testing.B) {
			var peak int64
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(self, "rss-case", name)
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					b.Fatalf("%s: %v", name, err)
				}
				ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
				peak = max(peak, ru.Maxrss) // KiB on Linux
				b.Logf("%s: %s", name, strings.TrimSpace(string(out)))
			}
			b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
		})
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}
