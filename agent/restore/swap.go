package restore

import (
	"time"

	"encoding/json"
	"errors"
	"fmt"
	"github.com/haulproject/haul/internal/atomicfile"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/haulproject/haul/proto"
	"golang.org/x/sys/unix"
)

// PrevInfix and prevTimeFormat name the copies of the data a restore
// replaced: <data path>.prev-<UTC time>, which sort by time.
const (
	PrevInfix      = ".prev-"
	prevTimeFormat = "20060102T150405.000Z"
)

// swapJournal records a swap in progress, so an agent killed between
// exchanging the directories and renaming the old data to *.prev-* leaves
// nothing behind that the next restore would mistake for a stale staging
// copy. Inode numbers tell whether the exchange happened.
type swapJournal struct {
	Entries []swapEntry `json:"entries"`
	// Marker is the ready marker to write once the data is swapped in
	// (none: the restore asked for no marker). While it is set the journal
	// outlives the swap: it is removed only after the marker is written
	// (EndSwap), so an agent killed in between still leaves a ready host
	// once FinishSwap has run.
	Marker json.RawMessage `json:"marker,omitempty"`
}

type swapEntry struct {
	Live       string `json:"live"`
	Staging    string `json:"staging"`
	Prev       string `json:"prev"`
	StagingIno uint64 `json:"staging_ino"` // the restored tree's directory
}

// swapState is what the swap did to one data path, for rolling it back.
type swapState struct {
	existed   bool // there was live data
	exchanged bool // RENAME_EXCHANGE: the staging name now holds the old data
}

// Swap puts every staging directory in place of its data path. Where the
// file system supports it, staging and live are exchanged in one atomic
// rename (the data path is never missing), then the old data is renamed to
// *.prev-<stamp>. If any data path fails, those already swapped are put
// back. It returns the previous copies kept. A marker (the ready marker's
// JSON) keeps the journal after the swap, until EndSwap: the caller writes
// the marker, then ends the swap.
func (st *Stage) Swap(now time.Time, marker json.RawMessage) ([]string, error) {
	stamp := now.UTC().Format(prevTimeFormat)
	st.CloseAll()
	j := swapJournal{Marker: marker}
	for _, r := range st.roots {
		var s unix.Stat_t
		if err := unix.Lstat(r.staging, &s); err != nil {
			return nil, proto.Errorf(proto.CodeIO, "stat %s before the swap: %v", r.staging, err)
		}
		j.Entries = append(j.Entries, swapEntry{Live: r.dataPath, Staging: r.staging, Prev: r.dataPath + PrevInfix + stamp, StagingIno: s.Ino})
	}
	if err := atomicfile.WriteJSON(st.host.SwapJournal, &j, 0o600); err != nil {
		return nil, proto.Errorf(proto.CodeIO, "write swap journal: %v", err)
	}
	states := make([]swapState, len(st.roots))
	for i, e := range j.Entries {
		s, err := swapOne(e)
		if err != nil {
			for k := i - 1; k >= 0; k-- {
				if rerr := unswapOne(j.Entries[k], states[k]); rerr != nil {
					err = errors.Join(err, fmt.Errorf("and putting %s back failed: %w (its old data is at %s or %s)", j.Entries[k].Live, rerr, j.Entries[k].Staging, j.Entries[k].Prev))
				}
			}
			_ = os.Remove(st.host.SwapJournal)
			return nil, proto.Errorf(proto.CodeIO, "swap %s: %v", e.Live, err)
		}
		states[i] = s
	}
	// The restored data is live everywhere. Label the old data.
	var kept []string
	var errs []error
	for i, e := range j.Entries {
		if !states[i].existed {
			continue
		}
		if states[i].exchanged {
			if err := e.keepPrevious(); err != nil {
				errs = append(errs, fmt.Errorf("keep previous data: %w", err))
				continue
			}
		}
		kept = append(kept, e.Prev)
	}
	j.syncParents()
	st.labelFailed = len(errs) > 0
	if len(errs) == 0 && marker == nil {
		_ = os.Remove(st.host.SwapJournal)
	}
	// The swap itself succeeded: a failure to label the old data is
	// reported, not rolled back.
	if len(errs) > 0 {
		st.Warn("%v", errors.Join(errs...))
	}
	return kept, nil
}

// keepPrevious labels the old data an exchange left under the staging name
// with its *.prev-* name.
func (e swapEntry) keepPrevious() error {
	if err := unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Prev, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("rename %s to %s: %w", e.Staging, e.Prev, err)
	}
	return nil
}

// moveIn puts the restored tree where no data is.
func (e swapEntry) moveIn() error {
	if err := unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Live, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("rename %s to %s: %w", e.Staging, e.Live, err)
	}
	return nil
}

// syncParents makes the renames durable.
func (j *swapJournal) syncParents() {
	for _, e := range j.Entries {
		_ = atomicfile.SyncDir(filepath.Dir(e.Live))
	}
}

func swapOne(e swapEntry) (swapState, error) {
	if _, err := os.Lstat(e.Live); errors.Is(err, os.ErrNotExist) {
		return swapState{}, e.moveIn()
	}
	err := unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Live, unix.RENAME_EXCHANGE)
	if err == nil {
		return swapState{existed: true, exchanged: true}, nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
		return swapState{}, err
	}
	// No atomic exchange on this file system: two renames, undone if the
	// second fails.
	if err := unix.Renameat2(unix.AT_FDCWD, e.Live, unix.AT_FDCWD, e.Prev, unix.RENAME_NOREPLACE); err != nil {
		return swapState{}, err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Live, unix.RENAME_NOREPLACE); err != nil {
		if rerr := os.Rename(e.Prev, e.Live); rerr != nil {
			return swapState{}, errors.Join(err, fmt.Errorf("putting the old data back from %s failed: %w", e.Prev, rerr))
		}
		return swapState{}, err
	}
	return swapState{existed: true}, nil
}

func unswapOne(e swapEntry, s swapState) error {
	switch {
	case s.exchanged:
		return unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Live, unix.RENAME_EXCHANGE)
	case s.existed:
		if err := os.Rename(e.Live, e.Staging); err != nil {
			return err
		}
		return os.Rename(e.Prev, e.Live)
	default:
		return os.Rename(e.Live, e.Staging)
	}
}

// EndSwap removes the journal of a swap whose ready marker is written. If
// the old data could not all be labelled, the journal stays for
// FinishSwap to label it (writing the marker again does no harm).
func (st *Stage) EndSwap() error {
	if st.labelFailed {
		return nil
	}
	if err := os.Remove(st.host.SwapJournal); err != nil && !errors.Is(err, os.ErrNotExist) {
		return proto.Errorf(proto.CodeIO, "remove swap journal: %v", err)
	}
	return nil
}

// FinishSwap completes a swap an earlier agent was killed in. The journal
// is written only after every staging tree was verified, so a swap that had
// begun on any data path is rolled forward on all of them: a host never
// runs with some paths restored and others not. Where the restored tree is
// live, the old data still under the staging name is renamed to its
// *.prev-* name; where the data path is missing, the restored tree is moved
// in; where the exchange had not happened yet, it is done now. Where
// nothing was swapped anywhere, the journal is dropped and the staging
// copies are left for the next restore to remove.
func FinishSwap(h Host, logf func(string, ...any)) error {
	b, err := os.ReadFile(h.SwapJournal)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return proto.Errorf(proto.CodeIO, "read swap journal: %v", err)
	}
	var j swapJournal
	if err := json.Unmarshal(b, &j); err != nil {
		logf("warning: dropping unreadable swap journal %s: %v", h.SwapJournal, err)
		return os.Remove(h.SwapJournal)
	}
	states := make([]journalState, len(j.Entries))
	begun := false
	for i, e := range j.Entries {
		states[i] = classify(e)
		if states[i] != notSwapped && states[i] != gone {
			begun = true
		}
	}
	if !begun {
		return os.Remove(h.SwapJournal)
	}
	var errs []error
	for i, e := range j.Entries {
		switch states[i] {
		case notSwapped:
			// Killed before this path's turn: the others are restored, so
			// this one is too.
			s, err := swapOne(e)
			if err != nil {
				errs = append(errs, fmt.Errorf("finish an interrupted swap: swap %s: %w", e.Live, err))
				continue
			}
			if s.exchanged {
				if err := e.keepPrevious(); err != nil {
					errs = append(errs, fmt.Errorf("finish an interrupted swap: %w", err))
					continue
				}
			}
			logf("finished an interrupted swap: %s restored (previous data, if any, kept as %s)", e.Live, e.Prev)
		case halfRenamed:
			// Killed between the two renames of a file system without
			// RENAME_EXCHANGE: the old data is already at its *.prev-*
			// name, the verified restored tree still under staging.
			if err := e.moveIn(); err != nil {
				errs = append(errs, fmt.Errorf("finish an interrupted swap: %w", err))
				continue
			}
			logf("finished an interrupted swap of %s (previous data kept as %s)", e.Live, e.Prev)
		case exchanged:
			if err := e.keepPrevious(); err != nil {
				errs = append(errs, fmt.Errorf("finish an interrupted swap: %w", err))
				continue
			}
			logf("finished an interrupted swap: previous data of %s kept as %s", e.Live, e.Prev)
		case gone:
			// Nothing to roll forward with; the next restore stages anew.
			logf("warning: an interrupted swap's restored tree for %s is neither live nor at %s; %s was left as it is (restore again to replace it)", e.Live, e.Staging, e.Live)
		}
	}
	j.syncParents()
	if len(errs) == 0 && j.Marker != nil && h.WriteMarker != nil {
		// The dead agent swapped the data in but may not have marked the
		// host ready: the units waiting on the marker start now.
		if err := h.WriteMarker(j.Marker); err != nil {
			errs = append(errs, fmt.Errorf("finish an interrupted swap: write the ready marker: %w", err))
		} else {
			logf("finished an interrupted swap: ready marker written")
		}
	}
	if len(errs) > 0 {
		// The journal stays, so the next restore or recover tries again.
		return proto.Errorf(proto.CodeIO, "%v", errors.Join(errs...))
	}
	return os.Remove(h.SwapJournal)
}

// journalState is where one journal entry's swap got to.
type journalState int

const (
	notSwapped  journalState = iota // the restored tree is still under staging, the old data live
	exchanged                       // the restored tree is live, the old data under staging
	halfRenamed                     // the old data is at *.prev-*, the restored tree under staging, nothing live
	swapped                         // the restored tree is live, nothing left to do
	gone                            // the restored tree is nowhere to be found
)

func classify(e swapEntry) journalState {
	isStaged := func(path string) bool {
		var s unix.Stat_t
		return unix.Lstat(path, &s) == nil && s.Ino == e.StagingIno
	}
	var live unix.Stat_t
	lerr := unix.Lstat(e.Live, &live)
	_, serr := os.Lstat(e.Staging)
	switch {
	case lerr == nil && live.Ino == e.StagingIno && serr == nil:
		return exchanged
	case lerr == nil && live.Ino == e.StagingIno:
		return swapped
	case errors.Is(lerr, unix.ENOENT) && isStaged(e.Staging):
		if _, perr := os.Lstat(e.Prev); perr == nil {
			return halfRenamed
		}
		return notSwapped // a data path that had no data before
	case lerr == nil && isStaged(e.Staging):
		return notSwapped
	}
	return gone
}

// PrunePrevious removes the oldest *.prev-* copies of each data path beyond
// keep_previous.
func PrunePrevious(h Host) ([]string, error) {
	keep := h.Keep
	var pruned []string
	var errs []error
	for _, p := range h.DataPaths {
		dir, base := filepath.Split(p)
		ents, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var prevs []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), base+PrevInfix) {
				prevs = append(prevs, e.Name())
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(prevs)))
		for _, name := range prevs[min(keep, len(prevs)):] {
			full := filepath.Join(dir, name)
			if err := os.RemoveAll(full); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", full, err))
				continue
			}
			pruned = append(pruned, full)
		}
	}
	return pruned, errors.Join(errs...)
}
