package config

import (
	"testing"

	"github.com/haulproject/haul/internal/exclude"
	"github.com/haulproject/haul/puller/internal/restic/filter"
)

// TestExcludeMatchesRestic checks the agent's exclude matcher against
// restic's own filter package (v0.19.1, as generated into the tree): for
// every pattern list and path below, both must agree, so a host's exclude
// list means what `restic backup --exclude` would make of it.
func TestExcludeMatchesRestic(t *testing.T) {
	lists := [][]string{
		{"access.log"},
		{"*.log"},
		{"/var/lib/pangolin/config/traefik/logs"},
		{"/var/lib/pangolin/config/traefik/logs/*.log"},
		{"traefik/logs"},
		{"logs/*.log"},
		{"**/logs"},
		{"/var/**/access.log"},
		{"/var/**"},
		{"/**/*.log"},
		{"**"},
		{"/"},
		{"*"},
		{"/var/lib/*/config"},
		{"*.log", "!keep.log"},
		{"*.log", "!/srv/a/*.log"},
		{"!*.log", "*.log"},
		{"/srv/[ab]*/x?"},
		{`/srv/\*`},
		{"/srv/a/../b"},
		{"srv/./a"},
		{"", "a"},
		{"/srv/a/b/c/d/e"},
	}
	paths := []string{
		"/", "/var", "/var/lib", "/var/lib/pangolin", "/var/lib/pangolin/config",
		"/var/lib/pangolin/config/traefik", "/var/lib/pangolin/config/traefik/logs",
		"/var/lib/pangolin/config/traefik/logs/access.log", "/var/lib/pangolin/config/traefik/logs/keep.log",
		"/var/lib/pangolin/config/acme.json", "/srv", "/srv/a", "/srv/a/x.log", "/srv/a/keep.log",
		"/srv/b", "/srv/b/xy", "/srv/ab/x1", "/srv/*", "/srv/logs", "/srv/logs/a.log", "/srv/a/b/c/d/e",
		"/srv/a/b/c/d/e/f", "/logs", "/access.log",
	}
	for _, pl := range lists {
		ours, err := exclude.Parse(pl)
		if err != nil {
			t.Fatalf("Parse(%q): %v", pl, err)
		}
		theirs := filter.ParsePatterns(pl)
		for _, p := range paths {
			want, err := filter.List(theirs, p)
			if err != nil {
				t.Fatalf("restic filter.List(%q, %q): %v", pl, p, err)
			}
			if got := ours.Excluded(p); got != want {
				t.Errorf("patterns %q path %s: haul excludes=%v, restic=%v", pl, p, got, want)
			}
		}
	}
	for _, bad := range []string{"[", "/srv/[a", `a\`} {
		_, err := exclude.Parse([]string{bad})
		if rerr := filter.ValidatePatterns([]string{bad}); (err == nil) != (rerr == nil) {
			t.Errorf("pattern %q: haul error %v, restic error %v", bad, err, rerr)
		}
	}
}
