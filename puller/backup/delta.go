package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/klauspost/compress/zstd"
)

// delta rebuilds a chunk the agent sent as a delta. Whatever goes wrong
// with the delta itself (a base this host never sent or that was pruned,
// a range out of bounds, bytes that do not hash to the ID), nothing is
// stored from it and the chunk is asked for whole.
func (s *session) delta(ctx context.Context, dec *zstd.Decoder, payload []byte) error {
	d, err := proto.DecodeDelta(payload)
	if err != nil {
		return err
	}
	if !s.requested[d.ID] {
		return fmt.Errorf("%w: agent sent a delta for chunk %s, which was not asked for", proto.ErrFrame, d.ID.Short())
	}
	if s.full[d.ID] {
		return fmt.Errorf("%w: agent sent another delta for chunk %s after it was asked for whole", proto.ErrFrame, d.ID.Short())
	}
	ops, err := d.Ops(dec)
	var plain []byte
	if err == nil {
		plain, err = proto.ApplyDelta(d.ID, d.Length, ops, func(id proto.ID) ([]byte, error) { return s.base(ctx, id) })
	}
	if err != nil {
		s.res.DeltaRetries++
		s.logf("%s: delta for chunk %s not applied (%v); asking for it whole", s.opts.Host, d.ID.Short(), err)
		s.full[d.ID] = true
		if err := s.conn.W.Write(proto.TWantFull, proto.EncodeWant([]proto.ID{d.ID})); err != nil {
			return err
		}
		return s.conn.W.Flush()
	}
	s.res.Deltas++
	s.store(ctx, d.ID, plain)
	return nil
}

var errNotABase = errors.New("not a chunk this host has sent before")

// base loads a chunk a delta copies from. Only chunks this host itself sent
// (in its snapshots or an interrupted run) may be bases, so a delta cannot
// probe for other hosts' data.
func (s *session) base(ctx context.Context, id proto.ID) ([]byte, error) {
	if b, ok := s.bases.get(id); ok {
		return b, nil
	}
	rid := restic.ID(id)
	if !s.known.has(id) && !s.recv.ids[id] {
		return nil, errNotABase
	}
	b, err := s.repo.LoadBlob(ctx, restic.DataBlob, rid, nil)
	if err != nil {
		return nil, fmt.Errorf("not in the repository: %w", err)
	}
	s.bases.put(id, b)
	return b, nil
}

// baseCache keeps the last few base chunks: consecutive copies mostly come
// from the same one. At most 4 chunks of at most 8 MiB.
type baseCache struct {
	ids  [4]proto.ID
	data [4][]byte
	next int
}

func (c *baseCache) get(id proto.ID) ([]byte, bool) {
	for i := range c.ids {
		if c.data[i] != nil && c.ids[i] == id {
			return c.data[i], true
		}
	}
	return nil, false
}

func (c *baseCache) put(id proto.ID, b []byte) {
	c.ids[c.next], c.data[c.next] = id, b
	c.next = (c.next + 1) % len(c.ids)
}
