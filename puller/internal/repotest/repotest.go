// Package repotest is for tests that create repositories in-process.
package repotest

import "github.com/haulproject/haul/puller/internal/restic/repository"

// LowCostKDF makes the repositories this test process creates use restic's
// low-cost scrypt parameters (N=128, r=1, p=1), as restic's own tests do,
// through the hook resticgen keeps from restic's test helpers: every later
// open of such a repository derives its key in microseconds instead of
// restic's calibrated half second. Repositories made by a binary (haul
// init, restic init) keep the production parameters. Tests only.
func LowCostKDF(t interface{ Logf(string, ...any) }) {
	repository.TestUseLowSecurityKDFParameters(t)
}
