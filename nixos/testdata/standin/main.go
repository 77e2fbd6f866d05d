// Command standin is the process in the containers that stand in for
// Pangolin, Gerbil and Traefik when nixos/ tests run the module's compose
// file against a private dockerd (compose_test.go imports it as an image
// with /usr/bin/standin as entrypoint). It ignores the real programs'
// arguments and runs until SIGTERM; `standin health` is its health check.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(0)
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
