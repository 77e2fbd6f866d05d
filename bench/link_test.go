package bench

import (
	"testing"
	"time"
)

// TestLinkShapes builds a 20 Mbit/s, 40 ms link in a namespace of its own
// and checks that it is no faster than that: a round trip takes at least
// the RTT, and 4 MiB take at least their time at the rate. (Bounds the link
// cannot beat however idle the machine, so load cannot fail the test.)
func TestLinkShapes(t *testing.T) {
	l := Link{Rate: 20_000_000, RTT: 40 * time.Millisecond}
	lc, err := MeasureLink(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: measured %+v", l, lc)
	if lc.RTT < l.RTT {
		t.Errorf("round trip %v, want at least %v", lc.RTT, l.RTT)
	}
	// tbf's burst lets a little through at line rate: allow 10%.
	for dir, mbit := range map[string]float64{"up": lc.UpMbit, "down": lc.DownMbit} {
		if mbit > 22 || mbit <= 0 {
			t.Errorf("%s: %.1f Mbit/s through a 20 Mbit/s link", dir, mbit)
		}
	}
}

func TestParseLink(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Link
		ok   bool
	}{
		{"lo", Link{}, true},
		{"20M-40ms", Link{Rate: 20_000_000, RTT: 40 * time.Millisecond}, true},
		{"100M-20ms", Link{Rate: 100_000_000, RTT: 20 * time.Millisecond}, true},
		{"0M-100ms", Link{RTT: 100 * time.Millisecond}, true},
		{"20-40ms", Link{}, false},
		{"20M", Link{}, false},
		{"20M-forever", Link{}, false},
	} {
		got, err := ParseLink(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseLink(%q) = %+v, %v", c.in, got, err)
		}
		if c.ok && c.in != "0M-100ms" && got.Name() != c.in {
			t.Errorf("%+v.Name() = %q, want %q", got, got.Name(), c.in)
		}
	}
}
