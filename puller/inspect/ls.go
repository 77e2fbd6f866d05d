// Package inspect looks inside snapshots without restoring them: it lists a
// snapshot's files as `restic ls` does and compares two snapshots as
// `restic diff` does, with the same selection rules and output records, so
// an operator can see what changed between two pulls.
package inspect

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/fs"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/internal/restic/walker"
)

// LsOptions selects what Ls visits.
type LsOptions struct {
	// Dirs limits the listing to these absolute paths in the snapshot: each
	// one and its direct children (everything below with Recursive). Empty
	// lists the whole snapshot.
	Dirs      []string
	Recursive bool
}

// Ls walks the tree and calls visit for every node `restic ls` would print,
// in the same order (depth-first, names sorted by their bytes).
func Ls(ctx context.Context, repo restic.BlobLoader, tree restic.ID, opts LsOptions, visit func(path string, node *data.Node) error) error {
	for _, d := range opts.Dirs {
		if !strings.HasPrefix(d, "/") {
			return fmt.Errorf("path %q must be absolute, as in the snapshot (starting with /)", d)
		}
	}
	within := func(p string) bool { // p is inside one of the listed dirs
		if len(opts.Dirs) == 0 {
			return true
		}
		for _, d := range opts.Dirs {
			if fs.HasPathPrefix(d, p) {
				return true
			}
		}
		return false
	}
	approaching := func(p string) bool { // p leads to one of the listed dirs
		if len(opts.Dirs) == 0 {
			return true
		}
		for _, d := range opts.Dirs {
			if fs.HasPathPrefix(p, d) {
				return true
			}
		}
		return false
	}
	return walker.Walk(ctx, repo, tree, walker.WalkVisitor{
		ProcessNode: func(_ restic.ID, p string, node *data.Node, err error) error {
			if err != nil {
				return err
			}
			if node == nil {
				return nil
			}
			if within(p) {
				if err := visit(p, node); err != nil {
					return err
				}
				if opts.Recursive {
					return nil
				}
			}
			if approaching(p) {
				return nil
			}
			if node.Type == data.NodeTypeDir {
				return walker.ErrSkipNode
			}
			return nil
		},
	})
}

// LsNode is one node of `ls --json`, the record `restic ls --json` prints.
type LsNode struct {
	Name        string      `json:"name"`
	Type        string      `json:"type"`
	Path        string      `json:"path"`
	UID         uint32      `json:"uid"`
	GID         uint32      `json:"gid"`
	Size        *uint64     `json:"size,omitempty"`
	Mode        os.FileMode `json:"mode,omitempty"`
	Permissions string      `json:"permissions,omitempty"`
	ModTime     time.Time   `json:"mtime,omitempty"`
	AccessTime  time.Time   `json:"atime,omitempty"`
	ChangeTime  time.Time   `json:"ctime,omitempty"`
	Inode       uint64      `json:"inode,omitempty"`
	MessageType string      `json:"message_type"` // "node"
	StructType  string      `json:"struct_type"`  // "node", deprecated
}

// NewLsNode builds the JSON record of node at path.
func NewLsNode(path string, node *data.Node) LsNode {
	n := LsNode{
		Name: node.Name, Type: string(node.Type), Path: path, UID: node.UID, GID: node.GID,
		Mode: node.Mode, Permissions: node.Mode.String(),
		ModTime: node.ModTime, AccessTime: node.AccessTime, ChangeTime: node.ChangeTime,
		Inode: node.Inode, MessageType: "node", StructType: "node",
	}
	if node.Type == data.NodeTypeFile { // always for files, even empty ones; never for others
		size := node.Size
		n.Size = &size
	}
	return n
}

// FormatLong is `restic ls --long`'s line for node at path.
func FormatLong(path string, n *data.Node) string {
	var mode os.FileMode
	var target string
	switch n.Type {
	case data.NodeTypeDir:
		mode = os.ModeDir
	case data.NodeTypeSymlink:
		mode = os.ModeSymlink
		target = fmt.Sprintf(" -> %v", n.LinkTarget)
	case data.NodeTypeDev:
		mode = os.ModeDevice
	case data.NodeTypeCharDev:
		mode = os.ModeDevice | os.ModeCharDevice
	case data.NodeTypeFifo:
		mode = os.ModeNamedPipe
	case data.NodeTypeSocket:
		mode = os.ModeSocket
	}
	return fmt.Sprintf("%s %5d %5d %6d %s %s%s", mode|n.Mode, n.UID, n.GID, n.Size,
		n.ModTime.Local().Format("2006-01-02 15:04:05"), path, target)
}
