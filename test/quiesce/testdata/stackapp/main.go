// Command stackapp is the process inside the quiesce tests' containers,
// which stand in for Pangolin's stack. Built statically (CGO_ENABLED=0,
// modernc.org/sqlite) and imported as an image by testenv.ImportImage.
//
//	/app sqlite DB [INTERVAL]  write a gap-free sequence into DB (SQLite, WAL)
//	                           with workload.SeqWriter until SIGTERM
//	/app append FILE [INTERVAL] append a line to FILE every INTERVAL (a log)
//	/app health                exit 0 once the writer is ready (a HEALTHCHECK)
//
// Every mode stops cleanly on SIGTERM, as a real service would on
// `docker stop`: PID 1 in a container has no default signal handling.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/haulproject/haul/internal/workload"
)

const readyFile = "/tmp/ready"

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: app sqlite DB [INTERVAL] | append FILE [INTERVAL] | health"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	interval := func(def time.Duration) time.Duration {
		if len(os.Args) > 3 {
			d, err := time.ParseDuration(os.Args[3])
			if err != nil {
				fail(err)
			}
			return d
		}
		return def
	}
	if os.Args[1] != "health" {
		// The container's writable layer survives a restart: readiness is
		// per start.
		_ = os.Remove(readyFile)
	}
	switch os.Args[1] {
	case "health":
		if _, err := os.Stat(readyFile); err != nil {
			fail(err)
		}
	case "sqlite":
		// Ready once the database is open and writable: the writer makes
		// its first commit right away.
		go func() {
			time.Sleep(20 * time.Millisecond)
			_ = os.WriteFile(readyFile, nil, 0o644)
		}()
		last, err := workload.SeqWriter(ctx, os.Args[2], interval(time.Millisecond))
		if err != nil {
			fail(err)
		}
		fmt.Printf("stopped after n=%d\n", last)
	case "append":
		f, err := os.OpenFile(os.Args[2], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fail(err)
		}
		_ = os.WriteFile(readyFile, nil, 0o644)
		tick := time.NewTicker(interval(10 * time.Millisecond))
		defer tick.Stop()
		for i := 1; ctx.Err() == nil; i++ {
			if _, err := f.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + " line " + strconv.Itoa(i) + "\n"); err != nil {
				fail(err)
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if err := f.Close(); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "stackapp:", err)
	os.Exit(1)
}
