// Package proto is the wire protocol between haul (the puller) and
// haul-agent: length-prefixed frames with hard size limits, JSON control
// messages and binary want/chunk messages. PROTOCOL.md is its specification.
package proto
