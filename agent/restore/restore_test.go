package restore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haulproject/haul/internal/atomicfile"
	"golang.org/x/sys/unix"
)

func TestFinishInterruptedSwap(t *testing.T) {
	base := t.TempDir()
	h := struct{ data, state string }{filepath.Join(base, "srv", "data"), filepath.Join(base, "state")}
	host := Host{DataPaths: []string{h.data}, SwapJournal: filepath.Join(h.state, "restore-swap.json"), Keep: 2}
	os.MkdirAll(h.data, 0o755)
	os.WriteFile(filepath.Join(h.data, "old"), nil, 0o644)
	staging := h.data + StagingSuffix
	os.MkdirAll(staging, 0o700)
	os.WriteFile(filepath.Join(staging, "new"), nil, 0o644)
	os.MkdirAll(h.state, 0o700)
	var st unix.Stat_t
	unix.Lstat(staging, &st)
	prev := h.data + PrevInfix + "20240101T000000.000Z"
	atomicfile.WriteJSON(host.SwapJournal, &swapJournal{Entries: []swapEntry{{Live: h.data, Staging: staging, Prev: prev, StagingIno: st.Ino}}}, 0o600)
	// The agent died right after exchanging.
	if err := unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, h.data, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("no RENAME_EXCHANGE here: %v", err)
	}
	if err := FinishSwap(host, t.Logf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.data, "new")); err != nil {
		t.Errorf("restored tree not live: %v", err)
	}
	if _, err := os.Stat(filepath.Join(prev, "old")); err != nil {
		t.Errorf("old data not kept at %s: %v", prev, err)
	}
	if _, err := os.Stat(host.SwapJournal); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left: %v", err)
	}
}

// interrupted is a host with n data paths, each with old live data and a
// verified staging tree, and the journal Swap writes before its first rename.
func interrupted(t *testing.T, n int) (Host, []swapEntry) {
	t.Helper()
	base := t.TempDir()
	host := Host{SwapJournal: filepath.Join(base, "state", "restore-swap.json"), Keep: 2}
	if err := os.MkdirAll(filepath.Dir(host.SwapJournal), 0o700); err != nil {
		t.Fatal(err)
	}
	var j swapJournal
	for i := range n {
		live := filepath.Join(base, "srv", string(rune('a'+i)))
		host.DataPaths = append(host.DataPaths, live)
		staging := live + StagingSuffix
		for _, d := range []struct{ dir, file string }{{live, "old"}, {staging, "new"}} {
			if err := os.MkdirAll(d.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d.dir, d.file), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(staging, &st); err != nil {
			t.Fatal(err)
		}
		j.Entries = append(j.Entries, swapEntry{Live: live, Staging: staging, Prev: live + PrevInfix + "20240101T000000.000Z", StagingIno: st.Ino})
	}
	if err := atomicfile.WriteJSON(host.SwapJournal, &j, 0o600); err != nil {
		t.Fatal(err)
	}
	return host, j.Entries
}

func has(path string) bool { _, err := os.Lstat(path); return err == nil }

// TestFinishSwapRollsForwardEveryPath: an agent killed after swapping the
// first of three data paths (one fully, labelled; one only exchanged; one
// not reached) leaves, after FinishSwap, all three restored and all three
// old trees kept — never a host with some paths restored and others not.
func TestFinishSwapRollsForwardEveryPath(t *testing.T) {
	host, es := interrupted(t, 3)
	for _, e := range es[:2] {
		if err := unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Live, unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("RENAME_EXCHANGE: %v", err)
		}
	}
	if err := os.Rename(es[0].Staging, es[0].Prev); err != nil {
		t.Fatal(err)
	}
	var log []string
	if err := FinishSwap(host, func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) }); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !has(filepath.Join(e.Live, "new")) || has(filepath.Join(e.Live, "old")) {
			t.Errorf("%s is not the restored tree", e.Live)
		}
		if !has(filepath.Join(e.Prev, "old")) {
			t.Errorf("old data of %s not kept at %s", e.Live, e.Prev)
		}
		if has(e.Staging) {
			t.Errorf("%s left", e.Staging)
		}
	}
	if has(host.SwapJournal) {
		t.Error("journal left")
	}
	if len(log) != 2 {
		t.Errorf("want one line per path finished (2), got %q", log)
	}
}

// TestFinishSwapTwoRenames: without RENAME_EXCHANGE the swap is two
// renames; killed between them on the first path, FinishSwap moves the
// restored tree in there and swaps the second path too.
func TestFinishSwapTwoRenames(t *testing.T) {
	host, es := interrupted(t, 2)
	if err := os.Rename(es[0].Live, es[0].Prev); err != nil {
		t.Fatal(err)
	}
	if err := FinishSwap(host, t.Logf); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !has(filepath.Join(e.Live, "new")) || !has(filepath.Join(e.Prev, "old")) {
			t.Errorf("%s: restored %v, old kept %v", e.Live, has(filepath.Join(e.Live, "new")), has(filepath.Join(e.Prev, "old")))
		}
	}
}

// TestFinishSwapNotBegun: killed after writing the journal but before any
// rename, nothing is swapped: the live data stays, the journal goes.
func TestFinishSwapNotBegun(t *testing.T) {
	host, es := interrupted(t, 2)
	if err := FinishSwap(host, t.Logf); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !has(filepath.Join(e.Live, "old")) || has(e.Prev) {
			t.Errorf("%s was changed although no swap had begun", e.Live)
		}
	}
	if has(host.SwapJournal) {
		t.Error("journal left")
	}
}

// TestFinishSwapWritesTheMarker: a swap that completed (every path
// exchanged and labelled) but whose agent died before writing the ready
// marker leaves the journal with the marker; FinishSwap writes it, then
// drops the journal. A marker that cannot be written keeps the journal for
// the next try; a swap that never began writes none.
func TestFinishSwapWritesTheMarker(t *testing.T) {
	marker := json.RawMessage(`{"by":"restore","snapshot":"0123"}`)
	setup := func(t *testing.T, swapped bool) (Host, *[]string) {
		host, es := interrupted(t, 2)
		j := swapJournal{Entries: es, Marker: marker}
		if err := atomicfile.WriteJSON(host.SwapJournal, &j, 0o600); err != nil {
			t.Fatal(err)
		}
		if swapped {
			for _, e := range es {
				if err := unix.Renameat2(unix.AT_FDCWD, e.Staging, unix.AT_FDCWD, e.Live, unix.RENAME_EXCHANGE); err != nil {
					t.Fatalf("RENAME_EXCHANGE: %v", err)
				}
				if err := os.Rename(e.Staging, e.Prev); err != nil {
					t.Fatal(err)
				}
			}
		}
		var written []string
		host.WriteMarker = func(m json.RawMessage) error {
			var b bytes.Buffer
			if err := json.Compact(&b, m); err != nil {
				return err
			}
			written = append(written, b.String())
			return nil
		}
		return host, &written
	}

	host, written := setup(t, true)
	if err := FinishSwap(host, t.Logf); err != nil {
		t.Fatal(err)
	}
	if len(*written) != 1 || (*written)[0] != string(marker) {
		t.Errorf("markers written %q, want the journal's once", *written)
	}
	if has(host.SwapJournal) {
		t.Error("journal left after the marker was written")
	}

	host, _ = setup(t, true)
	host.WriteMarker = func(json.RawMessage) error { return errors.New("disk full") }
	if err := FinishSwap(host, t.Logf); err == nil || !strings.Contains(err.Error(), "ready marker") {
		t.Errorf("FinishSwap with the marker failing = %v, want an error naming it", err)
	}
	if !has(host.SwapJournal) {
		t.Error("journal dropped though the marker was not written")
	}

	host, written = setup(t, false)
	if err := FinishSwap(host, t.Logf); err != nil {
		t.Fatal(err)
	}
	if len(*written) != 0 {
		t.Errorf("a swap that never began wrote the marker %q", *written)
	}
}
