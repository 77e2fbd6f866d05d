package backup

import (
	"encoding/json"
	"fmt"

	"github.com/haulproject/haul/puller/internal/restic/data"
)

// treeJSON builds one directory's restic tree blob, byte for byte what
// restic's data.TreeJSONBuilder writes (a test holds it to that), but
// tells how many bytes it holds and grows in blocks instead of doubling one
// buffer: what it holds is what the limit counts (a doubling buffer would
// allocate twice the limit just before refusing), and a directory that is
// refused costs at most the limit.
type treeJSON struct {
	blocks [][]byte
	held   int64 // capacity of the blocks
	last   string
	count  int64
}

const (
	treeBlockMin = 256     // deep nesting costs little per level
	treeBlockMax = 1 << 20 // and wide directories grow in 1 MiB steps
)

func newTreeJSON() *treeJSON {
	t := &treeJSON{}
	t.write([]byte(`{"nodes":[`))
	return t
}

// grow is how many bytes a write of n needs beyond the blocks held (0: it fits).
func (t *treeJSON) grow(n int) int64 {
	if len(t.blocks) > 0 {
		b := t.blocks[len(t.blocks)-1]
		if cap(b)-len(b) >= n {
			return 0
		}
	}
	size := treeBlockMin
	if len(t.blocks) > 0 {
		size = min(2*cap(t.blocks[len(t.blocks)-1]), treeBlockMax)
	}
	return int64(max(size, n))
}

func (t *treeJSON) write(p []byte) {
	if extra := t.grow(len(p)); extra > 0 {
		t.blocks = append(t.blocks, make([]byte, 0, extra))
		t.held += extra
	}
	last := &t.blocks[len(t.blocks)-1]
	*last = append(*last, p...)
}

// add appends a node; names must arrive sorted by their bytes, each once.
// If the node would make the builder hold more than budget bytes, nothing
// is added and ok is false.
func (t *treeJSON) add(n *data.Node, budget int64) (ok bool, err error) {
	if n.Name <= t.last {
		return false, fmt.Errorf("node %q, last %q: %w", n.Name, t.last, data.ErrTreeNotOrdered)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return false, err
	}
	if t.held+t.grow(len(b)+1) > budget {
		return false, nil
	}
	if t.count > 0 {
		t.write([]byte{','})
	}
	t.last = n.Name
	t.write(b)
	t.count++
	return true, nil
}

// size is the memory the builder holds.
func (t *treeJSON) size() int64 { return t.held }

// finish returns the blob and releases the builder's blocks.
func (t *treeJSON) finish() []byte {
	total := 3
	for _, b := range t.blocks {
		total += len(b)
	}
	out := make([]byte, 0, total)
	for i, b := range t.blocks {
		out = append(out, b...)
		t.blocks[i] = nil
	}
	t.blocks, t.held = nil, 0
	return append(out, "]}\n"...)
}
