package restore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
)

// Comparison is the outcome of CompareSnapshots.
type Comparison struct {
	Paths []string `json:"paths"`
	Nodes int64    `json:"nodes_compared"`
	// Diffs lists the differences, at most MaxDiffs of them; DiffCount
	// counts them all.
	Diffs     []string `json:"diffs,omitempty"`
	DiffCount int      `json:"diff_count"`
}

// MaxDiffs bounds the differences a Comparison lists.
const MaxDiffs = 50

// Equal reports whether no difference was found.
func (c *Comparison) Equal() bool { return c.DiffCount == 0 }

// CompareSnapshots compares the data paths of two snapshots node by node
// (see CompareMapped); both must hold the same paths.
func CompareSnapshots(ctx context.Context, r *repo.Repo, a, b *repo.Snapshot) (*Comparison, error) {
	if !slices.Equal(cleanPaths(a.Paths), cleanPaths(b.Paths)) {
		c := &Comparison{Paths: slices.Clone(a.Paths)}
		c.diff("snapshot %s holds %s, snapshot %s holds %s", a.ID.Str(), strings.Join(a.Paths, ", "), b.ID.Str(), strings.Join(b.Paths, ", "))
		return c, nil
	}
	m := &Mapping{}
	for _, p := range cleanPaths(a.Paths) {
		m.Maps = append(m.Maps, PathMap{From: p, To: p})
	}
	return CompareMapped(ctx, r, a, b, m)
}

// CompareMapped compares, for each of m's maps, the directory From of
// snapshot a with the directory To of snapshot b, node by node:
// names, type, content (chunk IDs), size, mode, mtime, owner (numeric),
// link target and device number. Access and change times, inode numbers
// and user names differ between hosts by nature and are not compared; the
// directories above the data paths are not either (they belong to the
// hosts, not to the data).
// Differences are reported at the path in a.
func CompareMapped(ctx context.Context, r *repo.Repo, a, b *repo.Snapshot, m *Mapping) (*Comparison, error) {
	c := &Comparison{}
	for _, p := range m.Maps {
		if p.From == p.To {
			c.Paths = append(c.Paths, p.From)
		} else {
			c.Paths = append(c.Paths, p.String())
		}
		na, err := findNode(ctx, r, a, p.From)
		if err != nil {
			return nil, err
		}
		nb, err := findNode(ctx, r, b, p.To)
		if err != nil {
			c.diff("%s: %v", p.To, err)
			continue
		}
		if err := c.compare(ctx, r, p.From, na, nb); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Comparison) diff(format string, args ...any) {
	c.DiffCount++
	if len(c.Diffs) < MaxDiffs {
		c.Diffs = append(c.Diffs, fmt.Sprintf(format, args...))
	}
}

// findNode returns the node at path (absolute) in sn's tree.
func findNode(ctx context.Context, r *repo.Repo, sn *repo.Snapshot, path string) (*data.Node, error) {
	if sn.Tree == nil {
		return nil, fmt.Errorf("snapshot %s has no tree", sn.ID.Str())
	}
	tree := *sn.Tree
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, name := range parts {
		nodes, err := loadNodes(ctx, r, tree)
		if err != nil {
			return nil, err
		}
		var found *data.Node
		for _, n := range nodes {
			if n.Name == name {
				found = n
				break
			}
		}
		if found == nil {
			return nil, fmt.Errorf("snapshot %s has no %s", sn.ID.Str(), "/"+strings.Join(parts[:i+1], "/"))
		}
		if i == len(parts)-1 {
			return found, nil
		}
		if found.Type != data.NodeTypeDir || found.Subtree == nil {
			return nil, fmt.Errorf("snapshot %s: %s is not a directory", sn.ID.Str(), "/"+strings.Join(parts[:i+1], "/"))
		}
		tree = *found.Subtree
	}
	return nil, fmt.Errorf("snapshot %s: empty path", sn.ID.Str())
}

func loadNodes(ctx context.Context, r *repo.Repo, id restic.ID) ([]*data.Node, error) {
	it, err := data.LoadTree(ctx, r, id)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Str(), err)
	}
	var nodes []*data.Node
	for item := range it {
		if item.Error != nil {
			return nil, fmt.Errorf("decode tree %s: %w", id.Str(), item.Error)
		}
		nodes = append(nodes, item.Node)
	}
	return nodes, nil
}

func (c *Comparison) compare(ctx context.Context, r *repo.Repo, path string, a, b *data.Node) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.Nodes++
	if a.Type != b.Type {
		c.diff("%s: type %s vs %s", path, a.Type, b.Type)
		return nil
	}
	if a.Mode != b.Mode {
		c.diff("%s: mode %v vs %v", path, a.Mode, b.Mode)
	}
	if !a.ModTime.Equal(b.ModTime) {
		c.diff("%s: mtime %v vs %v", path, a.ModTime, b.ModTime)
	}
	if a.UID != b.UID || a.GID != b.GID {
		c.diff("%s: owner %d:%d vs %d:%d", path, a.UID, a.GID, b.UID, b.GID)
	}
	switch a.Type {
	case data.NodeTypeFile:
		if a.Size != b.Size || !slices.Equal(a.Content, b.Content) {
			c.diff("%s: content differs (%d bytes in %d chunks vs %d bytes in %d chunks)", path, a.Size, len(a.Content), b.Size, len(b.Content))
		}
	case data.NodeTypeSymlink:
		if a.LinkTarget != b.LinkTarget || string(a.LinkTargetRaw) != string(b.LinkTargetRaw) {
			c.diff("%s: link target %q vs %q", path, a.LinkTarget, b.LinkTarget)
		}
	case data.NodeTypeDev, data.NodeTypeCharDev:
		if a.Device != b.Device {
			c.diff("%s: device %d vs %d", path, a.Device, b.Device)
		}
	case data.NodeTypeDir:
		if a.Subtree == nil || b.Subtree == nil {
			c.diff("%s: directory without a subtree", path)
			return nil
		}
		if *a.Subtree == *b.Subtree {
			// Identical trees: count their nodes without comparing.
			return c.count(ctx, r, *a.Subtree)
		}
		na, err := loadNodes(ctx, r, *a.Subtree)
		if err != nil {
			return err
		}
		nb, err := loadNodes(ctx, r, *b.Subtree)
		if err != nil {
			return err
		}
		i, j := 0, 0
		for i < len(na) || j < len(nb) {
			switch {
			case j == len(nb) || (i < len(na) && na[i].Name < nb[j].Name):
				c.diff("%s/%s: only in the first snapshot", path, na[i].Name)
				i++
			case i == len(na) || nb[j].Name < na[i].Name:
				c.diff("%s/%s: only in the second snapshot", path, nb[j].Name)
				j++
			default:
				if err := c.compare(ctx, r, path+"/"+na[i].Name, na[i], nb[j]); err != nil {
					return err
				}
				i++
				j++
			}
		}
	}
	return nil
}

// count adds the nodes below an unchanged tree.
func (c *Comparison) count(ctx context.Context, r *repo.Repo, id restic.ID) error {
	nodes, err := loadNodes(ctx, r, id)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		c.Nodes++
		if n.Type == data.NodeTypeDir && n.Subtree != nil {
			if err := c.count(ctx, r, *n.Subtree); err != nil {
				return err
			}
		}
	}
	return nil
}
