package backup

import (
	"testing"
	"time"
)

func TestLimitsWithDefaults(t *testing.T) {
	got := Limits{MaxDepth: 7, MaxTreeBytes: 1 << 10, Deadline: time.Minute, MaxEntries: -1}.WithDefaults()
	want := DefaultLimits
	want.MaxDepth, want.MaxTreeBytes, want.Deadline = 7, 1<<10, time.Minute
	if got != want {
		t.Errorf("WithDefaults = %+v, want %+v", got, want)
	}
	if (Limits{}).WithDefaults() != DefaultLimits {
		t.Error("zero Limits do not become DefaultLimits")
	}
}
