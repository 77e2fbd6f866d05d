package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// MaxChanges bounds the changes LiveChanges lists.
const MaxChanges = 50

// LiveChanges compares each staged data path with the live one it would
// replace, entry by entry (type, mode, owner, size, mtime, link target;
// file content is not read, as rsync's quick check does), and lists what
// the swap would change: at most MaxChanges lines, and the total count. A
// dry run reports them, so an operator sees what a restore onto live data
// would replace before asking for it. Nothing is followed or written:
// entries are lstat'ed.
func (s *Stage) LiveChanges() (lines []string, count int, err error) {
	note := func(format string, args ...any) {
		count++
		if len(lines) < MaxChanges {
			lines = append(lines, fmt.Sprintf(format, args...))
		}
	}
	for _, r := range s.roots {
		live, err := listTree(r.dataPath)
		if err != nil {
			return lines, count, err
		}
		staged, err := listTree(r.staging)
		if err != nil {
			return lines, count, err
		}
		names := make([]string, 0, len(live)+len(staged))
		for rel := range live {
			names = append(names, rel)
		}
		for rel := range staged {
			if _, ok := live[rel]; !ok {
				names = append(names, rel)
			}
		}
		sort.Strings(names)
		for _, rel := range names {
			p := filepath.Join(r.dataPath, rel)
			a, inLive := live[rel]
			b, inStaged := staged[rel]
			switch {
			case !inStaged:
				note("%s: removed (not in the snapshot)", p)
			case !inLive:
				note("%s: added", p)
			default:
				if d := a.differs(b); d != "" {
					note("%s: %s", p, d)
				}
			}
		}
	}
	return lines, count, nil
}

// entryInfo is what LiveChanges compares of one entry.
type entryInfo struct {
	mode     uint32
	uid, gid uint32
	size     int64
	mtime    unix.Timespec
	link     string
}

func (a entryInfo) differs(b entryInfo) string {
	switch {
	case a.mode&unix.S_IFMT != b.mode&unix.S_IFMT:
		return "type differs"
	case a.link != b.link:
		return fmt.Sprintf("link target %q, the snapshot's %q", a.link, b.link)
	case a.mode&unix.S_IFMT == unix.S_IFREG && a.size != b.size:
		return fmt.Sprintf("%d bytes, the snapshot's %d", a.size, b.size)
	case a.mode&0o7777 != b.mode&0o7777:
		return fmt.Sprintf("mode %04o, the snapshot's %04o", a.mode&0o7777, b.mode&0o7777)
	case a.uid != b.uid || a.gid != b.gid:
		return fmt.Sprintf("owner %d:%d, the snapshot's %d:%d", a.uid, a.gid, b.uid, b.gid)
	case a.mode&unix.S_IFMT == unix.S_IFREG && a.mtime != b.mtime:
		return "modified at another time (content may differ)"
	}
	return ""
}

// listTree lstat's every entry below dir, by path relative to it; a
// missing dir is empty.
func listTree(dir string) (map[string]entryInfo, error) {
	out := map[string]entryInfo{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if p == dir {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entryInfo{mode: st.Mode, uid: st.Uid, gid: st.Gid, size: st.Size, mtime: st.Mtim}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			e.link, _ = os.Readlink(p)
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("compare with the live data: %w", err)
	}
	return out, nil
}
