package backup

import (
	"strings"
	"testing"
)

// TestAgentWarningsEscaped: what an agent reports as warnings reaches logs
// and snapshot records bounded and with control characters escaped, so a
// hostile agent (or a file name a container chose) cannot drive the
// operator's terminal. They go through internal/escape, the one escaper.
func TestAgentWarningsEscaped(t *testing.T) {
	in := []string{"\"/srv/data/\x1b]52;c;ZWNobyBoaQ==\x07x\" was replaced", "bad \x9b utf-8 (a raw C1 CSI), real \uFFFD kept", "rtl \u202e override"}
	for i := 0; i < 30; i++ {
		in = append(in, strings.Repeat("w", 5000))
	}
	out := agentWarnings(in)
	if len(out) != 20 {
		t.Fatalf("%d warnings kept, want 20", len(out))
	}
	for _, w := range out {
		if strings.ContainsAny(w, "\x1b\x07\u202e") || len(w) > 1100 {
			t.Fatalf("warning not escaped or bounded: %q", w)
		}
	}
	if !strings.Contains(out[0], `\x1b]52`) || !strings.Contains(out[1], `\x9b`) || !strings.Contains(out[1], "\uFFFD") || !strings.Contains(out[2], `\u202e`) {
		t.Fatalf("escapes lost what they escape: %q", out[:3])
	}
}
