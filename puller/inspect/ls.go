// Package inspect looks inside snapshots without restoring them: it lists a
// snapshot's files as `restic ls` does and compares two snapshots as
// `restic diff` does, with the same selection rules and output records, so
// an operator can see what changed between two pulls.
package inspect

import (
	"context"
	"fmt"
	"github.com/haulproject/haul/internal/escape"
	"os"
	"strings"
	"time"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/fs"
	"github.com/haulproject/haul/puller/internal/restic/restic"
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
	// An explicit stack of open trees, each level holding only its cursor
	// and the end of its prefix in a shared path buffer: memory grows with
	// the depth, not with its square, and no Go stack frame is spent per
	// level. A level whose last node is a directory is dropped before the
	// walk descends (a chain of single directories costs one level).
	type level struct {
		cur    *treeCursor
		prefix []byte
	}
	root, err := openTree(ctx, repo, tree)
	if err != nil {
		return err
	}
	stack := []level{{cur: root, prefix: make([]byte, 0, 4096)}}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		top := stack[len(stack)-1]
		node, err := top.cur.next()
		if err != nil {
			return err
		}
		if node == nil {
			stack = stack[:len(stack)-1]
			continue
		}
		if node.Type == data.NodeTypeInvalid {
			return fmt.Errorf("node type is empty for node %q", node.Name)
		}
		full := joinPath(top.prefix, node.Name)
		p := string(full)
		descend := false
		if within(p) {
			if err := visit(p, node); err != nil {
				return err
			}
			descend = opts.Recursive
		}
		if !descend {
			descend = approaching(p)
		}
		if node.Type != data.NodeTypeDir || !descend {
			continue
		}
		if node.Subtree == nil {
			return fmt.Errorf("subtree for node %v in tree %v is nil", node.Name, p)
		}
		sub, err := openTree(ctx, repo, *node.Subtree)
		if err != nil {
			return err
		}
		if !top.cur.more() {
			if _, err := top.cur.next(); err != nil { // the tree's closing
				return err
			}
			stack = stack[:len(stack)-1]
		}
		stack = append(stack, level{cur: sub, prefix: full})
	}
	return nil
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
		target = fmt.Sprintf(" -> %v", escape.String(n.LinkTarget))
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
		n.ModTime.Local().Format("2006-01-02 15:04:05"), escape.String(path), target)
}
