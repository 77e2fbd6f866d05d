package backup

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/haulproject/haul/puller/internal/restic/data"
)

// treeJSON builds one directory's restic tree blob, byte for byte what
// restic's data.TreeJSONBuilder writes (a test holds it to that), but
// tells how many bytes it holds, so the puller can bound the tree data of
// all directories open at once.
type treeJSON struct {
	buf   bytes.Buffer
	last  string
	count int64
}

func newTreeJSON() *treeJSON {
	t := &treeJSON{}
	t.buf.WriteString(`{"nodes":[`)
	return t
}

// add appends a node; names must arrive sorted by their bytes, each once.
func (t *treeJSON) add(n *data.Node) error {
	if n.Name <= t.last {
		return fmt.Errorf("node %q, last %q: %w", n.Name, t.last, data.ErrTreeNotOrdered)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if t.count > 0 {
		t.buf.WriteByte(',')
	}
	t.last = n.Name
	t.buf.Write(b)
	t.count++
	return nil
}

// size is the memory the builder holds.
func (t *treeJSON) size() int64 { return int64(t.buf.Cap()) }

// finish returns the blob and releases the builder's buffer.
func (t *treeJSON) finish() []byte {
	t.buf.WriteString("]}\n")
	b := t.buf.Bytes()
	t.buf = bytes.Buffer{}
	return b
}
