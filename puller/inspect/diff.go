package inspect

import (
	"context"
	"path"
	"reflect"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// Change is one line of a diff: `restic diff --json`'s change record.
// Modifier is "+" added, "-" removed, "M" content modified, "T" type
// changed, "U" metadata updated (with DiffOptions.Metadata), and "?" after
// "M" when the content changed but no metadata did (likely bitrot).
type Change struct {
	MessageType string `json:"message_type"` // "change"
	Path        string `json:"path"`
	Modifier    string `json:"modifier"`
}

// DiffStat counts one side's items and the blobs only it references.
type DiffStat struct {
	Files     int    `json:"files"`
	Dirs      int    `json:"dirs"`
	Others    int    `json:"others"`
	DataBlobs int    `json:"data_blobs"`
	TreeBlobs int    `json:"tree_blobs"`
	Bytes     uint64 `json:"bytes"`
}

// DiffStats is `restic diff --json`'s closing statistics record.
type DiffStats struct {
	MessageType    string   `json:"message_type"` // "statistics"
	SourceSnapshot string   `json:"source_snapshot"`
	TargetSnapshot string   `json:"target_snapshot"`
	ChangedFiles   int      `json:"changed_files"`
	Added          DiffStat `json:"added"`
	Removed        DiffStat `json:"removed"`
}

// DiffOptions configures Diff.
type DiffOptions struct {
	// Metadata also reports items whose metadata alone changed ("U").
	Metadata bool
}

// Repository is what Diff reads: trees, and blob sizes for the statistics.
type Repository interface {
	restic.BlobLoader
	LookupBlobSize(t restic.BlobType, id restic.ID) (size uint, exists bool)
	NewAssociatedBlobSet() restic.AssociatedBlobSet
}

// Diff compares tree1 (the older snapshot) with tree2 and calls emit for
// every change, in `restic diff`'s order. source and target name the
// snapshots in the statistics. Errors below the top level are passed to
// warn and the comparison goes on, as restic does.
func Diff(ctx context.Context, repo Repository, source, target string, tree1, tree2 restic.ID, opts DiffOptions, emit func(Change), warn func(error)) (*DiffStats, error) {
	c := &comparer{repo: repo, opts: opts, emit: emit, warn: warn,
		before: repo.NewAssociatedBlobSet(), after: repo.NewAssociatedBlobSet(), common: repo.NewAssociatedBlobSet()}
	if c.warn == nil {
		c.warn = func(error) {}
	}
	stats := &DiffStats{MessageType: "statistics", SourceSnapshot: source, TargetSnapshot: target}
	c.before.Insert(restic.BlobHandle{Type: restic.TreeBlob, ID: tree1})
	c.after.Insert(restic.BlobHandle{Type: restic.TreeBlob, ID: tree2})
	if err := c.diffTree(ctx, stats, "/", tree1, tree2); err != nil {
		return nil, err
	}
	both := c.before.Intersect(c.after)
	c.countBlobs(c.before.Sub(both).Sub(c.common), &stats.Removed)
	c.countBlobs(c.after.Sub(both).Sub(c.common), &stats.Added)
	return stats, nil
}

type comparer struct {
	repo                  Repository
	opts                  DiffOptions
	emit                  func(Change)
	warn                  func(error)
	before, after, common restic.AssociatedBlobSet
}

func (c *comparer) change(p, mod string) {
	c.emit(Change{MessageType: "change", Path: p, Modifier: mod})
}

func (s *DiffStat) add(node *data.Node) {
	switch node.Type {
	case data.NodeTypeFile:
		s.Files++
	case data.NodeTypeDir:
		s.Dirs++
	default:
		s.Others++
	}
}

func addBlobs(bs restic.AssociatedBlobSet, node *data.Node) {
	if node == nil {
		return
	}
	switch node.Type {
	case data.NodeTypeFile:
		for _, id := range node.Content {
			bs.Insert(restic.BlobHandle{ID: id, Type: restic.DataBlob})
		}
	case data.NodeTypeDir:
		bs.Insert(restic.BlobHandle{ID: *node.Subtree, Type: restic.TreeBlob})
	}
}

func (c *comparer) countBlobs(blobs restic.AssociatedBlobSet, s *DiffStat) {
	for h := range blobs.Keys() {
		switch h.Type {
		case restic.DataBlob:
			s.DataBlobs++
		case restic.TreeBlob:
			s.TreeBlobs++
		}
		size, found := c.repo.LookupBlobSize(h.Type, h.ID)
		if !found {
			c.warn(errBlobSize{h})
			continue
		}
		s.Bytes += uint64(size)
	}
}

type errBlobSize struct{ h restic.BlobHandle }

func (e errBlobSize) Error() string { return "unable to find blob size for " + e.h.String() }

// printDir reports everything below a removed or added directory.
func (c *comparer) printDir(ctx context.Context, mode string, stats *DiffStat, blobs restic.AssociatedBlobSet, prefix string, id restic.ID) error {
	tree, err := data.LoadTree(ctx, c.repo, id)
	if err != nil {
		return err
	}
	for item := range tree {
		if item.Error != nil {
			return item.Error
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		node := item.Node
		name := path.Join(prefix, node.Name)
		if node.Type == data.NodeTypeDir {
			name += "/"
		}
		c.change(name, mode)
		stats.add(node)
		addBlobs(blobs, node)
		if node.Type == data.NodeTypeDir {
			if err := c.printDir(ctx, mode, stats, blobs, name, *node.Subtree); err != nil && err != context.Canceled {
				c.warn(err)
			}
		}
	}
	return ctx.Err()
}

// collectDir records the blobs of a subtree both snapshots share.
func (c *comparer) collectDir(ctx context.Context, blobs restic.AssociatedBlobSet, id restic.ID) error {
	tree, err := data.LoadTree(ctx, c.repo, id)
	if err != nil {
		return err
	}
	for item := range tree {
		if item.Error != nil {
			return item.Error
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		addBlobs(blobs, item.Node)
		if item.Node.Type == data.NodeTypeDir {
			if err := c.collectDir(ctx, blobs, *item.Node.Subtree); err != nil && err != context.Canceled {
				c.warn(err)
			}
		}
	}
	return ctx.Err()
}

func (c *comparer) diffTree(ctx context.Context, stats *DiffStats, prefix string, id1, id2 restic.ID) error {
	tree1, err := data.LoadTree(ctx, c.repo, id1)
	if err != nil {
		return err
	}
	tree2, err := data.LoadTree(ctx, c.repo, id2)
	if err != nil {
		return err
	}
	for dt := range data.DualTreeIterator(tree1, tree2) {
		if dt.Error != nil {
			return dt.Error
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		node1, node2 := dt.Tree1, dt.Tree2
		var name string
		if node1 != nil {
			name = node1.Name
		} else {
			name = node2.Name
		}
		addBlobs(c.before, node1)
		addBlobs(c.after, node2)

		switch {
		case node1 != nil && node2 != nil:
			name := path.Join(prefix, name)
			mod := ""
			if node1.Type != node2.Type {
				mod += "T"
			}
			if node2.Type == data.NodeTypeDir {
				name += "/"
			}
			if node1.Type == data.NodeTypeFile && node2.Type == data.NodeTypeFile && !reflect.DeepEqual(node1.Content, node2.Content) {
				mod += "M"
				stats.ChangedFiles++
				n1, n2 := *node1, *node2
				n1.Content, n2.Content = nil, nil
				if n1.Equals(n2) {
					mod += "?" // content changed, metadata did not: probable bitrot
				}
			} else if c.opts.Metadata && !node1.Equals(*node2) {
				mod += "U"
			}
			if mod != "" {
				c.change(name, mod)
			}
			if node1.Type == data.NodeTypeDir && node2.Type == data.NodeTypeDir {
				var err error
				if node1.Subtree.Equal(*node2.Subtree) {
					err = c.collectDir(ctx, c.common, *node1.Subtree)
				} else {
					err = c.diffTree(ctx, stats, name, *node1.Subtree, *node2.Subtree)
				}
				if err != nil && err != context.Canceled {
					c.warn(err)
				}
			}
		case node1 != nil:
			p := path.Join(prefix, name)
			if node1.Type == data.NodeTypeDir {
				p += "/"
			}
			c.change(p, "-")
			stats.Removed.add(node1)
			if node1.Type == data.NodeTypeDir {
				if err := c.printDir(ctx, "-", &stats.Removed, c.before, p, *node1.Subtree); err != nil && err != context.Canceled {
					c.warn(err)
				}
			}
		default:
			p := path.Join(prefix, name)
			if node2.Type == data.NodeTypeDir {
				p += "/"
			}
			c.change(p, "+")
			stats.Added.add(node2)
			if node2.Type == data.NodeTypeDir {
				if err := c.printDir(ctx, "+", &stats.Added, c.after, p, *node2.Subtree); err != nil && err != context.Canceled {
					c.warn(err)
				}
			}
		}
	}
	return ctx.Err()
}
