package mirror

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFreezeSync1ByteChange: the frozen sync after one byte of a
// 256 MiB file changed since the pre-sync, the way the agent runs it
// (Defer: the fsync comes after the window, in Commit, timed apart).
// "whole" is the copy every changed file got before (a new copy renamed
// over the old), "patch" writes the changed blocks in place, "reflink"
// clones on XFS (needs root and mkfs.xfs).
//
//	go test -run '^$' -bench FreezeSync -benchtime 5x ./agent/mirror
func BenchmarkFreezeSync1ByteChange(b *testing.B) {
	for _, mode := range []string{"whole", "patch", "reflink"} {
		b.Run(mode, func(b *testing.B) {
			root := b.TempDir()
			if mode == "reflink" {
				root = xfsDir(b)
			}
			src := filepath.Join(root, "data")
			f := filepath.Join(src, "db.sqlite")
			randomFile(b, f, 256<<20)
			m, err := Open(filepath.Join(root, "mirror"), filepath.Join(root, "mirror.index"))
			must(b, err)
			m.Defer = true
			m.NoReflink = mode != "reflink"
			m.NoPatch = mode == "whole"
			_, err = m.Sync(context.Background(), []string{src})
			must(b, err)
			must(b, m.Commit())
			var written, commit, wio int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				pwrite(b, f, []byte{byte(i)}, int64(i)*(1<<20)+12345)
				io0 := procWriteBytes(b)
				b.StartTimer()
				st, err := m.Sync(context.Background(), []string{src})
				b.StopTimer()
				must(b, err)
				t := time.Now()
				must(b, m.Commit())
				commit += time.Since(t).Microseconds()
				wio += procWriteBytes(b) - io0
				b.StartTimer()
				written += st.BytesCopied
			}
			b.ReportMetric(float64(written)/float64(b.N), "B-written/op")
			b.ReportMetric(float64(wio)/float64(b.N), "B-to-disk/op")
			b.ReportMetric(float64(commit)/1000/float64(b.N), "commit-ms/op")
		})
	}
}

// procWriteBytes is what this process has sent to the storage layer
// (/proc/self/io write_bytes): pages it dirtied, flushed or not.
func procWriteBytes(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	must(b, err)
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			must(b, err)
			return n
		}
	}
	b.Fatal("no write_bytes in /proc/self/io")
	return 0
}
