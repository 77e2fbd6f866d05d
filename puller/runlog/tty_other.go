//go:build !linux

package runlog

// isTerminal is false off Linux: haul then logs plain lines only.
func isTerminal(uintptr) bool { return false }
