// Package systemd holds haul's systemd units for a plain Linux box (the
// puller's backup and check services and timers) and for the agent on a
// VPS without NixOS (its recover guard, at boot and on a timer); its test verifies them
// with systemd-analyze. There is no Go code here.
package systemd
