package agent

import (
	"strings"
	"testing"
)

// TestChunkWorkersConfig: chunk_workers defaults to 1 and takes 1 to 4; any
// other value is refused with the range.
func TestChunkWorkersConfig(t *testing.T) {
	base := `{"data_paths": ["/srv/data"], "state_dir": "/var/lib/haul-agent", "host": "vps"`
	for _, c := range []struct {
		extra string
		want  int
		err   string
	}{
		{"", 1, ""},
		{`, "chunk_workers": 2`, 2, ""},
		{`, "chunk_workers": 4`, 4, ""},
		{`, "chunk_workers": 5`, 0, "want 1 to 4"},
		{`, "chunk_workers": -1`, 0, "want 1 to 4"},
	} {
		cfg, err := ParseConfig([]byte(base+c.extra+"}"), "test.json")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one saying %q", c.extra, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.extra, err)
		}
		if got := cfg.Workers(); got != c.want {
			t.Errorf("%s: %d workers, want %d", c.extra, got, c.want)
		}
	}
}
