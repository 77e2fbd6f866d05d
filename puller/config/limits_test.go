package config

import (
	"strings"
	"testing"
	"time"

	"github.com/haulproject/haul/puller/backup"
)

func TestLimits(t *testing.T) {
	c, err := load(t, `
[limits]
max_bytes_added = "64GiB"
idle_timeout = "10m"
max_depth = 200

[[hosts]]
name = "vps1"
command = ["haul-agent"]

[[hosts]]
name = "vps2"
command = ["haul-agent"]
[hosts.limits]
max_bytes_added = 1000000
max_tree_bytes = "1.5MB"
deadline = "2h"
`)
	if err != nil {
		t.Fatal(err)
	}
	l1, l2 := c.BackupLimits(&c.Hosts[0]), c.BackupLimits(&c.Hosts[1])
	d := backup.DefaultLimits
	if l1.MaxBytesAdded != 64<<30 || l1.IdleTimeout != 10*time.Minute || l1.MaxDepth != 200 || l1.MaxEntries != d.MaxEntries || l1.Deadline != d.Deadline {
		t.Errorf("vps1: %+v", l1)
	}
	if l2.MaxBytesAdded != 1000000 || l2.MaxTreeBytes != 1500000 || l2.Deadline != 2*time.Hour || l2.IdleTimeout != 10*time.Minute || l2.MaxDepth != 200 {
		t.Errorf("vps2: %+v", l2)
	}
	for body, want := range map[string]string{
		"[limits]\nmax_entries = -1\n":           "max_entries must be positive",
		"[limits]\nmax_bytes_added = \"lots\"\n": "want a number of bytes",
		"[limits]\nmax_entires = 5\n":            "unknown keys limits.max_entires",
	} {
		if _, err := load(t, body); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", body, err, want)
		}
	}
}
