package proto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// Version is the highest protocol version this build speaks; MinVersion the
// lowest. The puller offers a range in Hello, the agent picks the highest
// common version in HelloReply.
const (
	Version    = 3 // 2 adds deltas (delta.go); 3 adds unchanged files without chunk lists (Node.Same)
	MinVersion = 1
)

// Versions lists every version this build speaks, for a Hello.
func Versions() []int {
	var v []int
	for i := MinVersion; i <= Version; i++ {
		v = append(v, i)
	}
	return v
}

// SameVersion is the first protocol version in which a walk may name the
// agent's walk the puller holds (Walk.Base) and a file node may say its
// chunks are those of that walk (Node.Same) instead of listing them.
const SameVersion = 3

// ID is a chunk's SHA-256, which is also its restic blob ID.
type ID [32]byte

// Hash returns the ID of data.
func Hash(data []byte) ID { return sha256.Sum256(data) }

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, as restic prints IDs.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// MarshalText encodes the ID as 64 hex digits.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes 64 hex digits.
func (id *ID) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("chunk ID %q: want 64 hex digits", b)
	}
	_, err := hex.Decode(id[:], b)
	return err
}

// Hello opens a session (puller → agent).
type Hello struct {
	Versions []int `json:"versions"`
	// ChunkerPolynomial is the repository's chunker polynomial, hex.
	ChunkerPolynomial string `json:"chunker_polynomial"`
	Client            string `json:"client"`
	// Features the puller supports beyond the base protocol.
	Features []string `json:"features,omitempty"`
}

// HelloReply answers Hello (agent → puller).
type HelloReply struct {
	Version        int      `json:"version"`
	Agent          string   `json:"agent"`
	Host           string   `json:"host"`
	Verb           string   `json:"verb"`
	DataPaths      []string `json:"data_paths"`
	RestoreAllowed bool     `json:"restore_allowed"`
	Ready          bool     `json:"ready"`
	Features       []string `json:"features,omitempty"`
}

// Freeze asks the agent to quiesce, sync its mirror and resume.
type Freeze struct {
	Tags []string `json:"tags,omitempty"`
}

// Phase is one timed step of a freeze or restore.
type Phase struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
}

// Frozen reports a completed freeze (agent → puller).
type Frozen struct {
	Mode string `json:"mode"`
	// FreezeMS is the window from the first quiesce call to the last resume
	// returning: the downtime.
	FreezeMS    float64 `json:"freeze_ms"`
	Phases      []Phase `json:"phases"`
	PreSyncMS   float64 `json:"presync_ms"`
	FilesCopied int64   `json:"files_copied"`
	BytesCopied int64   `json:"bytes_copied"`
	// Skipped counts entries of the frozen sync that changed identity
	// between lstat and open (swapped for a symlink, say): the agent did not
	// follow them, and the snapshot holds their previous mirror copy.
	// Warnings describe the first few (at most 20), paths quoted.
	Skipped  int64    `json:"skipped,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// FeatureExclude is the HelloReply feature of an agent that honours
// Walk.Exclude. An agent without it ignores Walk's payload, so the puller
// refuses to send it excludes (they would be ignored, and the excluded
// files sent).
const FeatureExclude = "exclude"

// Walk asks for the manifest of the mirror (puller → agent).
type Walk struct {
	// Exclude lists patterns with restic's --exclude semantics
	// (internal/exclude); matching paths are left out of the manifest, and
	// below an excluded directory nothing is walked.
	Exclude []string `json:"exclude,omitempty"`
	// Base (version 3) names the agent's walk the puller holds as its
	// latest snapshot of this host (ManifestEnd.Walk of that session).
	Base string `json:"base,omitempty"`
}

// ChunkRef is one chunk of a file's content, in order.
type ChunkRef struct {
	ID     ID     `json:"id"`
	Length uint32 `json:"len"`
}

// Node types, as restic names them.
const (
	NodeFile    = "file"
	NodeDir     = "dir"
	NodeSymlink = "symlink"
	NodeDev     = "dev"
	NodeCharDev = "chardev"
	NodeFifo    = "fifo"
	NodeSocket  = "socket"
)

// Node is one file system object. Names and link targets are bytes: file
// names need not be UTF-8. A dir node opens a directory that a TDirEnd
// closes; its children come in between, sorted by name.
type Node struct {
	Name       []byte     `json:"name"`
	Type       string     `json:"type"`
	Mode       uint32     `json:"mode"` // Go os.FileMode bits
	UID        uint32     `json:"uid"`
	GID        uint32     `json:"gid"`
	User       string     `json:"user,omitempty"`
	Group      string     `json:"group,omitempty"`
	MTime      int64      `json:"mtime"` // Unix nanoseconds
	ATime      int64      `json:"atime"`
	CTime      int64      `json:"ctime"`
	Size       uint64     `json:"size,omitempty"`
	Inode      uint64     `json:"inode,omitempty"`
	DeviceID   uint64     `json:"device_id,omitempty"`
	Links      uint64     `json:"links,omitempty"`
	Device     uint64     `json:"device,omitempty"` // st_rdev of device nodes
	LinkTarget []byte     `json:"link_target,omitempty"`
	Chunks     []ChunkRef `json:"chunks,omitempty"`
	// Same (version 3, files only) says the file's chunks are exactly
	// those of the same path in the base walk (Walk.Base); Chunks is then
	// empty.
	Same bool `json:"same,omitempty"`
}

// FileMode returns the node's mode as os.FileMode.
func (n *Node) FileMode() os.FileMode { return os.FileMode(n.Mode) }

// Validate checks what the receiver relies on: a safe single-component
// name, a known type, and for files chunk lengths that add up to the size.
func (n *Node) Validate() error {
	if err := ValidName(n.Name); err != nil {
		return err
	}
	if n.Same && (n.Type != NodeFile || len(n.Chunks) > 0) {
		return fmt.Errorf("%s %q: marked same as the base walk but is not a file without chunks", n.Type, n.Name)
	}
	switch n.Type {
	case NodeFile:
		if n.Same {
			break // the puller checks the size against the base's node
		}
		var sum uint64
		for _, c := range n.Chunks {
			if c.Length == 0 || c.Length > MaxChunk {
				return fmt.Errorf("file %q: chunk %s has length %d", n.Name, c.ID.Short(), c.Length)
			}
			sum += uint64(c.Length)
		}
		if sum != n.Size {
			return fmt.Errorf("file %q: chunks add up to %d bytes, size is %d", n.Name, sum, n.Size)
		}
	case NodeSymlink:
		if len(n.LinkTarget) == 0 || bytes.IndexByte(n.LinkTarget, 0) >= 0 {
			return fmt.Errorf("symlink %q: empty target or target with NUL", n.Name)
		}
	case NodeDir, NodeDev, NodeCharDev, NodeFifo, NodeSocket:
	default:
		return fmt.Errorf("node %q: unknown type %q", n.Name, n.Type)
	}
	if n.Type != NodeFile && len(n.Chunks) > 0 {
		return fmt.Errorf("%s %q carries chunks", n.Type, n.Name)
	}
	return nil
}

// ValidName accepts one path component: not empty, not "." or "..", no "/"
// and no NUL, at most 255 bytes.
func ValidName(name []byte) error {
	switch {
	case len(name) == 0:
		return fmt.Errorf("empty file name")
	case len(name) > 255:
		return fmt.Errorf("file name of %d bytes exceeds 255", len(name))
	case string(name) == "." || string(name) == "..":
		return fmt.Errorf("file name %q is not allowed", name)
	case bytes.IndexByte(name, '/') >= 0:
		return fmt.Errorf("file name %q contains '/'", name)
	case bytes.IndexByte(name, 0) >= 0:
		return fmt.Errorf("file name %q contains NUL", name)
	}
	return nil
}

// Time converts Unix nanoseconds to time.Time.
func Time(ns int64) time.Time { return time.Unix(0, ns) }

// ManifestEnd closes the manifest (agent → puller).
type ManifestEnd struct {
	Files int64 `json:"files"`
	Dirs  int64 `json:"dirs"`
	Bytes int64 `json:"bytes"`
	// FilesRead and BytesRead count what the agent had to read and chunk
	// because its chunk cache did not know the file.
	FilesRead int64 `json:"files_read"`
	BytesRead int64 `json:"bytes_read"`
	Chunks    int64 `json:"chunks"`
	// Excluded counts entries left out by Walk.Exclude (a directory
	// counts once; what is below it is not walked).
	Excluded int64 `json:"excluded,omitempty"`
	// Walk names this walk: a later session's Walk.Base may refer to it
	// once the puller has stored a snapshot of it.
	Walk string `json:"walk,omitempty"`
	// Same counts file nodes sent as Same (version 3).
	Same int64 `json:"same,omitempty"`
}

// Done ends a backup session (puller → agent).
type Done struct{}

// Bye is the agent's last message.
type Bye struct {
	ChunksSent int64 `json:"chunks_sent"`
	BytesSent  int64 `json:"bytes_sent"` // frame bytes written by the agent
	RawBytes   int64 `json:"raw_bytes"`  // chunk bytes before compression
	Deltas     int64 `json:"deltas"`     // chunks sent as deltas (version 2)
	MaxRSSKiB  int64 `json:"max_rss_kib,omitempty"`
}

// Error codes.
const (
	CodeProtocol  = "protocol"  // malformed or unexpected frame
	CodeVersion   = "version"   // no common protocol version
	CodeRefused   = "refused"   // not allowed by the agent's configuration
	CodeFreeze    = "freeze"    // quiesce, sync or resume failed
	CodeIO        = "io"        // reading or writing data failed
	CodeNoSpace   = "no-space"  // disk full
	CodeVerify    = "verify"    // data did not match its ID
	CodeBusy      = "busy"      // another session holds the agent's lock
	CodeInternal  = "internal"  // anything else
	CodeCancelled = "cancelled" // the peer went away or a signal arrived
)

// Error is a fatal error report; the sender closes after it.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message + " [" + e.Code + "]" }

// CodedError is a failure on this side, with the code to report it to the
// peer under (the Code of the TError sent for it).
type CodedError struct {
	Code string
	Err  error
}

func (e *CodedError) Error() string { return e.Err.Error() }
func (e *CodedError) Unwrap() error { return e.Err }

// Errorf returns a CodedError with code and the formatted message.
func Errorf(code, format string, args ...any) error {
	return &CodedError{Code: code, Err: fmt.Errorf(format, args...)}
}

// RestoreBegin opens a restore (puller → agent). The snapshot's tree
// follows as TNode/TDirEnd frames, rooted at "/" like a backup manifest,
// closed by TManifestEnd.
type RestoreBegin struct {
	Snapshot string    `json:"snapshot"` // snapshot ID, for the marker and logs
	Host     string    `json:"host"`     // the host the snapshot was taken of
	Time     time.Time `json:"time"`     // the snapshot's time
	Paths    []string  `json:"paths"`    // must equal the agent's data paths (the puller maps the snapshot's onto them)
	DryRun   bool      `json:"dry_run,omitempty"`
	// NoMarker leaves the ready marker unwritten: `haul migrate` verifies
	// the new host first and then sends TMark.
	NoMarker bool `json:"no_marker,omitempty"`
	// ReplaceLiveData lets the restore replace the data of a host that
	// has data but no ready marker (haul restore --replace-live-data).
	ReplaceLiveData bool `json:"replace_live_data,omitempty"`
	// AllowSpecial restores device nodes and setuid/setgid bits (haul
	// restore --allow-special); without it they are skipped and cleared.
	AllowSpecial bool `json:"allow_special,omitempty"`
}

// RestoreCommit says every chunk was sent: verify, swap (puller → agent).
type RestoreCommit struct{}

// RestoreResult reports the outcome of a restore or a mark (agent → puller).
type RestoreResult struct {
	Files      int64 `json:"files"`
	Dirs       int64 `json:"dirs"`
	Bytes      int64 `json:"bytes"`
	ChunksGot  int64 `json:"chunks_received"`
	ChunkBytes int64 `json:"chunk_bytes"` // plain bytes received
	// FreezeMS is the window the targets were quiesced: only the swap.
	FreezeMS float64 `json:"freeze_ms"`
	// SwapStarted and SwapEnded bracket the freeze (agent clock).
	SwapStarted time.Time `json:"swap_started,omitzero"`
	SwapEnded   time.Time `json:"swap_ended,omitzero"`
	Phases      []Phase   `json:"phases"`
	Kept        []string  `json:"kept,omitempty"`   // previous data kept as *.prev-<time>
	Pruned      []string  `json:"pruned,omitempty"` // older copies removed (keep_previous)
	Marker      string    `json:"marker,omitempty"` // the ready marker written
	DryRun      bool      `json:"dry_run,omitempty"`
	Warnings    []string  `json:"warnings,omitempty"`
	// Without allow_special: device nodes not created and files whose
	// setuid/setgid bits were cleared (each listed in Warnings, up to 50).
	DevicesSkipped int `json:"devices_skipped,omitempty"`
	SetidCleared   int `json:"setid_cleared,omitempty"`
	// A dry run onto live data: what the swap would change (at most 50
	// lines) and how many entries in all.
	Changes     []string `json:"changes,omitempty"`
	ChangeCount int      `json:"change_count,omitempty"`
}

// Mark asks the agent to write its ready marker without restoring
// (puller → agent, instead of RestoreBegin); the agent answers
// RestoreResult.
type Mark struct {
	Snapshot string `json:"snapshot,omitempty"` // recorded in the marker
	Host     string `json:"host,omitempty"`
}

// Encode marshals a control message.
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxControl {
		return nil, fmt.Errorf("protocol: control message of %d bytes exceeds limit %d", len(b), MaxControl)
	}
	return b, nil
}

// Decode unmarshals a control message of type t into v.
func Decode(t Type, payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return frameErr("%s: %v", t, err)
	}
	return nil
}

// EncodeWant encodes chunk IDs for TWant or TRestoreWant.
func EncodeWant(ids []ID) []byte {
	b := make([]byte, 0, len(ids)*32)
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// DecodeWant decodes a TWant or TRestoreWant payload.
func DecodeWant(payload []byte) ([]ID, error) {
	if len(payload)%32 != 0 {
		return nil, frameErr("want: %d bytes is not a multiple of 32", len(payload))
	}
	if len(payload)/32 > MaxWantIDs {
		return nil, frameErr("want: %d IDs exceed limit %d", len(payload)/32, MaxWantIDs)
	}
	ids := make([]ID, len(payload)/32)
	for i := range ids {
		copy(ids[i][:], payload[i*32:])
	}
	return ids, nil
}

// Chunk encodings.
const (
	EncRaw  byte = 0
	EncZstd byte = 1
)

// ChunkHeaderSize is the size of a chunk frame's header: ID, encoding and
// plain length.
const ChunkHeaderSize = 32 + 1 + 4

// Chunk is a decoded TChunk frame. Data aliases the frame buffer.
type Chunk struct {
	ID       ID
	Encoding byte
	Length   uint32 // plain length
	Data     []byte
}

// ChunkHeader encodes a chunk frame header.
func ChunkHeader(id ID, enc byte, plainLen int) []byte {
	h := make([]byte, ChunkHeaderSize)
	copy(h, id[:])
	h[32] = enc
	binary.BigEndian.PutUint32(h[33:], uint32(plainLen))
	return h
}

// DecodeChunk parses a TChunk payload without decompressing it.
func DecodeChunk(payload []byte) (Chunk, error) {
	if len(payload) < ChunkHeaderSize {
		return Chunk{}, frameErr("chunk: %d bytes is shorter than its header", len(payload))
	}
	var c Chunk
	copy(c.ID[:], payload)
	c.Encoding = payload[32]
	c.Length = binary.BigEndian.Uint32(payload[33:])
	c.Data = payload[ChunkHeaderSize:]
	if c.Length == 0 || c.Length > MaxChunk {
		return Chunk{}, frameErr("chunk %s: plain length %d out of range", c.ID.Short(), c.Length)
	}
	switch c.Encoding {
	case EncRaw:
		if len(c.Data) != int(c.Length) {
			return Chunk{}, frameErr("chunk %s: %d raw bytes, header says %d", c.ID.Short(), len(c.Data), c.Length)
		}
	case EncZstd:
	default:
		return Chunk{}, frameErr("chunk %s: unknown encoding %d", c.ID.Short(), c.Encoding)
	}
	return c, nil
}

// Decompressor turns chunk frames back into plain bytes.
type Decompressor interface {
	// DecodeAll appends the decompressed src to dst, never growing dst
	// beyond cap(dst).
	DecodeAll(src, dst []byte) ([]byte, error)
}

// ErrChunkMismatch means a chunk's bytes do not hash to its announced ID.
var ErrChunkMismatch = fmt.Errorf("chunk data does not match its ID")

// Plain decompresses the chunk into buf (reused when large enough) and
// verifies its length and SHA-256 against the header. On any mismatch it
// returns an error wrapping ErrChunkMismatch or ErrFrame.
func (c Chunk) Plain(dec Decompressor, buf []byte) ([]byte, error) {
	var out []byte
	switch c.Encoding {
	case EncRaw:
		out = c.Data
	case EncZstd:
		if cap(buf) < int(c.Length) {
			buf = make([]byte, 0, c.Length)
		}
		var err error
		out, err = dec.DecodeAll(c.Data, buf[:0:c.Length])
		if err != nil {
			return nil, frameErr("chunk %s: decompress: %v", c.ID.Short(), err)
		}
	}
	if len(out) != int(c.Length) {
		return nil, frameErr("chunk %s: %d plain bytes, header says %d", c.ID.Short(), len(out), c.Length)
	}
	if Hash(out) != c.ID {
		return nil, fmt.Errorf("chunk %s: %w (got %s)", c.ID.Short(), ErrChunkMismatch, Hash(out).Short())
	}
	return out, nil
}

// Conn is one side of a session: a frame reader and writer.
type Conn struct {
	R *Reader
	W *Writer
}

// NewConn returns a Conn reading r and writing w.
func NewConn(r io.Reader, w io.Writer) *Conn { return &Conn{R: NewReader(r), W: NewWriter(w)} }

// Send encodes and sends one control message, flushing.
func (c *Conn) Send(t Type, v any) error {
	b, err := Encode(v)
	if err != nil {
		return err
	}
	if err := c.W.Write(t, b); err != nil {
		return err
	}
	return c.W.Flush()
}

// SendError sends an error report; failures to send are ignored, since the
// session is ending anyway.
func (c *Conn) SendError(code, format string, args ...any) {
	_ = c.Send(TError, &Error{Code: code, Message: fmt.Sprintf(format, args...)})
}

// Expect reads the next frame and decodes it into v, which must be of type
// want. A TError frame is returned as *Error; any other type is a protocol
// error.
func (c *Conn) Expect(want Type, v any) error {
	t, payload, err := c.R.Read()
	if err != nil {
		return err
	}
	return DecodeAs(t, payload, want, v)
}

// DecodeAs decodes a frame already read, checking its type.
func DecodeAs(t Type, payload []byte, want Type, v any) error {
	if t == TError {
		var e Error
		if err := Decode(t, payload, &e); err != nil {
			return err
		}
		return &e
	}
	if t != want {
		return frameErr("expected %s, got %s", want, t)
	}
	if v == nil {
		return nil
	}
	return Decode(t, payload, v)
}
