package quiesce_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/haulproject/haul/agent"
	"github.com/haulproject/haul/agent/mirror"
	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/workload"
)

// benchStack is one Pangolin-like data dir of 50 MiB (workload.Generate)
// with the three containers writing into it, shared by the sub-benchmarks
// so that all approaches run on the same data in one run.
var benchStack struct {
	once sync.Once
	dir  string
	s    *stack
	err  error
}

func pangolinBench(b *testing.B) *stack {
	d := testenv.SharedDockerd(b)
	benchStack.once.Do(func() {
		dir, err := os.MkdirTemp("", "haul-bench-")
		if err != nil {
			benchStack.err = err
			return
		}
		benchStack.dir = dir
		st, err := workload.Generate(dir, workload.Options{TargetSize: 50 << 20, Seed: 1})
		if err != nil {
			benchStack.err = err
			return
		}
		b.Logf("data dir: %d files, %.1f MiB (database %.1f MiB)", st.Files, float64(st.Bytes)/(1<<20), float64(st.DBBytes)/(1<<20))
		// The stack outlives this sub-benchmark: clean it up at exit.
		benchStack.s = newStack(benchTB{b}, d, "qa-bench", dir)
	})
	if benchStack.err != nil {
		b.Fatal(benchStack.err)
	}
	benchStack.s.t = b // report into the running sub-benchmark
	return benchStack.s
}

// benchTB keeps the stack's cleanups from running when the first
// sub-benchmark ends; the shared dockerd's shutdown removes the containers
// and TestMain the data dir.
type benchTB struct{ testing.TB }

func (benchTB) Cleanup(func()) {}

// BenchmarkFreeze measures the downtime window on the same data:
//
//   - stop, pause: haul's freeze (stop or pause the three containers, sync
//     what changed since the live pre-sync into the mirror, resume), as
//     the agent runs it;
//   - stop-tar-start, stop-targz-start: the usual approach (as
//     offen/docker-volume-backup does): stop the stack, archive the whole
//     data dir, start the stack.
//
// Run: go test -run '^$' -bench Freeze -benchtime 5x ./test/quiesce/
// Reported per iteration: window-ms (the downtime), down-ms (stopping or
// pausing), sync-ms (haul's frozen sync, or writing the archive), up-ms
// (starting or unpausing, with the wait for pangolin's health before the
// others start) and copied-MiB (bytes copied inside the window, or the
// archive's size). ns/op also counts the untimed pre-sync and the writers'
// run between iterations.
func BenchmarkFreeze(b *testing.B) {
	for _, mode := range []string{"stop", "pause"} {
		b.Run(mode, func(b *testing.B) {
			s := pangolinBench(b)
			state := b.TempDir()
			cfg, err := agent.ParseConfig(mustJSON(map[string]any{"data_paths": []string{s.data}, "state_dir": state,
				"quiesce": map[string]any{"mode": mode, "compose_project": s.project, "docker_host": s.d.Host}}), "bench")
			if err != nil {
				b.Fatal(err)
			}
			m, err := mirror.Open(cfg.MirrorDir(), filepath.Join(state, "mirror.index"))
			if err != nil {
				b.Fatal(err)
			}
			var window, syncT, down, up time.Duration
			var copied int64
			for i := 0; i < b.N; i++ {
				time.Sleep(500 * time.Millisecond) // the stack writes
				if _, err := m.Sync(context.Background(), cfg.DataPaths); err != nil {
					b.Fatal(err)
				}
				q, err := quiesce.New(quiesce.Options{Mode: mode, ComposeProject: s.project, DockerHost: s.d.Host, Timeout: 30 * time.Second})
				if err != nil {
					b.Fatal(err)
				}
				stats, phases, w, err := agent.Freeze(context.Background(), q, cfg, func(ctx context.Context) (mirror.Stats, error) {
					return m.Sync(ctx, cfg.DataPaths)
				})
				if err != nil {
					b.Fatal(err)
				}
				window += w
				copied += stats.BytesCopied
				for _, p := range phases {
					d := time.Duration(p.MS * float64(time.Millisecond))
					switch p.Name {
					case "sync":
						syncT += d
					case "quiesce":
						down += d
					case "resume":
						up += d
					}
				}
				s.checkUp("after a freeze")
			}
			b.ReportMetric(float64(window.Microseconds())/1000/float64(b.N), "window-ms")
			b.ReportMetric(float64(syncT.Microseconds())/1000/float64(b.N), "sync-ms")
			b.ReportMetric(float64(down.Microseconds())/1000/float64(b.N), "down-ms")
			b.ReportMetric(float64(up.Microseconds())/1000/float64(b.N), "up-ms")
			b.ReportMetric(float64(copied)/(1<<20)/float64(b.N), "copied-MiB")
		})
	}
	for _, gz := range []bool{false, true} {
		name := "stop-tar-start"
		if gz {
			name = "stop-targz-start"
		}
		b.Run(name, func(b *testing.B) {
			s := pangolinBench(b)
			docker, err := quiesce.NewDocker(s.d.Host)
			if err != nil {
				b.Fatal(err)
			}
			out := filepath.Join(b.TempDir(), "backup.tar")
			ctx, timeout := context.Background(), 30*time.Second
			var window, archiveT, down, up time.Duration
			var size int64
			for i := 0; i < b.N; i++ {
				time.Sleep(500 * time.Millisecond)
				t0 := time.Now()
				for j := len(s.running) - 1; j >= 0; j-- {
					if err := docker.Stop(ctx, s.running[j], timeout); err != nil {
						b.Fatal(err)
					}
				}
				ta := time.Now()
				down += ta.Sub(t0)
				n, err := archive(s.data, out, gz)
				if err != nil {
					b.Fatal(err)
				}
				archiveT += time.Since(ta)
				tu := time.Now()
				size += n
				for j, name := range s.running {
					if err := docker.Start(ctx, name, timeout); err != nil {
						b.Fatal(err)
					}
					if j == 0 { // the others depend on a healthy pangolin
						if err := docker.WaitHealthy(ctx, name, timeout); err != nil {
							b.Fatal(err)
						}
					}
				}
				up += time.Since(tu)
				window += time.Since(t0)
				s.checkUp("after stop-tar-start")
			}
			b.ReportMetric(float64(window.Microseconds())/1000/float64(b.N), "window-ms")
			b.ReportMetric(float64(archiveT.Microseconds())/1000/float64(b.N), "sync-ms")
			b.ReportMetric(float64(down.Microseconds())/1000/float64(b.N), "down-ms")
			b.ReportMetric(float64(up.Microseconds())/1000/float64(b.N), "up-ms")
			b.ReportMetric(float64(size)/(1<<20)/float64(b.N), "copied-MiB")
		})
	}
}

// archive writes dir as a tar (or tar.gz) file and fsyncs it, as a backup
// tool that archives the whole data dir while the stack is stopped does.
func archive(dir, out string, gz bool) (int64, error) {
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
