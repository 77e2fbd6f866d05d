package restore

import (
	"fmt"

	"github.com/haulproject/haul/puller/internal/restic/filter"
)

// Patterns chooses part of a snapshot, with `restic restore`'s flags of the
// same names. Includes and excludes cannot be combined.
type Patterns struct {
	Include, IInclude, IncludeFile []string
	Exclude, IExclude, ExcludeFile []string
}

// Empty reports whether no pattern is given (the whole snapshot).
func (p Patterns) Empty() bool {
	return len(p.Include)+len(p.IInclude)+len(p.IncludeFile)+len(p.Exclude)+len(p.IExclude)+len(p.ExcludeFile) == 0
}

// Selector builds the restorer's SelectFilter from p exactly as `restic
// restore` does (cmd/restic/cmd_restore.go): with excludes, an item is
// restored unless a pattern matches it, and a directory's children only if
// the directory is; with includes, an item is restored if a pattern matches
// it, and a directory is entered if a pattern may match below it. A nil
// selector (no patterns) restores everything. warn receives pattern errors.
func Selector(p Patterns, warn func(string)) (func(item string, isDir bool) (selected, childMayBeSelected bool), error) {
	warnf := func(format string, args ...any) {
		if warn != nil {
			warn(fmt.Sprintf(format, args...))
		}
	}
	excl := filter.ExcludePatternOptions{Excludes: p.Exclude, InsensitiveExcludes: p.IExclude, ExcludeFiles: p.ExcludeFile}
	incl := filter.IncludePatternOptions{Includes: p.Include, InsensitiveIncludes: p.IInclude, IncludeFiles: p.IncludeFile}
	rejects, err := excl.CollectPatterns(warnf)
	if err != nil {
		return nil, err
	}
	includes, err := incl.CollectPatterns(warnf)
	if err != nil {
		return nil, err
	}
	switch {
	case len(rejects) > 0 && len(includes) > 0:
		return nil, fmt.Errorf("exclude and include patterns are mutually exclusive (as in restic restore): give one kind")
	case len(rejects) > 0:
		return func(item string, isDir bool) (bool, bool) {
			for _, reject := range rejects {
				if reject(item) {
					return false, false
				}
			}
			return true, isDir
		}, nil
	case len(includes) > 0:
		return func(item string, isDir bool) (bool, bool) {
			selected, child := false, false
			for _, include := range includes {
				m, c := include(item)
				selected, child = selected || m, child || c
				if selected && child {
					break
				}
			}
			return selected, child && isDir
		}, nil
	}
	return nil, nil
}
