package proto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Limits. A frame larger than MaxFrame, or a control message larger than
// MaxControl, is a protocol error: the reader stops before allocating it.
const (
	// MaxChunk is the largest chunk restic's chunker produces (8 MiB).
	MaxChunk = 8 << 20
	// MaxFrame bounds type byte + payload of any frame: one chunk, its
	// header and zstd's worst-case expansion fit.
	MaxFrame = MaxChunk + MaxChunk/64 + 4096
	// MaxControl bounds JSON messages (hello, node, stats, errors).
	MaxControl = 1 << 20
	// MaxWantIDs bounds the IDs in one want frame.
	MaxWantIDs = 4096
)

// Type is a frame's message type.
type Type byte

// Message types. Values are part of the protocol and never reused.
const (
	THello       Type = 1  // puller → agent: versions, chunker parameters
	THelloReply  Type = 2  // agent → puller: chosen version, host, data paths
	TFreeze      Type = 3  // puller → agent: quiesce, sync the mirror, resume
	TFrozen      Type = 4  // agent → puller: freeze report
	TWalk        Type = 5  // puller → agent: stream the manifest
	TNode        Type = 6  // agent → puller (backup) or puller → agent (restore): one node
	TDirEnd      Type = 7  // closes the directory opened by the last open dir node
	TManifestEnd Type = 8  // agent → puller: manifest complete, with stats
	TWant        Type = 9  // puller → agent: chunk IDs to send
	TChunk       Type = 10 // chunk data, compressed, either direction
	TDone        Type = 11 // puller → agent: session complete
	TBye         Type = 12 // agent → puller: final stats, then the agent exits
	TError       Type = 13 // either side: fatal error, then close

	TRestoreBegin  Type = 20 // puller → agent: snapshot identity, tree follows as TNode/TDirEnd
	TRestoreCommit Type = 21 // puller → agent: all nodes and chunks sent; verify, swap
	TRestoreResult Type = 22 // agent → puller: outcome of the swap
	TRestoreWant   Type = 23 // agent → puller: the chunks the agent needs (same body as TWant)
	TMark          Type = 24 // puller → agent: write the ready marker without restoring
)

var typeNames = map[Type]string{
	THello: "hello", THelloReply: "hello-reply", TFreeze: "freeze", TFrozen: "frozen",
	TWalk: "walk", TNode: "node", TDirEnd: "dir-end", TManifestEnd: "manifest-end",
	TWant: "want", TChunk: "chunk", TDone: "done", TBye: "bye", TError: "error",
	TRestoreBegin: "restore-begin", TRestoreCommit: "restore-commit",
	TRestoreResult: "restore-result", TRestoreWant: "restore-want", TMark: "mark",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", byte(t))
}

// Known reports whether t is a message type of this protocol version.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

// ErrFrame marks malformed input: the peer is broken or hostile, and the
// session must end.
var ErrFrame = errors.New("malformed frame")

// FrameError describes a malformed frame.
type FrameError struct{ Reason string }

func (e *FrameError) Error() string { return "protocol: malformed frame: " + e.Reason }
func (e *FrameError) Unwrap() error { return ErrFrame }

func frameErr(format string, args ...any) error {
	return &FrameError{Reason: fmt.Sprintf(format, args...)}
}

// Reader reads frames: a 4-byte big-endian length n (1 ≤ n ≤ MaxFrame),
// then n bytes: the type byte and the payload.
type Reader struct {
	r   *bufio.Reader
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Read returns the next frame's type and payload. The payload is valid until
// the next call. io.EOF means the peer closed cleanly between frames;
// io.ErrUnexpectedEOF means the stream was cut inside a frame.
func (r *Reader) Read() (Type, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return 0, nil, frameErr("zero length")
	}
	if n > MaxFrame {
		return 0, nil, frameErr("length %d exceeds limit %d", n, MaxFrame)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	buf := r.buf[:n]
	if _, err := io.ReadFull(r.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	t := Type(buf[0])
	if !t.Known() {
		return 0, nil, frameErr("unknown message type %d", buf[0])
	}
	payload := buf[1:]
	if t != TChunk && t != TWant && t != TRestoreWant && t != TDelta && t != TWantFull && len(payload) > MaxControl {
		return 0, nil, frameErr("%s message of %d bytes exceeds control limit %d", t, len(payload), MaxControl)
	}
	return t, payload, nil
}

// Writer writes frames. It is not safe for concurrent use; callers that
// share one stream serialise through their own writer goroutine.
type Writer struct {
	w *bufio.Writer
	n int64
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriterSize(w, 64<<10)} }

// BytesWritten returns the number of bytes written so far.
func (w *Writer) BytesWritten() int64 { return w.n }

// Write buffers one frame. Call Flush to send buffered frames.
func (w *Writer) Write(t Type, payload ...[]byte) error {
	n := 1
	for _, p := range payload {
		n += len(p)
	}
	if n > MaxFrame {
		return fmt.Errorf("protocol: %s frame of %d bytes exceeds limit %d", t, n, MaxFrame)
	}
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(n))
	hdr[4] = byte(t)
	if _, err := w.w.Write(hdr[:]); err != nil {
		return err
	}
	for _, p := range payload {
		if _, err := w.w.Write(p); err != nil {
			return err
		}
	}
	w.n += 4 + int64(n)
	return nil
}

// Flush sends buffered frames.
func (w *Writer) Flush() error { return w.w.Flush() }
