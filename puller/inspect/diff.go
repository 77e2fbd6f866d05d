package inspect

import (
	"context"
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
	if err := c.walk(ctx, stats, tree1, tree2); err != nil {
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

// The comparison walks both snapshots with an explicit stack of frames, as
// Ls does: one frame per open directory pair (diff), per directory only
// one side has (print: everything below it was added or removed), or per
// directory both share (collect: only its blobs count). Paths share one
// buffer, so memory grows with the depth, not with its square. The order
// of changes, the warnings and the statistics are restic diff's.
type frameKind int

const (
	frameDiff frameKind = iota
	framePrint
	frameCollect
)

type diffFrame struct {
	kind   frameKind
	a, b   *treeCursor // diff: the older and newer tree; print and collect: a
	na, nb *data.Node  // diff: the next node of each side, peeked
	peeked bool
	prefix []byte
	top    bool // the snapshots' root trees: their errors end the diff

	// print: the side's sign, statistics and blob set.
	mode  string
	stat  *DiffStat
	blobs restic.AssociatedBlobSet
}

// exhausted reports whether the frame has nothing after what it last
// returned, so a descent may drop it first.
func (f *diffFrame) exhausted() bool {
	if f.kind == frameDiff {
		return f.na == nil && f.nb == nil && !f.a.more() && !f.b.more()
	}
	return !f.a.more()
}

func (c *comparer) walk(ctx context.Context, stats *DiffStats, tree1, tree2 restic.ID) error {
	a, err := openTree(ctx, c.repo, tree1)
	if err != nil {
		return err
	}
	b, err := openTree(ctx, c.repo, tree2)
	if err != nil {
		return err
	}
	stack := []*diffFrame{{kind: frameDiff, a: a, b: b, prefix: make([]byte, 0, 4096), top: true}}
	// fail ends a frame on error: the root's error ends the diff, a
	// deeper one is a warning and its parent goes on.
	fail := func(f *diffFrame, err error) error {
		for len(stack) > 0 && stack[len(stack)-1] != f {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			stack = stack[:len(stack)-1]
		}
		if f.top {
			return err
		}
		if err != context.Canceled {
			c.warn(err)
		}
		return nil
	}
	// push opens a subtree frame below f, dropping f first if it is done.
	push := func(f *diffFrame, nf *diffFrame, ids ...restic.ID) error {
		cur, err := openTree(ctx, c.repo, ids[0])
		if err != nil {
			if err != context.Canceled {
				c.warn(err)
			}
			return nil
		}
		nf.a = cur
		if len(ids) == 2 {
			if nf.b, err = openTree(ctx, c.repo, ids[1]); err != nil {
				if err != context.Canceled {
					c.warn(err)
				}
				return nil
			}
		}
		if !f.top && f.exhausted() && len(stack) > 0 && stack[len(stack)-1] == f {
			if err := f.finish(); err != nil {
				if ferr := fail(f, err); ferr != nil {
					return ferr
				}
			} else {
				stack = stack[:len(stack)-1]
			}
		}
		stack = append(stack, nf)
		return nil
	}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		f := stack[len(stack)-1]
		switch f.kind {
		case frameDiff:
			node1, node2, err := f.nextPair()
			if err != nil {
				if err := fail(f, err); err != nil {
					return err
				}
				continue
			}
			if node1 == nil && node2 == nil {
				stack = stack[:len(stack)-1]
				continue
			}
			if err := c.diffEntry(f, stats, node1, node2, push); err != nil {
				return err
			}
		case framePrint, frameCollect:
			node, err := f.a.next()
			if err != nil {
				if err := fail(f, err); err != nil {
					return err
				}
				continue
			}
			if node == nil {
				stack = stack[:len(stack)-1]
				continue
			}
			full := joinPath(f.prefix, node.Name)
			if f.kind == frameCollect {
				addBlobs(c.blobsFor(f), node)
				if node.Type == data.NodeTypeDir {
					if err := push(f, &diffFrame{kind: frameCollect, prefix: full}, *node.Subtree); err != nil {
						return err
					}
				}
				continue
			}
			name := string(full)
			if node.Type == data.NodeTypeDir {
				name += "/"
			}
			c.change(name, f.mode)
			f.stat.add(node)
			addBlobs(f.blobs, node)
			if node.Type == data.NodeTypeDir {
				if err := push(f, &diffFrame{kind: framePrint, prefix: full, mode: f.mode, stat: f.stat, blobs: f.blobs}, *node.Subtree); err != nil {
					return err
				}
			}
		}
	}
	return ctx.Err()
}

// blobsFor is the set a collect frame adds to: the blobs both share.
func (c *comparer) blobsFor(*diffFrame) restic.AssociatedBlobSet { return c.common }

// finish reads the end of a frame's trees (their closing brackets).
func (f *diffFrame) finish() error {
	if _, err := f.a.next(); err != nil {
		return err
	}
	if f.b != nil {
		if _, err := f.b.next(); err != nil {
			return err
		}
	}
	return nil
}

// nextPair is restic's dual tree iteration: the next name of either tree,
// with the node each side has under it.
func (f *diffFrame) nextPair() (node1, node2 *data.Node, err error) {
	if !f.peeked {
		if f.na, err = f.a.next(); err != nil {
			return nil, nil, err
		}
		if f.nb, err = f.b.next(); err != nil {
			return nil, nil, err
		}
		f.peeked = true
	}
	node1, node2 = f.na, f.nb
	if node1 != nil && node2 != nil {
		if node1.Name < node2.Name {
			node2 = nil
		} else if node1.Name > node2.Name {
			node1 = nil
		}
	}
	if node1 != nil {
		if f.na, err = f.a.next(); err != nil {
			return nil, nil, err
		}
	}
	if node2 != nil {
		if f.nb, err = f.b.next(); err != nil {
			return nil, nil, err
		}
	}
	return node1, node2, nil
}

// diffEntry reports one name of a directory pair and opens what is below.
func (c *comparer) diffEntry(f *diffFrame, stats *DiffStats, node1, node2 *data.Node, push func(f, nf *diffFrame, ids ...restic.ID) error) error {
	addBlobs(c.before, node1)
	addBlobs(c.after, node2)
	var n *data.Node
	if node1 != nil {
		n = node1
	} else {
		n = node2
	}
	full := joinPath(f.prefix, n.Name)
	name := string(full)
	switch {
	case node1 != nil && node2 != nil:
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
			if node1.Subtree.Equal(*node2.Subtree) {
				return push(f, &diffFrame{kind: frameCollect, prefix: full}, *node1.Subtree)
			}
			return push(f, &diffFrame{kind: frameDiff, prefix: full}, *node1.Subtree, *node2.Subtree)
		}
	default: // only in one of them: removed, or added
		node, mode, stat, blobs := node1, "-", &stats.Removed, c.before
		if node1 == nil {
			node, mode, stat, blobs = node2, "+", &stats.Added, c.after
		}
		if node.Type == data.NodeTypeDir {
			name += "/"
		}
		c.change(name, mode)
		stat.add(node)
		if node.Type == data.NodeTypeDir {
			return push(f, &diffFrame{kind: framePrint, prefix: full, mode: mode, stat: stat, blobs: blobs}, *node.Subtree)
		}
	}
	return nil
}
