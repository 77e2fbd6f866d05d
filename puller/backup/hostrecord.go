package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/haulproject/haul/proto"
	"github.com/haulproject/haul/puller/internal/restic/data"
	"github.com/haulproject/haul/puller/internal/restic/restic"
	"github.com/haulproject/haul/puller/repo"
)

// hostRecord is the NAS's record of what one host has given it: the data
// chunks this host sent that the repository stored, and which of the
// repository's snapshots it already accounts for. A backup reads it instead
// of walking every earlier snapshot of the host, so the cost of knowing what
// not to ask for grows with the host's data, not with its history.
//
// The record only ever says less than the snapshots do (a lost or stale
// record means asking again, never asking less): a snapshot it does not
// account for — written by restic, by another NAS, or by a run whose record
// update was lost — is walked once and added; an ID whose blob was pruned is
// dropped when the record is written, and want checks the index anyway.
// The trust rule is the same as before: a chunk counts as known only if
// this host sent it, in a snapshot of its own or in an interrupted run.
type hostRecord struct {
	path  string
	host  string
	repo  string
	snaps map[restic.ID]bool // snapshot → it is this host's (and counted)
	// raw holds more of snaps as read from the file (ID, then 1 if the
	// host's), decoded only when the snapshots must be listed.
	raw []byte
	ids map[proto.ID]struct{}
	// dir is the snapshots directory as the record last listed it: while
	// it is unchanged no snapshot was added or removed, and the record
	// need not list them again; loaded is the stamp this run saw.
	dir, loaded dirStamp
	// baseSnap is the host's latest snapshot by haul, baseWalk the
	// agent's walk it holds (see same.go).
	baseSnap restic.ID
	baseWalk string
}

// dirStamp identifies a directory's state: adding or removing a file
// changes its mtime (and replacing it, its inode).
type dirStamp struct {
	Ino   uint64 `json:"ino"`
	MTime int64  `json:"mtime_ns"`
}

func stampDir(path string) dirStamp {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return dirStamp{} // never equal to a stored stamp: list
	}
	return dirStamp{Ino: st.Ino, MTime: st.Mtim.Nano()}
}

// recordMagic opens a record file; the version is in it. Then a JSON
// header line, the snapshots (32-byte ID and a byte, 1 if the host's), the
// chunk IDs (32 bytes each), and the SHA-256 of all of it.
const recordMagic = "haul host record 1\n"

type recordHeader struct {
	Host       string   `json:"host"`
	Repository string   `json:"repository"`
	Snapshots  int      `json:"snapshots"`
	Chunks     int      `json:"chunks"`
	Dir        dirStamp `json:"snapshots_dir"`
	BaseSnap   string   `json:"base_snapshot,omitempty"`
	BaseWalk   string   `json:"base_walk,omitempty"`
}

func hostRecordPath(dir, host string) string { return filepath.Join(dir, host+".sent") }

// loadHostRecord reads the record of host in dir and brings it up to date
// with the repository's snapshots: it lists them (names only) and walks
// only those it has not seen. A missing, torn or foreign record is rebuilt
// the same way, from every snapshot of the host. No tree over maxTree bytes
// is read (see repo.HostBlobsBounded): its chunks are not in the record,
// so they are asked for again; it returns how many trees it skipped.
func loadHostRecord(ctx context.Context, r *repo.Repo, dir, host string, maxTree int64) (*hostRecord, int, error) {
	rec := readHostRecord(hostRecordPath(dir, host), host, r.Config().ID)
	// Stamp before listing: a snapshot added while we list changes the
	// directory after the stamp, so the next run lists again.
	stamp := stampDir(filepath.Join(r.Path, "snapshots"))
	rec.loaded = stamp
	if stamp == rec.dir && stamp != (dirStamp{}) {
		return rec, 0, nil
	}
	rec.dir = stamp
	rec.decodeSnaps()
	current, err := snapshotIDs(r.Path)
	if err != nil {
		return nil, 0, err
	}
	for id := range rec.snaps {
		if !current.Has(id) {
			delete(rec.snaps, id) // forgotten
		}
	}
	var trees restic.IDs
	for id := range current {
		if _, seen := rec.snaps[id]; seen {
			continue
		}
		sn, err := data.LoadSnapshot(ctx, r.Repository, id)
		if err != nil {
			return nil, 0, fmt.Errorf("load snapshot %s: %w", id.Str(), err)
		}
		mine := sn.Hostname == host
		rec.snaps[id] = mine
		if mine && sn.Tree != nil {
			trees = append(trees, *sn.Tree)
		}
	}
	set, skipped, err := r.TreeBlobsBounded(ctx, trees, maxTree)
	if err != nil {
		return nil, 0, fmt.Errorf("list blobs of host %s's snapshots: %w", host, err)
	}
	for h := range set {
		if h.Type == restic.DataBlob {
			rec.ids[proto.ID(h.ID)] = struct{}{}
		}
	}
	return rec, skipped, nil
}

func (rec *hostRecord) decodeSnaps() {
	const n = len(restic.ID{}) + 1
	for i := 0; i+n <= len(rec.raw); i += n {
		rec.snaps[restic.ID(rec.raw[i:i+n-1])] = rec.raw[i+n-1] == 1
	}
	rec.raw = nil
}

// snapshotIDs lists the repository's snapshots by their file names alone
// (haul's repositories are local directories in restic's layout, where a
// snapshot is the file snapshots/<ID>): names only, no stat or read of any
// snapshot file, so listing hundreds costs little more than listing five.
func snapshotIDs(repoPath string) (restic.IDSet, error) {
	f, err := os.Open(filepath.Join(repoPath, "snapshots"))
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list snapshots in %s: %w", f.Name(), err)
	}
	set := restic.NewIDSet()
	for _, n := range names {
		if id, err := restic.ParseID(n); err == nil {
			set.Insert(id) // anything else (a temporary file) is no snapshot
		}
	}
	return set, nil
}

// readHostRecord reads a record file; anything unreadable is an empty
// record (which loadHostRecord then rebuilds).
func readHostRecord(path, host, repoID string) *hostRecord {
	rec := &hostRecord{path: path, host: host, repo: repoID, snaps: map[restic.ID]bool{}, ids: map[proto.ID]struct{}{}}
	b, err := os.ReadFile(path)
	if err != nil || len(b) < len(recordMagic)+sha256.Size || !bytes.HasPrefix(b, []byte(recordMagic)) {
		return rec
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return rec
	}
	body = body[len(recordMagic):]
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	var h recordHeader
	const idLen = len(proto.ID{})
	if !ok || json.Unmarshal(line, &h) != nil || h.Host != host || h.Repository != repoID ||
		h.Chunks < 0 || h.Snapshots < 0 || len(rest) != h.Snapshots*(idLen+1)+h.Chunks*idLen {
		return rec
	}
	rec.raw = rest[:h.Snapshots*(idLen+1)]
	rest = rest[h.Snapshots*(idLen+1):]
	rec.dir = h.Dir
	if id, err := restic.ParseID(h.BaseSnap); err == nil && h.BaseWalk != "" {
		rec.baseSnap, rec.baseWalk = id, h.BaseWalk
	}
	for i := 0; i < len(rest); i += idLen {
		rec.ids[proto.ID(rest[i:i+idLen])] = struct{}{}
	}
	return rec
}

// savingSnapshot brackets the save of this run's snapshot: if nothing else
// changed the snapshots directory between loading the record and the save,
// the directory's stamp after the save is one the record accounts for. If
// something did, the record keeps the old stamp and the next run lists the
// snapshots. (A snapshot another process adds in the instant of our own
// save can be missed; the record then knows fewer chunks and the host is
// asked for them again: the safe side.)
func (rec *hostRecord) savingSnapshot(repoPath string, save func() (restic.ID, error)) (restic.ID, error) {
	dir := filepath.Join(repoPath, "snapshots")
	before := stampDir(dir)
	id, err := save()
	if err != nil {
		return id, err
	}
	rec.snaps[id] = true
	if before == rec.loaded && before != (dirStamp{}) {
		rec.dir = stampDir(dir)
	}
	return id, nil
}

// has reports whether this host sent chunk id before.
func (rec *hostRecord) has(id proto.ID) bool {
	_, ok := rec.ids[id]
	return ok
}

// save writes the record atomically, keeping only chunks the repository
// still holds (inIndex), so a pruned repository does not leave it growing.
func (rec *hostRecord) save(inIndex func(proto.ID) bool) error {
	if err := os.MkdirAll(filepath.Dir(rec.path), 0o700); err != nil {
		return err
	}
	ids := make([]proto.ID, 0, len(rec.ids))
	for id := range rec.ids {
		if inIndex(id) {
			ids = append(ids, id)
		}
	}
	h := recordHeader{Host: rec.host, Repository: rec.repo, Snapshots: len(rec.raw)/(len(restic.ID{})+1) + len(rec.snaps), Chunks: len(ids), Dir: rec.dir}
	if rec.baseWalk != "" {
		h.BaseSnap, h.BaseWalk = rec.baseSnap.String(), rec.baseWalk
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return err
	}
	tmp := rec.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	sum := sha256.New()
	w := bufio.NewWriter(io.MultiWriter(f, sum))
	_, _ = w.WriteString(recordMagic)
	_, _ = w.Write(hdr)
	_ = w.WriteByte('\n')
	_, _ = w.Write(rec.raw)
	for id, mine := range rec.snaps {
		_, _ = w.Write(id[:])
		if mine {
			_ = w.WriteByte(1)
		} else {
			_ = w.WriteByte(0)
		}
	}
	for _, id := range ids {
		_, _ = w.Write(id[:])
	}
	err = w.Flush()
	if err == nil {
		_, err = f.Write(sum.Sum(nil))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, rec.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write host record %s: %w", rec.path, err)
	}
	return nil
}
