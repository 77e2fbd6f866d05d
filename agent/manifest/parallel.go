package manifest

import (
	"errors"
	"io"
	"math"
	"runtime"
	"sort"
	"sync"

	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
)

// Parallel reads: a large file is chunked on several cores, with the
// result a sequential read gives.
//
// restic's chunker starts afresh after every cut (reset), so where it cuts
// next depends only on the bytes from its last cut on: a chunker started at
// any offset agrees with the file's true stream of cuts from the first cut
// the two share. The file is split into segments, one worker each from the
// segment's start; a worker goes on past the next segment's start until it
// cuts where that segment's stream cuts, and the result follows worker 0's
// stream, then from each such shared cut the stream it met. On random data
// two streams meet a chunk or two after the later one's start (measured:
// median 1.3 MiB, p99 6 MiB). In low-entropy data they may not meet until
// the data changes (zeros are cut every chunkMin, data without a
// fingerprint match every chunkMax); the earlier worker has the true stream
// there and goes on, and if it gets maxOverrun past the next start while
// that segment's worker is still chunking, it stops that worker and looks
// to meet the segment after: two workers do not both chunk the rest of a
// file whose streams never meet.
//
// Memory: each worker but the first adds a chunkWorker, kept across
// files: its 256 KiB read buffer (the cutter holds no chunk). And the block
// hashes of each segment (8 bytes per 4 KiB) until they are copied into
// the result.

var (
	// parallelMin is the smallest file chunked on several cores, and
	// segmentMin the least each worker gets: the overlap of two streams
	// (about a chunk) and starting the workers should be small beside it.
	parallelMin int64 = 32 << 20
	segmentMin  int64 = 16 << 20
	// maxWorkers bounds the cores one read takes (and its buffers): the
	// chunk sender compresses on the others while the walk goes on.
	maxWorkers = 4
	// testChunked, if set, is called by worker i after each chunk, with
	// where it ended: tests delay workers with it.
	testChunked func(worker int, end int64)
)

// maxOverrun is how far past the next segment's start a worker chunks
// before it stops that segment's worker: far past where streams on random
// data meet.
func maxOverrun() int64 { return 4 * int64(chunkMax) }

// splitPoints returns where the workers of a parallel read of a file of
// size bytes start, or nil to read it on one goroutine. workers > 0 bounds
// them further (Walker.Workers).
func splitPoints(size int64, workers int) []int64 {
	k := min(int64(runtime.GOMAXPROCS(0)), int64(maxWorkers), size/segmentMin)
	if workers > 0 {
		k = min(k, int64(workers))
	}
	if size < parallelMin || k < 2 {
		return nil
	}
	// Multiples of DeltaBlock, so that each block is hashed whole by the
	// worker whose stream covers its end; and of chunkMin if that is one
	// (restic's is): a file of zeros is cut at multiples of chunkMin, so
	// there every worker starts at a true cut.
	align := int64(proto.DeltaBlock)
	if int64(chunkMin)%align == 0 {
		align = int64(chunkMin)
	}
	splits := []int64{0}
	for i := int64(1); i < k; i++ {
		if s := size * i / k / align * align; s > splits[len(splits)-1] {
			splits = append(splits, s)
		}
	}
	return splits
}

// segmentRead is one parallel read.
type segmentRead struct {
	segs []segment
	mu   sync.Mutex // guards segs and err
	cond *sync.Cond // broadcast on every change under mu
	err  error      // the first read error: every worker stops
}

// segment is one worker's stream: the chunks it cut from start on.
type segment struct {
	start int64
	ends  []int64 // where each chunk ends, ascending
	refs  []proto.ChunkRef
	// blocks are the hashes of the blocks from start on that the worker
	// read whole (and the file's short last block, if it got there); it
	// reads ahead of its last cut, and result takes only those before it.
	// Set when done.
	blocks []uint64
	done   bool
	// met is the segment whose stream has a cut at this one's last end,
	// and which it follows from there; -1 if it ended otherwise (at the
	// end of the file, dropped, or on an error).
	met int
	// dropped: the previous worker stopped meeting this stream
	// (maxOverrun); its worker stops, its stream is not used.
	dropped bool
}

// readSegments chunks f, of about size bytes, with one worker from each
// offset of splits (ascending multiples of DeltaBlock, the first 0), and
// returns what readAll returns.
func (w *Walker) readSegments(f io.ReaderAt, size int64, splits []int64) ([]proto.ChunkRef, []uint64, error) {
	return w.chunkSegments(f, splits).result(size)
}

// chunkSegments runs the workers of a parallel read to their end.
func (w *Walker) chunkSegments(f io.ReaderAt, splits []int64) *segmentRead {
	p := &segmentRead{segs: make([]segment, len(splits))}
	p.cond = sync.NewCond(&p.mu)
	for i, s := range splits {
		p.segs[i] = segment{start: s, met: -1}
	}
	var wg sync.WaitGroup
	for i := range p.segs {
		cw := w.worker(i)
		wg.Go(func() { p.chunk(i, cw, f, w.Pol) })
	}
	wg.Wait()
	return p
}

// chunk is worker i: it chunks from its segment's start until its stream
// meets a later one, the file ends, or it is dropped or another failed.
func (p *segmentRead) chunk(i int, cw *chunkWorker, f io.ReaderAt, pol chunker.Pol) {
	s := &p.segs[i]
	cw.reset(io.NewSectionReader(f, s.start, math.MaxInt64-s.start), pol)
	end := s.start
	next := i + 1 // the segment whose stream this one looks to meet
	for {
		ref, err := cw.next()
		if err == nil {
			end += int64(ref.Length)
			if testChunked != nil {
				testChunked(i, end)
			}
		}
		p.mu.Lock()
		stop := true
		switch {
		case err == io.EOF:
			cw.bh.finish()
		case err != nil:
			if p.err == nil {
				p.err = err
			}
		case p.err != nil || s.dropped:
		default:
			s.ends = append(s.ends, end)
			s.refs = append(s.refs, ref)
			p.cond.Broadcast()
			s.met = p.meet(s, &next, end)
			stop = s.met >= 0 || p.err != nil || s.dropped
		}
		if stop {
			s.blocks, s.done = cw.bh.hashes, true
			p.cond.Broadcast()
		}
		p.mu.Unlock()
		if stop {
			return
		}
	}
}

// meet returns the segment whose stream has a cut at end, the latest of
// s's, or -1 while there is none: it looks at the stream of segment *next
// and those it met in turn, waiting for a worker still chunking to get as
// far as end. It drops *next (and looks at the one after) if end is
// maxOverrun past its start while its worker is still chunking. Workers
// wait only for later ones, so the last one running never waits.
func (p *segmentRead) meet(s *segment, next *int, end int64) int {
	for *next < len(p.segs) && p.err == nil && !s.dropped {
		t := &p.segs[*next]
		last := t.start
		if len(t.ends) > 0 {
			last = t.ends[len(t.ends)-1]
		}
		switch {
		case end < t.start:
			return -1
		case t.dropped: // not a stream any more
			*next++
		case end == t.start:
			return *next
		case !t.done && end-t.start > maxOverrun():
			t.dropped = true
			p.cond.Broadcast()
			*next++
		case !t.done && last < end:
			p.cond.Wait()
		case end <= last:
			if k := sort.Search(len(t.ends), func(k int) bool { return t.ends[k] >= end }); t.ends[k] == end {
				return *next
			}
			return -1
		case t.met >= 0:
			*next = t.met // t's stream from last on
		default:
			return -1 // t's stream ended before end: the file grew
		}
	}
	return -1
}

// errLost means a parallel read's stream led to a dropped segment, which
// meet never lets happen.
var errLost = errors.New("parallel chunking lost the stream (a bug)")

// result follows the true stream from segment 0 through the streams it met.
func (p *segmentRead) result(size int64) ([]proto.ChunkRef, []uint64, error) {
	if p.err != nil {
		return nil, nil, p.err
	}
	var refs []proto.ChunkRef
	blocks := make([]uint64, 0, (size+proto.DeltaBlock-1)/proto.DeltaBlock)
	var from int64 // where the stream enters segment i
	for i := 0; ; {
		s := &p.segs[i]
		if s.dropped {
			return nil, nil, errLost
		}
		k := sort.Search(len(s.ends), func(k int) bool { return s.ends[k] > from })
		refs = append(refs, s.refs[k:]...)
		// each block from the stream that covers its last byte
		first := from/proto.DeltaBlock - s.start/proto.DeltaBlock
		if s.met < 0 {
			return refs, append(blocks, s.blocks[first:]...), nil
		}
		last := s.ends[len(s.ends)-1]
		blocks = append(blocks, s.blocks[first:last/proto.DeltaBlock-s.start/proto.DeltaBlock]...)
		i, from = s.met, last
	}
}
