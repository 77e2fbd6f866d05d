package backup

import (
	"context"
	"errors"
	"fmt"

	"github.com/haulproject/haul/internal/escape"
	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/klauspost/compress/zstd"
)

// delta rebuilds a chunk the agent sent as a delta. Whatever goes wrong
// with the delta itself (a base this host never sent or that was pruned,
// a range out of bounds, bytes that do not hash to the ID), nothing is
// stored from it and the chunk is asked for whole.
//
// The frame is checked here, on the session's goroutine (which holds
// s.mu); the rebuild itself (loading and decrypting the bases, applying
// the ops, hashing the result) runs on one of up to rebuildWorkers
// goroutines, so the NAS's cores rebuild several chunks at once while the
// session reads the next frames. A (b)-like run rebuilds every chunk of a
// database whose pages changed here and there: done one at a time, that
// was most of its transfer phase.
func (s *session) delta(ctx context.Context, dec *zstd.Decoder, payload []byte) error {
	d, err := proto.DecodeDelta(payload)
	if err != nil {
		return err
	}
	want, ok := s.requested[d.ID]
	if !ok {
		return fmt.Errorf("%w: agent sent a delta for chunk %s, which was not asked for", proto.ErrFrame, d.ID.Short())
	}
	if d.Length != want {
		return fmt.Errorf("%w: agent sent a delta for chunk %s of %d bytes, the manifest said %d", proto.ErrFrame, d.ID.Short(), d.Length, want)
	}
	if s.full[d.ID] {
		return fmt.Errorf("%w: agent sent another delta for chunk %s after it was asked for whole", proto.ErrFrame, d.ID.Short())
	}
	if s.rebuilding[d.ID] {
		return fmt.Errorf("%w: agent sent chunk %s again while its delta was being applied", proto.ErrFrame, d.ID.Short())
	}
	ops, err := d.Ops(dec)
	if err != nil {
		return s.deltaFailed(d.ID, err)
	}
	bases := s.newDeltaBases(ctx, d.Length)
	s.rebuilding[d.ID] = true
	s.inflight++
	s.rebuilds.Add(1)
	// Wait for a free worker without holding the session: the workers
	// need it to finish.
	s.mu.Unlock()
	s.rebuildSem <- struct{}{}
	s.mu.Lock()
	go func() {
		defer s.rebuilds.Done()
		defer func() { <-s.rebuildSem }()
		plain, err := proto.ApplyDelta(d.ID, d.Length, ops, bases.base)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.inflight--
		delete(s.rebuilding, d.ID)
		if err == nil {
			s.res.Deltas++
			err = s.store(ctx, d.ID, plain)
		} else {
			err = s.deltaFailed(d.ID, err)
		}
		if err != nil && s.workErr == nil {
			// The session goroutine may be waiting for a frame: end it.
			s.workErr = err
			s.cancel(err)
		}
	}()
	return nil
}

// deltaFailed asks for a chunk whole after its delta could not be applied
// (s.mu held).
func (s *session) deltaFailed(id proto.ID, err error) error {
	s.res.DeltaRetries++
	s.logf("%s: delta for chunk %s not applied (%s); asking for it whole", s.opts.Host, id.Short(), escape.String(err.Error()))
	s.full[id] = true
	if err := s.conn.W.Write(proto.TWantFull, proto.EncodeWant([]proto.ID{id})); err != nil {
		return err
	}
	return s.conn.W.Flush()
}

var (
	errNotABase   = errors.New("not a chunk this host has sent before")
	errDeltaWork  = errors.New("its bases are larger than a delta of its size needs")
	errDeltaQuota = errors.New("this session has loaded more base data than its deltas justify")
)

// The work a delta may cost, relative to its chunk: a chunk of L bytes at
// file offset o copies from the previous version's chunks overlapping
// [o, o+L), which hold at most L bytes plus one chunk at each end. Over
// that, or over the session's budget (a few times the bytes rebuilt from
// deltas), the chunk is asked for whole: 4 104 one-byte copies rotating
// over 8 bases cost one load of each base, not one per copy.
const (
	deltaSlack      = 2 * proto.MaxChunk // the two partly overlapping ends
	baseBudgetRatio = 4
	baseBudgetFree  = 64 << 20
	baseCacheBytes  = 3 * proto.MaxChunk // one delta's worst case: no thrash
)

// deltaBases loads the bases of one delta, each at most once.
type deltaBases struct {
	s      *session
	ctx    context.Context
	limit  int64 // bytes of distinct bases this delta may use
	used   int64
	pinned map[proto.ID][]byte
}

func (s *session) newDeltaBases(ctx context.Context, plainLen uint32) *deltaBases {
	s.deltaPlain += int64(plainLen)
	return &deltaBases{s: s, ctx: ctx, limit: int64(plainLen) + deltaSlack, pinned: map[proto.ID][]byte{}}
}

// base returns a chunk a delta copies from. Only chunks this host itself
// sent (in its snapshots or an interrupted run) may be bases, so a delta
// cannot probe for other hosts' data. It runs on a rebuild worker: the
// checks and the accounting hold s.mu, the load and decryption do not.
func (d *deltaBases) base(id proto.ID) ([]byte, error) {
	if b, ok := d.pinned[id]; ok {
		return b, nil
	}
	s := d.s
	rid := restic.ID(id)
	s.mu.Lock()
	if !s.known.has(id) && !s.recv.ids[id] {
		s.mu.Unlock()
		return nil, errNotABase
	}
	size, ok := s.repo.LookupBlobSize(restic.DataBlob, rid)
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("not in the repository")
	}
	if d.used+int64(size) > d.limit {
		s.mu.Unlock()
		return nil, errDeltaWork
	}
	b, cached := s.bases.get(id)
	if !cached {
		if s.baseLoaded+int64(size) > baseBudgetRatio*s.deltaPlain+baseBudgetFree {
			s.mu.Unlock()
			return nil, errDeltaQuota
		}
		s.baseLoaded += int64(size) // taken before the load, so workers share the budget
	}
	s.mu.Unlock()
	if !cached {
		var err error
		b, err = s.repo.LoadBlob(d.ctx, restic.DataBlob, rid, nil)
		if err != nil {
			return nil, fmt.Errorf("not in the repository: %w", err)
		}
		s.mu.Lock()
		s.res.BaseBytesLoaded += int64(len(b))
		s.bases.put(id, b)
		s.mu.Unlock()
	}
	d.used += int64(len(b))
	d.pinned[id] = b
	return b, nil
}

// baseCache keeps recently used bases across deltas (consecutive chunks of
// a file copy from the same old chunks), up to a byte budget that holds
// every base of one valid delta.
type baseCache struct {
	max   int64
	bytes int64
	order []proto.ID // least recently used first
	data  map[proto.ID][]byte
}

func newBaseCache(max int64) *baseCache {
	return &baseCache{max: max, data: map[proto.ID][]byte{}}
}

func (c *baseCache) get(id proto.ID) ([]byte, bool) {
	b, ok := c.data[id]
	if ok {
		c.touch(id)
	}
	return b, ok
}

func (c *baseCache) touch(id proto.ID) {
	for i, x := range c.order {
		if x == id {
			copy(c.order[i:], c.order[i+1:])
			c.order[len(c.order)-1] = id
			return
		}
	}
}

func (c *baseCache) put(id proto.ID, b []byte) {
	if _, ok := c.data[id]; ok {
		c.touch(id)
		return
	}
	for c.bytes+int64(len(b)) > c.max && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.bytes -= int64(len(c.data[old]))
		delete(c.data, old)
	}
	c.data[id] = b
	c.order = append(c.order, id)
	c.bytes += int64(len(b))
}
