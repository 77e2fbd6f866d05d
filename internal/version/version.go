// Package version is the release of haul and haul-agent, one for both:
// they are built from one tree. Set at build time with
// -ldflags "-X github.com/haulproject/haul/internal/version.Version=…".
// The wire protocol's version is proto.Version, negotiated per session.
package version

// Version is the release both binaries report.
var Version = "0.1.0-dev"
