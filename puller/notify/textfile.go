package notify

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/haulproject/haul/internal/atomicfile"
	"github.com/haulproject/haul/puller/status"
)

// metric is one gauge of the textfile, per host.
type metric struct {
	name, help string
	value      func(st *status.HostState) (float64, bool)
}

func lastSuccess(f func(r *status.Run) float64) func(st *status.HostState) (float64, bool) {
	return func(st *status.HostState) (float64, bool) {
		if st.LastSuccess == nil {
			return 0, false
		}
		return f(st.LastSuccess), true
	}
}

var metrics = []metric{
	{"haul_backup_last_run_timestamp_seconds", "When the last backup of the host finished (Unix time).",
		func(st *status.HostState) (float64, bool) {
			if st.LastRun == nil {
				return 0, false
			}
			return unix(st.LastRun), true
		}},
	{"haul_backup_last_run_success", "1 if the last backup of the host wrote a snapshot, else 0.",
		func(st *status.HostState) (float64, bool) {
			if st.LastRun == nil {
				return 0, false
			}
			if st.LastRun.OK {
				return 1, true
			}
			return 0, true
		}},
	{"haul_backup_last_success_timestamp_seconds", "When the last successful backup of the host finished (Unix time).",
		lastSuccess(unix)},
	{"haul_backup_last_success_duration_seconds", "How long the last successful backup of the host took.",
		lastSuccess(func(r *status.Run) float64 { return r.DurationMS / 1000 })},
	{"haul_backup_last_success_freeze_seconds", "How long the host's services were quiesced in the last successful backup.",
		lastSuccess(func(r *status.Run) float64 { return r.FreezeMS / 1000 })},
	{"haul_backup_last_success_files", "Files in the last successful snapshot of the host.",
		lastSuccess(func(r *status.Run) float64 { return float64(r.Files) })},
	{"haul_backup_last_success_bytes", "Bytes of data in the last successful snapshot of the host.",
		lastSuccess(func(r *status.Run) float64 { return float64(r.Bytes) })},
	{"haul_backup_last_success_wire_bytes", "Bytes that crossed the transport in the last successful backup of the host.",
		lastSuccess(func(r *status.Run) float64 { return float64(r.WireBytes) })},
	{"haul_backup_last_success_added_bytes", "Bytes (packed) the repository grew by in the last successful backup of the host.",
		lastSuccess(func(r *status.Run) float64 { return float64(r.BytesAdded) })},
	{"haul_drill_last_run_timestamp_seconds", "When the last restore drill of the host finished (Unix time).",
		func(st *status.HostState) (float64, bool) {
			if st.LastDrill == nil {
				return 0, false
			}
			return float64(st.LastDrill.Finished.UnixMilli()) / 1000, true
		}},
	{"haul_drill_last_run_success", "1 if the last restore drill of the host found nothing wrong, else 0.",
		func(st *status.HostState) (float64, bool) {
			if st.LastDrill == nil {
				return 0, false
			}
			if st.LastDrill.OK {
				return 1, true
			}
			return 0, true
		}},
	{"haul_drill_last_success_timestamp_seconds", "When the last good restore drill of the host finished (Unix time).",
		func(st *status.HostState) (float64, bool) {
			if st.LastGoodDrill == nil {
				return 0, false
			}
			return float64(st.LastGoodDrill.Finished.UnixMilli()) / 1000, true
		}},
}

func unix(r *status.Run) float64 { return float64(r.Finished.UnixMilli()) / 1000 }

// Textfile renders the hosts' states in Prometheus' text format.
func Textfile(states []*status.HostState) []byte {
	sorted := append([]*status.HostState(nil), states...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Host < sorted[j].Host })
	var b strings.Builder
	for _, m := range metrics {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", m.name, m.help, m.name)
		for _, st := range sorted {
			if v, ok := m.value(st); ok {
				fmt.Fprintf(&b, "%s{host=\"%s\"} %s\n", m.name, escapeLabel(st.Host), strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
	}
	return []byte(b.String())
}

// WriteTextfile replaces path (which must end in .prom, in the collector's
// directory) atomically, so node_exporter never reads half a file.
func WriteTextfile(path string, states []*status.HostState) error {
	if err := atomicfile.WriteFile(path, Textfile(states), 0o644); err != nil {
		return fmt.Errorf("write prometheus_textfile %s: %w (does its directory exist and is it writable?)", path, err)
	}
	return nil
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
