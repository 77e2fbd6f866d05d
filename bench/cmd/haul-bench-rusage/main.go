// Command haul-bench-rusage runs a command and records its wall time, CPU
// time and peak RSS for haul-bench (see bench/rusage). haul-bench wraps
// sshd's forced commands and the backup clients with it.
package main

import (
	"os"

	"github.com/haulproject/haul/bench/rusage"
)

func main() { os.Exit(rusage.Main(os.Args[1:])) }
