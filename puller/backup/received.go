package backup

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/haulproject/haul/proto"
)

// receivedLog records, on the NAS, the chunks a host has sent whose
// snapshot was never written (an interrupted run). They are in the
// repository, but in none of the host's snapshots; without this log the
// next run would ask for them again.
type receivedLog struct {
	path string
	ids  map[proto.ID]bool
	f    *os.File
	w    *bufio.Writer
}

func openReceivedLog(dir, host string) (*receivedLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l := &receivedLog{path: filepath.Join(dir, host+".received"), ids: map[proto.ID]bool{}}
	if f, err := os.Open(l.path); err == nil {
		r := bufio.NewReader(f)
		var id proto.ID
		for {
			if _, err := io.ReadFull(r, id[:]); err != nil {
				break // a torn last record is simply dropped
			}
			l.ids[id] = true
		}
		f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	l.f, l.w = f, bufio.NewWriter(f)
	return l, nil
}

func (l *receivedLog) add(id proto.ID) {
	if !l.ids[id] {
		l.ids[id] = true
		_, _ = l.w.Write(id[:])
	}
}

// close flushes the log; with reset (a snapshot now covers every chunk)
// it is emptied.
func (l *receivedLog) close(reset bool) error {
	err := l.w.Flush()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if reset {
		return os.Remove(l.path)
	}
	return err
}
