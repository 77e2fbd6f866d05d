package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
)

// treeCursor reads one tree blob's nodes one at a time, as restic's tree
// iterator does (unknown keys around "nodes" are skipped), but as a value
// a walk can keep on an explicit stack: walking a snapshot costs one open
// tree per level and no goroutine or Go stack frame per level, so depth
// is bounded only by the snapshot.
type treeCursor struct {
	dec  *json.Decoder
	done bool
}

func openTree(ctx context.Context, repo restic.BlobLoader, id restic.ID) (*treeCursor, error) {
	buf, err := repo.LoadBlob(ctx, restic.TreeBlob, id, nil)
	if err != nil {
		return nil, err
	}
	c := &treeCursor{dec: json.NewDecoder(bytes.NewReader(buf))}
	if err := c.expect(json.Delim('{')); err != nil {
		return nil, err
	}
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("error decoding tree: expected string key, got %v", tok)
		}
		if key == "nodes" {
			return c, c.expect(json.Delim('['))
		}
		var raw json.RawMessage
		if err := c.dec.Decode(&raw); err != nil {
			return nil, err
		}
	}
}

func (c *treeCursor) expect(want json.Delim) error {
	tok, err := c.dec.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("error decoding tree: expected %v, got %v", want, tok)
	}
	return nil
}

// next returns the next node, or nil at the end of the tree.
func (c *treeCursor) next() (*data.Node, error) {
	if c.done {
		return nil, nil
	}
	if c.dec.More() {
		var n data.Node
		if err := c.dec.Decode(&n); err != nil {
			return nil, err
		}
		return &n, nil
	}
	c.done = true
	if err := c.expect(json.Delim(']')); err != nil {
		return nil, err
	}
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return nil, err
		}
		if tok == json.Delim('}') {
			return nil, nil
		}
		var raw json.RawMessage
		if err := c.dec.Decode(&raw); err != nil {
			return nil, err
		}
	}
}

// more reports whether next may return another node.
func (c *treeCursor) more() bool { return !c.done && c.dec.More() }

// joinPath is path.Join(prefix, name) for the walks. Every level of a walk
// keeps its prefix as a slice of one shared array: a child's path is the
// parent's prefix with the name appended in place, so the paths of a deep
// walk cost O(depth) memory, not O(depth²) as one string per level does.
// Appending never changes the bytes of the prefix itself, which the
// parent's later children reuse.
func joinPath(prefix []byte, name string) []byte {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		// Never in a tree haul or restic writes; keep path.Join's answer,
		// in an array of its own.
		p := string(prefix)
		if p == "" {
			p = "/"
		}
		return []byte(path.Join(p, name))
	}
	b := append(prefix, '/')
	return append(b, name...)
}
