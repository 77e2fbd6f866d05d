package restore

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// SpecialFiles lists what a restore did not put back as the snapshot has
// it, because it could plant a device or a privilege: device nodes
// (skipped) and setuid/setgid bits of files (cleared). Restores do this
// unless the operator passes --allow-special. Setgid on a directory only
// makes new entries inherit its group and is kept.
type SpecialFiles struct {
	DevicesSkipped []string `json:"devices_skipped,omitempty"`
	BitsCleared    []string `json:"setid_cleared,omitempty"`
	// Counted but not listed past MaxSpecialListed each.
	Devices int `json:"devices"`
	Setid   int `json:"setid"`
}

// MaxSpecialListed bounds the paths SpecialFiles lists of each kind.
const MaxSpecialListed = 50

// Count is how many entries were changed.
func (s *SpecialFiles) Count() int { return s.Devices + s.Setid }

func (s *SpecialFiles) device(path string) {
	s.Devices++
	if len(s.DevicesSkipped) < MaxSpecialListed {
		s.DevicesSkipped = append(s.DevicesSkipped, path)
	}
}

func (s *SpecialFiles) setid(path string) {
	s.Setid++
	if len(s.BitsCleared) < MaxSpecialListed {
		s.BitsCleared = append(s.BitsCleared, path)
	}
}

// Lines says what was changed, one warning per entry listed.
func (s *SpecialFiles) Lines() []string {
	var out []string
	for _, p := range s.DevicesSkipped {
		out = append(out, fmt.Sprintf("device node %s skipped (restore it with --allow-special)", p))
	}
	if n := s.Devices - len(s.DevicesSkipped); n > 0 {
		out = append(out, fmt.Sprintf("%d more device nodes skipped", n))
	}
	for _, p := range s.BitsCleared {
		out = append(out, fmt.Sprintf("setuid/setgid bits of %s cleared (keep them with --allow-special)", p))
	}
	if n := s.Setid - len(s.BitsCleared); n > 0 {
		out = append(out, fmt.Sprintf("setuid/setgid bits of %d more files cleared", n))
	}
	return out
}

// specialFilter hands restic's restorer the snapshot's trees without
// device nodes and with the setuid/setgid bits of non-directories
// cleared, so the restorer never creates them, not even for a moment.
type specialFilter struct {
	restic.Repository
}

const setid = os.ModeSetuid | os.ModeSetgid

// special reports whether n is a device node or a non-directory with
// setuid/setgid bits.
func special(n *data.Node) (device, bits bool) {
	if n.Type == data.NodeTypeDev || n.Type == data.NodeTypeCharDev {
		return true, false
	}
	return false, n.Type != data.NodeTypeDir && n.Mode&setid != 0
}

func (f specialFilter) LoadBlob(ctx context.Context, t restic.BlobType, id restic.ID, buf []byte) ([]byte, error) {
	b, err := f.Repository.LoadBlob(ctx, t, id, buf)
	if err != nil || t != restic.TreeBlob {
		return b, err
	}
	nodes, err := decodeTree(b)
	if err != nil {
		return nil, err
	}
	changed := false
	kept := nodes[:0]
	for _, n := range nodes {
		dev, bits := special(n)
		if dev {
			changed = true
			continue
		}
		if bits {
			changed = true
			n.Mode &^= setid
		}
		kept = append(kept, n)
	}
	if !changed {
		return b, nil
	}
	tb := data.NewTreeJSONBuilder()
	for _, n := range kept {
		if err := tb.AddNode(n); err != nil {
			return nil, err
		}
	}
	return tb.Finalize()
}

func decodeTree(b []byte) ([]*data.Node, error) {
	it, err := data.NewTreeNodeIterator(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var nodes []*data.Node
	for item := range it {
		if item.Error != nil {
			return nil, item.Error
		}
		nodes = append(nodes, item.Node)
	}
	return nodes, nil
}

// findSpecial lists the special entries of tree id below path that sel
// (nil: everything) selects, as the restorer will see them.
func findSpecial(ctx context.Context, r restic.BlobLoader, id restic.ID, path string, sel func(string, bool) (bool, bool), out *SpecialFiles) error {
	b, err := r.LoadBlob(ctx, restic.TreeBlob, id, nil)
	if err != nil {
		return fmt.Errorf("load tree %s (%s): %w", id.Str(), path, err)
	}
	nodes, err := decodeTree(b)
	if err != nil {
		return fmt.Errorf("decode tree %s (%s): %w", id.Str(), path, err)
	}
	for _, n := range nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := path + "/" + n.Name
		selected, child := true, true
		if sel != nil {
			selected, child = sel(p, n.Type == data.NodeTypeDir)
		}
		dev, bits := special(n)
		switch {
		case !selected:
		case dev:
			out.device(p)
		case bits:
			out.setid(p)
		}
		if n.Type == data.NodeTypeDir && n.Subtree != nil && child {
			if err := findSpecial(ctx, r, *n.Subtree, p, sel, out); err != nil {
				return err
			}
		}
	}
	return nil
}
