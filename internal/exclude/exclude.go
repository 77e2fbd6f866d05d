// Package exclude matches paths against exclude patterns with the semantics
// of restic's --exclude (restic v0.19.1, internal/filter), so a host's
// exclude list means what it would mean to restic:
//
//   - a pattern is matched component by component ("/"-separated), each
//     component with filepath.Match ('*', '?', '[...]', '\\' escapes; '*'
//     never crosses a '/');
//   - "**" as a whole component matches any number of components, none
//     included;
//   - a pattern starting with '/' is anchored at the root; any other pattern
//     matches at any depth, on any run of consecutive components
//     ("access.log" excludes /srv/logs/access.log, "logs/*.log" excludes
//     /srv/logs/a.log);
//   - a pattern starting with '!' re-includes what an earlier pattern
//     excluded; patterns apply in order, the last match wins. As in restic,
//     an excluded directory is not descended into, so a '!' pattern cannot
//     bring back files below it.
//
// It lives outside the puller so the agent can apply it while walking:
// excluded paths never cross the wire. A test in puller/config checks it
// against restic's own filter package.
package exclude

import (
	"fmt"
	"path/filepath"
	"strings"
)

type part struct {
	pat    string // "/" for the root of an anchored pattern; "" for "**"
	simple bool   // no glob characters: compare with ==
}

type pattern struct {
	text   string
	parts  []part
	negate bool
}

// List is a parsed, validated exclude list. The zero List excludes nothing.
type List struct{ pats []pattern }

// Parse validates patterns; empty ones are ignored, as restic does.
func Parse(patterns []string) (*List, error) {
	l := &List{}
	var bad []string
	for _, s := range patterns {
		if s == "" {
			continue
		}
		p := pattern{text: s}
		body := s
		if body[0] == '!' {
			p.negate, body = true, body[1:]
		}
		for i, c := range split(filepath.Clean(body)) {
			if c == "**" {
				p.parts = append(p.parts, part{})
				continue
			}
			// An anchored pattern's "/" marker is matched by ==.
			simple := (i == 0 && c == "/") || !strings.ContainsAny(c, `\[]*?`)
			if _, err := filepath.Match(c, c); err != nil {
				bad = append(bad, s)
				break
			}
			p.parts = append(p.parts, part{pat: c, simple: simple})
		}
		l.pats = append(l.pats, p)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("invalid exclude pattern(s) %q: see filepath.Match's syntax ('*', '?', '[a-z]', '\\' escapes) plus '**'", bad)
	}
	return l, nil
}

// Empty reports whether the list excludes nothing.
func (l *List) Empty() bool { return l == nil || len(l.pats) == 0 }

// Excluded reports whether path (absolute, "/"-separated, as on the host) is
// excluded.
func (l *List) Excluded(path string) bool {
	if l.Empty() || path == "" {
		return false
	}
	strs := split(path)
	excluded := false
	for _, p := range l.pats {
		m := match(p.parts, strs)
		if p.negate {
			excluded = excluded && !m
		} else {
			excluded = excluded || m
		}
	}
	return excluded
}

// split cuts a cleaned path into components; an absolute path's first
// component is "/".
func split(p string) []string {
	c := strings.Split(p, "/")
	if c[0] == "" {
		c[0] = "/"
	}
	return c
}

func match(parts []part, strs []string) bool {
	for pos, pt := range parts {
		if pt.pat != "" {
			continue
		}
		// "**" at pos: try it as zero, one, two ... single-component
		// wildcards.
		for n := 0; n <= len(strs)-len(parts)+1; n++ {
			exp := make([]part, 0, len(parts)-1+n)
			exp = append(exp, parts[:pos]...)
			for range n {
				exp = append(exp, part{pat: "*"})
			}
			exp = append(exp, parts[pos+1:]...)
			if match(exp, strs) {
				return true
			}
		}
		return false
	}
	if len(parts) == 0 {
		return len(strs) == 0
	}
	if len(parts) > len(strs) {
		return false
	}
	lo, hi := 0, len(strs)-len(parts)
	if parts[0].pat == "/" {
		hi = 0 // anchored: only at the root
	} else if strs[0] == "/" {
		lo = 1 // unanchored: any run of components below the root
	}
window:
	for off := hi; off >= lo; off-- {
		for i, pt := range parts {
			s := strs[off+i]
			if pt.simple {
				if pt.pat != s {
					continue window
				}
			} else if ok, _ := filepath.Match(pt.pat, s); !ok {
				continue window
			}
		}
		return true
	}
	return false
}
