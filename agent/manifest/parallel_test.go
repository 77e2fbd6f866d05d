package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haulproject/haul/proto"
	"github.com/restic/chunker"
)

// Small chunking parameters for the tests: chunks of 8–64 KiB (16 KiB on
// average), so that a file of a few hundred KiB has many and the overrun
// bound (4 chunkMax) is 256 KiB. The splits TestSegments picks are
// multiples of 4 KiB but mostly not of chunkMin (as splitPoints's are): in
// a file of zeros the streams then never meet.
const (
	tMin      = 8 << 10
	tMax      = 64 << 10
	tBits     = 13
	tParallel = 256 << 10 // parallelMin: 2 workers
	tSegment  = 128 << 10 // segmentMin: 3 from 384 KiB, 4 from 512 KiB
)

// small sets the small chunking parameters and enough cores for 4 workers
// until the test ends.
func small(t testing.TB) {
	setParams(t, tMin, tMax, tBits, tParallel, tSegment)
}

func setParams(t testing.TB, cmin, cmax uint, bits int, pmin, smin int64) {
	t.Helper()
	oldMin, oldMax, oldBits, oldP, oldS, oldW, oldHook := chunkMin, chunkMax, chunkBits, parallelMin, segmentMin, maxWorkers, testChunked
	chunkMin, chunkMax, chunkBits, parallelMin, segmentMin, maxWorkers = cmin, cmax, bits, pmin, smin, 4
	procs := runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0)))
	t.Cleanup(func() {
		chunkMin, chunkMax, chunkBits, parallelMin, segmentMin, maxWorkers, testChunked = oldMin, oldMax, oldBits, oldP, oldS, oldW, oldHook
		runtime.GOMAXPROCS(procs)
	})
}

// cuts returns where the chunks of refs end, from offset start on.
func cuts(start int64, refs []proto.ChunkRef) []int64 {
	var out []int64
	for _, r := range refs {
		start += int64(r.Length)
		out = append(out, start)
	}
	return out
}

// firstCut is where a chunker started at off cuts first.
func firstCut(t testing.TB, data []byte, off int64) int64 {
	refs, _ := reference(t, data[off:min(off+2*tMax, int64(len(data)))])
	if len(refs) == 0 {
		return off
	}
	return off + int64(refs[0].Length)
}

// compare fails the test unless the read matches the reference of data.
func compare(t testing.TB, what string, data []byte, refs []proto.ChunkRef, blocks []uint64, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	wantRefs, wantBlocks := reference(t, data)
	if !slices.Equal(refs, wantRefs) {
		got, want := cuts(0, refs), cuts(0, wantRefs)
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d chunks, want %d; first difference at chunk %d: cuts %v, want %v", what, len(refs), len(wantRefs), i,
			got[i:min(i+3, len(got))], want[i:min(i+3, len(want))])
	}
	if !slices.Equal(blocks, wantBlocks) {
		i := 0
		for i < min(len(blocks), len(wantBlocks)) && blocks[i] == wantBlocks[i] {
			i++
		}
		t.Fatalf("%s: %d block hashes, want %d; first difference at block %d", what, len(blocks), len(wantBlocks), i)
	}
}

// Test data. Each piece says what it is, and concatenated they make files
// of random regions, zero runs and stretches without a fingerprint match.

func zeros(n int) []byte { return make([]byte, n) }

// flat is n bytes of 0xff: its window fingerprint never matches restic's
// mask, so it is cut at every chunkMax (checked in TestTestData).
func flat(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }

func concat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// TestTestData checks that the low-entropy data is cut as the tests assume.
func TestTestData(t *testing.T) {
	small(t)
	for _, c := range []struct {
		name string
		data []byte
		size uint
	}{{"zeros", zeros(40 * tMin), tMin}, {"flat", flat(10 * tMax), tMax}} {
		refs, _ := reference(t, c.data)
		for i, r := range refs {
			if uint(r.Length) != c.size {
				t.Fatalf("%s: chunk %d is %d bytes, want %d", c.name, i, r.Length, c.size)
			}
		}
	}
}

// writeFile writes data to a new file and returns its path in w's mirror.
func writeFile(t testing.TB, w *Walker, name string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(w.Root, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return "/" + name
}

// TestReadParallel reads files through Walker.read, in parallel from
// parallelMin on (on segments splitPoints chooses), and compares each with
// a sequential chunking: sizes around the threshold and the segments'
// boundaries, and files of zeros, zero runs and flat stretches.
func TestReadParallel(t *testing.T) {
	small(t)
	w := &Walker{Root: t.TempDir(), Pol: testPol}
	var cases []int
	for _, base := range []int{tParallel, 3 * tSegment, 4 * tSegment, 13 * tSegment} {
		for _, d := range []int{-4097, -4096, -1, 0, 1, 4095, 4096, 4097} {
			cases = append(cases, base+d)
		}
	}
	type file struct {
		name string
		data []byte
	}
	var files []file
	for i, n := range cases {
		files = append(files, file{fmt.Sprintf("random-%d", n), randomBytes(uint64(i), n)})
	}
	r := randomBytes(99, 1<<20)
	files = append(files,
		file{"zeros", zeros(2 << 20)},
		file{"zero runs", concat(r[:300<<10], zeros(400<<10), r[300<<10:500<<10], zeros(700<<10+77), r[500<<10:])},
		file{"flat stretches", concat(r[:200<<10], flat(900<<10), r[200<<10:250<<10], flat(800<<10), r[250<<10:260<<10])},
		file{"flat to the end", concat(r[:100<<10], flat(1<<20+5))},
	)
	var bytesRead int64
	for i, f := range files {
		rel := writeFile(t, w, fmt.Sprintf("f%d", i), f.data)
		if splits := splitPoints(int64(len(f.data)), 0); (len(f.data) >= tParallel) != (splits != nil) {
			t.Fatalf("%s: %d bytes split at %v", f.name, len(f.data), splits)
		}
		refs, blocks, err := w.read(rel, int64(len(f.data)))
		compare(t, f.name, f.data, refs, blocks, err)
		bytesRead += int64(len(f.data))
	}
	if w.Stats.FilesRead != int64(len(files)) || w.Stats.BytesRead != bytesRead {
		t.Errorf("stats: %d files, %d bytes read; want %d, %d", w.Stats.FilesRead, w.Stats.BytesRead, len(files), bytesRead)
	}
}

// schedules delay workers in the ways that change who finishes first.
var schedules = []struct {
	name string
	hook func(seed uint64) func(int, int64)
}{
	{"free", nil},
	{"first slow", func(uint64) func(int, int64) {
		return func(i int, _ int64) {
			if i == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}},
	{"later slow", func(uint64) func(int, int64) {
		return func(i int, _ int64) {
			if i > 0 {
				time.Sleep(time.Duration(i) * 100 * time.Microsecond)
			}
		}
	}},
	{"random", func(seed uint64) func(int, int64) {
		return func(i int, end int64) {
			// a function of the worker and its position, not of a
			// shared generator the workers would race on
			r := rand.New(rand.NewPCG(seed, uint64(i)<<48^uint64(end)))
			if n := r.IntN(4); n > 0 {
				time.Sleep(time.Duration(n) * 50 * time.Microsecond)
			}
		}
	}},
}

// TestSegments chunks in memory from chosen offsets, under each schedule.
// Among them are offsets whose first cut is not a true one (a worker that
// trusted its stream from its start would be wrong), low-entropy data that
// never meets (so a worker drops the next), segments of one block, and
// offsets past the end of the data (a file shorter than its size said).
func TestSegments(t *testing.T) {
	small(t)
	r := randomBytes(7, 2<<20)
	const k = 4 << 10
	cases := []struct {
		name   string
		data   []byte
		splits []int64
	}{
		{"random", r[:1<<20], []int64{0, 100 * k, 101 * k, 200 * k}},
		{"random, one block segments", r[:600<<10], []int64{0, k, 2 * k, 3 * k, 5 * k, 40 * k}},
		{"random, uneven", r[:1<<20+333], []int64{0, 3 * k, 150 * k, 255 * k}},
		{"zeros at true cuts", zeros(1 << 20), []int64{0, 16 * k, 64 * k, 200 * k}},
		{"zeros", zeros(2 << 20), []int64{0, 129 * k, 259 * k, 387 * k}},
		{"zeros, then random", concat(zeros(900<<10), r[:300<<10]), []int64{0, 33 * k, 67 * k, 101 * k}},
		{"flat", flat(2 << 20), []int64{0, 131 * k, 261 * k, 389 * k}},
		{"flat, then random", concat(r[:100<<10], flat(1<<20), r[:400<<10]), []int64{0, 61 * k, 123 * k, 187 * k}},
		{"flat at a split", concat(r[:500<<10], flat(700<<10), r[500<<10:800<<10]), []int64{0, 127 * k, 263 * k}},
		{"shorter than the splits", r[:300<<10], []int64{0, 64 * k, 75 * k, 128 * k, 300 * k}},
		{"ends at a split", r[:256<<10], []int64{0, 32 * k, 64 * k}},
		{"empty", nil, []int64{0, k, 2 * k}},
	}
	early := 0
	for _, c := range cases {
		trueCuts, _ := reference(t, c.data)
		set := cuts(0, trueCuts)
		for _, s := range c.splits[1:] {
			if s < int64(len(c.data)) && !slices.Contains(set, firstCut(t, c.data, s)) {
				early++
			}
		}
		for _, sch := range schedules {
			for seed := range uint64(3) {
				if sch.hook != nil {
					testChunked = sch.hook(seed)
				} else if seed > 0 {
					continue
				}
				w := &Walker{Pol: testPol}
				p := w.chunkSegments(bytes.NewReader(c.data), c.splits)
				refs, blocks, err := p.result(int64(len(c.data)))
				what := fmt.Sprintf("%s, %s %d", c.name, sch.name, seed)
				compare(t, what, c.data, refs, blocks, err)
				if strings.HasPrefix(c.name, "random") {
					// random data meets soon: no worker goes far past the next start
					for i, s := range p.segs {
						if s.dropped {
							t.Errorf("%s: worker %d was dropped", what, i)
						} else if s.met >= 0 && s.ends[len(s.ends)-1]-p.segs[i+1].start > maxOverrun() {
							t.Errorf("%s: worker %d ran on to %d", what, i, s.ends[len(s.ends)-1])
						}
					}
				}
			}
			testChunked = nil
		}
	}
	if early < 5 {
		t.Fatalf("only %d splits have a first cut that is not a true cut: the cases would not catch trusting a stream too early", early)
	}
}

// TestSegmentsDrop: in data where two streams never meet, a worker that
// is maxOverrun past the next start while the next worker still chunks
// drops it, and chunks its segment itself. The next worker is held (after
// it got far enough for the first not to wait for it) until the first is
// past the point where it must have dropped it.
func TestSegmentsDrop(t *testing.T) {
	small(t)
	for _, c := range []struct {
		name string
		data []byte
	}{{"zeros", zeros(1 << 20)}, {"flat", concat(flat(1<<20), randomBytes(12, 100<<10))}} {
		const s1 = 3 << 12
		splits := []int64{0, s1, 600 << 10}
		release := make(chan struct{})
		var once sync.Once
		testChunked = func(i int, end int64) {
			switch {
			case i == 0 && end > s1+maxOverrun()+int64(chunkMax):
				once.Do(func() { close(release) })
			case i == 1 && end > s1+maxOverrun()+2*int64(chunkMax):
				select {
				case <-release:
				case <-time.After(10 * time.Second):
					t.Error("worker 0 did not get past the overrun")
				}
			}
		}
		w := &Walker{Pol: testPol}
		p := w.chunkSegments(bytes.NewReader(c.data), splits)
		refs, blocks, err := p.result(int64(len(c.data)))
		compare(t, c.name, c.data, refs, blocks, err)
		if !p.segs[1].dropped {
			t.Errorf("%s: worker 1 was not dropped", c.name)
		}
		testChunked = nil
	}
}

// failingReader fails every read at or past off.
type failingReader struct {
	r   io.ReaderAt
	off int64
}

var errDisk = errors.New("disk failed")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.off {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

// TestSegmentsReadError: a read error anywhere (in a segment, in the
// overlap past its end, past the true stream's end) ends every worker and
// is returned, whoever is waiting for whom.
func TestSegmentsReadError(t *testing.T) {
	small(t)
	r := randomBytes(8, 1<<20)
	low := concat(r[:100<<10], flat(900<<10))
	splits := []int64{0, 256 << 10, 512 << 10, 768 << 10}
	for _, data := range [][]byte{r, low} {
		for _, off := range []int64{0, 1, 200 << 10, 256 << 10, 270 << 10, 600 << 10, 1<<20 - 1} {
			for _, sch := range schedules {
				if sch.hook != nil {
					testChunked = sch.hook(uint64(off))
				}
				w := &Walker{Pol: testPol}
				done := make(chan error, 1)
				go func() {
					_, _, err := w.readSegments(failingReader{bytes.NewReader(data), off}, int64(len(data)), splits)
					done <- err
				}()
				select {
				case err := <-done:
					if !errors.Is(err, errDisk) {
						t.Errorf("error at %d, %s: got %v", off, sch.name, err)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("error at %d, %s: the workers did not stop", off, sch.name)
				}
				testChunked = nil
			}
		}
	}
}

// TestChunksFileChanged: a file that is shorter or longer than its size
// said is still caught by chunks after a parallel read.
func TestChunksFileChanged(t *testing.T) {
	small(t)
	dir := t.TempDir()
	c, err := OpenCache(filepath.Join(dir, "cache"), filepath.Join(dir, "bases"), testPol)
	if err != nil {
		t.Fatal(err)
	}
	w := &Walker{Root: filepath.Join(dir, "mirror"), Pol: testPol, Cache: c}
	if err := os.Mkdir(w.Root, 0o700); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(9, 1<<20)
	rel := writeFile(t, w, "f", data)
	for _, size := range []uint64{2 << 20, 700 << 10, 1<<20 - 1} {
		err := w.chunks(rel, &proto.Node{Type: proto.NodeFile, Size: size})
		if err == nil || !strings.Contains(err.Error(), "changed while it was read") {
			t.Errorf("size %d for %d bytes: %v", size, len(data), err)
		}
	}
}

// TestReadParallelRealSize is one file at restic's own chunking parameters
// and the real threshold, split in two.
func TestReadParallelRealSize(t *testing.T) {
	if testing.Short() {
		t.Skip("chunks 64 MiB under -short")
	}
	setParams(t, chunker.MinSize, chunker.MaxSize, 20, parallelMin, segmentMin)
	w := &Walker{Root: t.TempDir(), Pol: testPol}
	data := randomBytes(10, int(parallelMin))
	// a stretch without a fingerprint match across the split: the streams
	// meet after it
	copy(data[parallelMin/2-3<<20:], flat(10<<20))
	if s := splitPoints(parallelMin, 0); len(s) != 2 {
		t.Fatalf("split at %v", s)
	}
	rel := writeFile(t, w, "big", data)
	refs, blocks, err := w.read(rel, int64(len(data)))
	compare(t, "real size", data, refs, blocks, err)
}

// FuzzParallelChunks builds a file from the input (random regions, runs of
// one byte, repeats of earlier bytes) and chunks it from split offsets the
// input picks: the result must be the sequential one.
func FuzzParallelChunks(f *testing.F) {
	f.Add([]byte{0, 0x10, 0, 1, 1, 0x20, 0, 0, 0, 0x08, 0, 2}, uint8(4), []byte{0, 40, 0, 80, 0, 120})
	f.Add([]byte{1, 0x30, 0, 0xff, 0, 0x08, 0, 3}, uint8(3), []byte{0, 65, 0, 131})
	f.Add([]byte{0, 0x40, 0, 5}, uint8(2), []byte{0, 1})
	f.Add([]byte("short"), uint8(2), []byte{0, 1})
	f.Fuzz(func(t *testing.T, prog []byte, workers uint8, at []byte) {
		small(t)
		data := build(prog)
		nblocks := int64(len(data))/proto.DeltaBlock + 2 // some past the end
		splits := []int64{0}
		for i := 0; i+1 < len(at) && len(splits) < int(workers%6)+1; i += 2 {
			splits = append(splits, (int64(at[i])<<8|int64(at[i+1]))%nblocks*proto.DeltaBlock)
		}
		slices.Sort(splits)
		splits = slices.Compact(splits)
		testChunked = func(int, int64) { runtime.Gosched() }
		w := &Walker{Pol: testPol}
		refs, blocks, err := w.readSegments(bytes.NewReader(data), int64(len(data)), splits)
		compare(t, fmt.Sprintf("%d bytes split at %v", len(data), splits), data, refs, blocks, err)
	})
}

// build runs prog, 4 bytes an instruction (kind, 16-bit length in 64-byte
// units, value), into at most 2 MiB of data; a shorter prog is the data.
func build(prog []byte) []byte {
	if len(prog) < 4 {
		return prog
	}
	var out []byte
	for ; len(prog) >= 4 && len(out) < 2<<20; prog = prog[4:] {
		n := min(int(prog[1])<<8|int(prog[2]), (2<<20-len(out))/64) * 64
		v := prog[3]
		switch prog[0] % 4 {
		case 0:
			out = append(out, randomBytes(uint64(v)<<32|uint64(len(out)), n)...)
		case 1:
			out = append(out, bytes.Repeat([]byte{v}, n)...)
		case 2: // a short pattern, repeated
			pat := randomBytes(uint64(v), int(v%16)+1)
			out = append(out, bytes.Repeat(pat, n/len(pat)+1)[:n]...)
		case 3: // earlier bytes again
			if len(out) > 0 {
				from := int(v) * 4096 % len(out)
				for range n {
					out = append(out, out[from])
					from++
				}
			}
		}
	}
	return out
}

// BenchmarkReadLargeFile reads a 256 MiB file of random bytes from the
// page cache at restic's chunking parameters, on one goroutine and in
// parallel (as many workers as GOMAXPROCS allows, at most maxWorkers).
func BenchmarkReadLargeFile(b *testing.B) {
	const size = 256 << 20
	w := &Walker{Root: b.TempDir(), Pol: testPol}
	rel := writeFile(b, w, "big", randomBytes(11, size))
	for _, c := range []struct {
		name string
		min  int64
	}{{"sequential", math.MaxInt64}, {"parallel", parallelMin}} {
		b.Run(c.name, func(b *testing.B) {
			old := parallelMin
			parallelMin = c.min
			defer func() { parallelMin = old }()
			b.SetBytes(size)
			for b.Loop() {
				if _, _, err := w.read(rel, size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestWorkersBound: Walker.Workers caps the goroutines of one read; 1 reads
// every file on one (the agent's default, chunk_workers).
func TestWorkersBound(t *testing.T) {
	small(t)
	size := int64(4 * tSegment)
	if s := splitPoints(size, 1); s != nil {
		t.Errorf("workers 1: split at %v, want one goroutine", s)
	}
	if s := splitPoints(size, 2); len(s) != 2 {
		t.Errorf("workers 2: split at %v, want 2 segments", s)
	}
	if s := splitPoints(size, 0); len(s) != 4 {
		t.Errorf("workers 0 (GOMAXPROCS, maxWorkers): split at %v, want 4 segments", s)
	}
}
