package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// Unchanged files without chunk lists (protocol version 3): the host
// record remembers the host's latest snapshot and the agent's walk it was
// made from. The puller names that walk in its walk request; an agent
// whose delta bases are that walk sends a file whose chunks did not change
// as a node marked Same, without its chunk list, and the puller takes the
// chunks from the same path in that snapshot. A no-change run then moves
// one node per file, not one ID per chunk.
//
// What the agent can do with it: point a file at the chunks the same path
// had in this host's own latest snapshot, nothing else; the size must
// match, and any of those chunks the repository lacks is asked for as
// usual.

// baseWalk picks the walk to offer the agent: the record's, if its
// snapshot is still in the repository. It loads that snapshot's root tree
// ID for parentTree.
func (s *session) baseWalk(ctx context.Context) string {
	rec := s.known
	if s.hello.Version < proto.SameVersion || rec.baseWalk == "" || rec.baseSnap.IsNull() {
		return ""
	}
	if _, err := os.Stat(filepath.Join(s.repo.Path, "snapshots", rec.baseSnap.String())); err != nil {
		return "" // forgotten
	}
	sn, err := data.LoadSnapshot(ctx, s.repo.Repository, rec.baseSnap)
	if err != nil || sn.Tree == nil || sn.Hostname != s.opts.Host {
		return ""
	}
	s.parentRoot = sn.Tree
	return rec.baseWalk
}

// sameContent resolves a Same node: the chunks of the same path in the
// base snapshot, with their lengths from the repository's index (never
// the agent's word), which must add up to the node's size.
func (s *session) sameContent(ctx context.Context, n *proto.Node) ([]proto.ChunkRef, error) {
	if s.parentRoot == nil {
		return nil, fmt.Errorf("%w: file %s marked unchanged, but no base walk was offered", proto.ErrFrame, escape.Quote(string(n.Name)))
	}
	tree, err := s.parentTree(ctx, len(s.stack)-1)
	if err != nil {
		return nil, err
	}
	pn := tree[string(n.Name)]
	if pn == nil || pn.Type != data.NodeTypeFile || pn.Size != n.Size {
		return nil, s.sameMismatch(fmt.Errorf("%w: agent marked file %s unchanged since the walk of snapshot %s, which has no file of %d bytes there",
			proto.ErrFrame, escape.Quote(string(n.Name)), s.known.baseSnap.Str(), n.Size))
	}
	refs := make([]proto.ChunkRef, len(pn.Content))
	var sum uint64
	for i, id := range pn.Content {
		size, ok := s.repo.LookupBlobSize(restic.DataBlob, id)
		if !ok {
			return nil, s.sameMismatch(fmt.Errorf("file %s: chunk %s of the base snapshot %s is not in the repository (run `haul check`)",
				escape.Quote(string(n.Name)), id.Str(), s.known.baseSnap.Str()))
		}
		refs[i] = proto.ChunkRef{ID: proto.ID(id), Length: uint32(size)}
		sum += uint64(size)
	}
	if sum != n.Size {
		return nil, s.sameMismatch(fmt.Errorf("file %s: the chunks of the base snapshot %s add up to %d bytes, not its size %d",
			escape.Quote(string(n.Name)), s.known.baseSnap.Str(), sum, n.Size))
	}
	return refs, nil
}

// sameMismatch is the error of a Same node the base snapshot cannot
// resolve: the record offers no base walk from now on, so the next run
// gets every chunk list.
func (s *session) sameMismatch(err error) error {
	s.known.baseWalk = ""
	if serr := s.known.save(func(proto.ID) bool { return true }); serr != nil {
		s.logf("warning: %v", serr)
	}
	return fmt.Errorf("%w; the next backup asks for every chunk list", err)
}

// parentTree returns the entries of the base snapshot's directory that
// corresponds to open directory k (nil if it has none), loading it and
// its ancestors once.
func (s *session) parentTree(ctx context.Context, k int) (map[string]*data.Node, error) {
	f := &s.stack[k]
	if f.parentLoaded {
		return f.parent, nil
	}
	f.parentLoaded = true
	var id *restic.ID
	if k == 0 {
		id = s.parentRoot
	} else {
		up, err := s.parentTree(ctx, k-1)
		if err != nil {
			return nil, err
		}
		if pn := up[f.node.Name]; pn != nil && pn.Type == data.NodeTypeDir {
			id = pn.Subtree
		}
	}
	if id == nil {
		return nil, nil
	}
	if size, ok := s.repo.LookupBlobSize(restic.TreeBlob, *id); ok && int64(size) > s.opts.Limits.MaxTreeBytes {
		return nil, fmt.Errorf("tree %s of the base snapshot is %d bytes, over max_tree_bytes (%d)", id.Str(), size, s.opts.Limits.MaxTreeBytes)
	}
	it, err := data.LoadTree(ctx, s.repo.Repository, *id)
	if err != nil {
		return nil, fmt.Errorf("load tree %s of the base snapshot: %w", id.Str(), err)
	}
	m := map[string]*data.Node{}
	for item := range it {
		if item.Error != nil {
			return nil, fmt.Errorf("load tree %s of the base snapshot: %w", id.Str(), item.Error)
		}
		m[item.Node.Name] = item.Node
	}
	f.parent = m
	return m, nil
}
