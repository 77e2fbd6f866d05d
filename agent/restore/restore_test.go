package restore

import (
	"errors"
	"os"
	"path/filepath"
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
		t.Skipf("no RENAME_EXCHANGE here: %v", err)
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
