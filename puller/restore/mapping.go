package restore

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// PathMap puts one directory of a snapshot at one place on the target.
// From is a snapshot path (or a directory below one); To is one of the
// target agent's data paths (or a directory below one).
type PathMap struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func (m PathMap) String() string { return m.From + " → " + m.To }

// Mapping says where each part of a snapshot goes on the target agent.
type Mapping struct {
	Maps []PathMap `json:"maps"`
	// Auto is set when haul chose the mapping itself (one data path on
	// each side), Reason says how.
	Auto   bool   `json:"auto,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Identity reports whether every path stays where it was.
func (m *Mapping) Identity() bool {
	for _, p := range m.Maps {
		if p.From != p.To {
			return false
		}
	}
	return true
}

func (m *Mapping) String() string {
	s := make([]string, len(m.Maps))
	for i, p := range m.Maps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// ParseMaps parses --map values, each SRC=DST with absolute paths.
func ParseMaps(specs []string) ([]PathMap, error) {
	var out []PathMap
	for _, s := range specs {
		from, to, ok := strings.Cut(s, "=")
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("--map %q: want SRC=DST, a path of the snapshot and where it goes on the target, for example --map /opt/pangolin/config=/var/lib/pangolin/config", s)
		}
		if !path.IsAbs(from) || !path.IsAbs(to) {
			return nil, fmt.Errorf("--map %q: both paths must be absolute", s)
		}
		from, to = path.Clean(from), path.Clean(to)
		if from == "/" || to == "/" {
			return nil, fmt.Errorf("--map %q: map a data directory, not the root directory", s)
		}
		out = append(out, PathMap{From: from, To: to})
	}
	return out, nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// ResolveMapping decides where the snapshot's paths go on a target whose
// data paths are targetPaths. With no explicit maps: the same paths stay
// where they are; a snapshot with one path onto a target with one other
// path is mapped automatically. Otherwise every snapshot path needs a map
// (paths the target also has map onto themselves). The result covers each
// target data path exactly, so the agent receives a tree of its own data
// paths; anything else is an error that names the paths left over. host
// names the target in errors.
func ResolveMapping(snapshotPaths, targetPaths []string, explicit []PathMap, host string) (*Mapping, error) {
	src := cleanPaths(snapshotPaths)
	dst := cleanPaths(targetPaths)
	// The target's paths come from its agent: only clean absolute paths
	// make a tree it could take.
	for _, d := range dst {
		if !path.IsAbs(d) || path.Clean(d) != d || d == "/" {
			return nil, fmt.Errorf("%s reports data path %q, which is not a clean absolute directory: check its agent config. Nothing was changed", host, d)
		}
	}
	if len(dst) == 0 {
		return nil, fmt.Errorf("%s reports no data paths: check its agent config. Nothing was changed", host)
	}
	if len(explicit) == 0 {
		if slices.Equal(src, dst) {
			m := &Mapping{}
			for _, p := range src {
				m.Maps = append(m.Maps, PathMap{From: p, To: p})
			}
			return m, nil
		}
		if len(src) == 1 && len(dst) == 1 {
			return autoMap(src[0], dst[0]), nil
		}
		return nil, fmt.Errorf("the snapshot holds %s, but %s's data paths are %s: say where each snapshot path goes with --map SRC=DST (repeatable), for example --map %s=%s. Unmapped snapshot paths: %s. Nothing was changed",
			strings.Join(src, ", "), host, strings.Join(dst, ", "), firstMissing(src, dst), firstMissing(dst, src),
			strings.Join(missing(src, dst), ", "))
	}

	m := &Mapping{}
	for _, p := range explicit {
		if !slices.ContainsFunc(src, func(s string) bool { return within(p.From, s) }) {
			return nil, fmt.Errorf("--map %s=%s: the snapshot has no path %s (it holds %s). Nothing was changed", p.From, p.To, p.From, strings.Join(src, ", "))
		}
		if !slices.ContainsFunc(dst, func(d string) bool { return within(p.To, d) }) {
			return nil, fmt.Errorf("--map %s=%s: %s is not one of %s's data paths nor below one (they are %s). Nothing was changed", p.From, p.To, p.To, host, strings.Join(dst, ", "))
		}
		m.Maps = append(m.Maps, p)
	}
	// Snapshot paths no map names stay where they are, if the target has
	// them and no map already puts something there.
	var unmapped []string
	for _, s := range src {
		if slices.ContainsFunc(m.Maps, func(p PathMap) bool { return within(p.From, s) || within(s, p.From) }) {
			continue
		}
		if slices.Contains(dst, s) && !slices.ContainsFunc(m.Maps, func(p PathMap) bool { return within(p.To, s) || within(s, p.To) }) {
			m.Maps = append(m.Maps, PathMap{From: s, To: s})
			continue
		}
		unmapped = append(unmapped, s)
	}
	if len(unmapped) > 0 {
		return nil, fmt.Errorf("snapshot path %s has no place on %s: add --map SRC=DST for it (%s's data paths are %s). Nothing was changed",
			strings.Join(unmapped, ", "), host, host, strings.Join(dst, ", "))
	}
	for i, a := range m.Maps {
		for j, b := range m.Maps {
			if i == j {
				continue
			}
			if within(a.From, b.From) {
				return nil, fmt.Errorf("--map: %s and %s overlap in the snapshot; map each directory once. Nothing was changed", a.From, b.From)
			}
			if within(a.To, b.To) {
				return nil, fmt.Errorf("--map: %s and %s both land in %s; give each its own place. Nothing was changed", a.From, b.From, a.To)
			}
		}
	}
	var empty []string
	for _, d := range dst {
		if !slices.ContainsFunc(m.Maps, func(p PathMap) bool { return within(p.To, d) }) {
			empty = append(empty, d)
		}
	}
	if len(empty) > 0 {
		return nil, fmt.Errorf("%s's data path %s would receive nothing from the snapshot, and a restore replaces every data path: map a snapshot path onto it with --map SRC=DST, or restore onto a host without it. Nothing was changed",
			host, strings.Join(empty, ", "))
	}
	slices.SortFunc(m.Maps, func(a, b PathMap) int { return strings.Compare(a.To, b.To) })
	return m, nil
}

// autoMap maps the only snapshot path onto the only target path. Pangolin
// keeps its data in config/ below its project directory (the installer's
// /opt/pangolin or /root, the NixOS module's dataDir): when one side names
// the config/ directory and the other the project directory, config/ is
// mapped onto config/, so Pangolin finds its files where it looks.
func autoMap(src, dst string) *Mapping {
	m := &Mapping{Auto: true}
	switch {
	case path.Base(src) == "config" && path.Base(dst) != "config":
		m.Maps = []PathMap{{From: src, To: dst + "/config"}}
		m.Reason = fmt.Sprintf("one data path on each side; %s is a Pangolin config/ directory, so it goes to config/ in the project directory %s", src, dst)
	case path.Base(dst) == "config" && path.Base(src) != "config":
		m.Maps = []PathMap{{From: src + "/config", To: dst}}
		m.Reason = fmt.Sprintf("one data path on each side; %s is a Pangolin config/ directory, so it receives config/ of the project directory %s", dst, src)
	default:
		m.Maps = []PathMap{{From: src, To: dst}}
		m.Reason = "one data path on each side"
	}
	return m
}

// missing returns the paths of a not in b.
func missing(a, b []string) []string {
	var out []string
	for _, p := range a {
		if !slices.Contains(b, p) {
			out = append(out, p)
		}
	}
	return out
}

func firstMissing(a, b []string) string {
	if m := missing(a, b); len(m) > 0 {
		return m[0]
	}
	return a[0]
}

// targetRoots returns the target data paths the mapping fills, sorted: the
// paths the agent is told it receives.
func (m *Mapping) targetRoots(targetPaths []string) []string {
	var out []string
	for _, d := range cleanPaths(targetPaths) {
		if slices.ContainsFunc(m.Maps, func(p PathMap) bool { return within(p.To, d) }) {
			out = append(out, d)
		}
	}
	return out
}
