// Command app stands in for a container of Pangolin's stack in the restore
// tests: it runs until docker stops it, and exits at once on SIGTERM so a
// stop takes milliseconds, not docker's 10-second grace period.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
