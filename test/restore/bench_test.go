package restore_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/internal/testenv"
	"github.com/haulproject/haul/internal/workload"
)

// BenchmarkRestore restores a Pangolin-like snapshot (1 GiB unless
// HAUL_BENCH_SIZE says otherwise, in bytes or with a MiB/GiB suffix) onto
// a fresh host two ways, in one run, over the same loopback sshd:
//
//   - haul: `haul restore --host old --to new`, the agent staging,
//     verifying (read-back), syncing and swapping;
//   - restic + rsync: `restic restore latest --target DIR` on the NAS, then
//     `rsync -aH --numeric-ids` of DIR to the host over ssh.
//
// Run it with:
//
//	go test ./test/restore -run '^$' -bench Restore -benchtime 1x -timeout 60m
func BenchmarkRestore(b *testing.B) {
	size := benchSize(b)
	testenv.Require(b, "rsync", "apt-get install rsync")
	testenv.ResticBin(b) // fails or skips now rather than after the setup
	old := newVPS(b, "old", vpsOptions{})
	fresh := newVPS(b, "new", vpsOptions{sameDataPathAs: old})

	t0 := time.Now()
	st, err := workload.Generate(old.dir, workload.Options{TargetSize: size, Seed: 7})
	must(b, err)
	b.Logf("generated %d files, %s in %v", st.Files, mib(st.Bytes), time.Since(t0).Round(time.Millisecond))
	n := newNAS(b, old.hostEntry(old.restoreKey), fresh.hostEntry(fresh.restoreKey))
	t0 = time.Now()
	n.haul("backup", "--host", "old")
	b.Logf("backup of old: %v", time.Since(t0).Round(time.Millisecond))

	rsyncDest := filepath.Join(filepath.Dir(fresh.dir), "rsync-target")
	sshArgs := fresh.sshd.SSHArgs(fresh.plainKey)
	remote := sshArgs[len(sshArgs)-1]
	rsh := strings.Join(sshArgs[:len(sshArgs)-1], " ")

	var haulD, resticD, rsyncD time.Duration
	var agentRSS int64
	var res restoreResult
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		// A fresh host each round: no data, no marker.
		must(b, os.RemoveAll(fresh.dir))
		prevs, _ := filepath.Glob(fresh.dir + ".prev-*")
		for _, p := range prevs {
			must(b, os.RemoveAll(p))
		}
		_ = os.Remove(fresh.marker())
		must(b, os.RemoveAll(rsyncDest))
		local := filepath.Join(b.TempDir(), "restic-restore")
		b.StartTimer()

		t := time.Now()
		stop := watchRSS("haul-agent", &agentRSS)
		res = n.restore("--host", "old", "--to", "new")
		stop()
		haulD += time.Since(t)

		t = time.Now()
		testenv.Restic(b, n.repo, n.pw, "restore", "latest", "--target", local)
		resticD += time.Since(t)
		t = time.Now()
		cmd := exec.Command("rsync", "-aH", "--numeric-ids", "-e", rsh, local+old.data+"/", remote+":"+rsyncDest+"/")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			b.Fatalf("rsync: %v\n%s", err, out.Bytes())
		}
		rsyncD += time.Since(t)

		b.StopTimer()
		sameTree(b, old.dir, fresh.dir)
		sameTree(b, old.dir, rsyncDest)
		must(b, os.RemoveAll(local))
		b.StartTimer()
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
	b.ReportMetric(per(haulD), "haul-s")
	b.ReportMetric(per(resticD), "restic-s")
	b.ReportMetric(per(rsyncD), "rsync-s")
	b.ReportMetric(per(resticD+rsyncD), "restic+rsync-s")
	b.ReportMetric(0, "ns/op")

	var phases []string
	for _, p := range res.Outcome.Phases {
		phases = append(phases, fmt.Sprintf("%s %.0f ms", p.Name, p.MS))
	}
	b.Logf("\n| %s snapshot (%d files) | seconds | MiB/s |\n| --- | ---: | ---: |\n"+
		"| haul restore onto the agent over ssh | %.2f | %.0f |\n"+
		"| restic restore to a local dir | %.2f | |\n"+
		"| rsync -aH of that dir over ssh | %.2f | |\n"+
		"| restic restore + rsync | %.2f | %.0f |\n"+
		"\nhaul agent phases: %s; services quiesced %.1f ms; %d chunks sent; agent peak RSS %s",
		mib(st.Bytes), res.Outcome.Files,
		per(haulD), float64(st.Bytes)/(1<<20)/per(haulD),
		per(resticD), per(rsyncD),
		per(resticD+rsyncD), float64(st.Bytes)/(1<<20)/per(resticD+rsyncD),
		strings.Join(phases, ", "), res.Outcome.FreezeMS, res.ChunksSent, mib(agentRSS))
}

func benchSize(b *testing.B) int64 {
	s := os.Getenv("HAUL_BENCH_SIZE")
	if s == "" {
		return 1 << 30
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "GiB"):
		mult, s = 1<<30, strings.TrimSuffix(s, "GiB")
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("HAUL_BENCH_SIZE=%q: want a size such as 1GiB, 64MiB or 1073741824", os.Getenv("HAUL_BENCH_SIZE"))
	}
	return n * mult
}

func mib(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// watchRSS samples the resident set of every process named comm until
// stopped, keeping the largest in *peak (bytes).
func watchRSS(comm string, peak *int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				if c, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err != nil || strings.TrimSpace(string(c)) != comm {
					continue
				}
				st, err := os.ReadFile("/proc/" + e.Name() + "/status")
				if err != nil {
					continue
				}
				for _, line := range strings.Split(string(st), "\n") {
					if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
						if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb<<10 > *peak {
							*peak = kb << 10
						}
					}
				}
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); <-finished }
}
