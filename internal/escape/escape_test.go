package escape

import "testing"

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, str, text string }{
		{"acme.json", "acme.json", "acme.json"},
		{"Größe 東京 ünïcödé", "Größe 東京 ünïcödé", "Größe 東京 ünïcödé"},
		{"back\\slash and 'quotes' \"", "back\\slash and 'quotes' \"", "back\\slash and 'quotes' \""},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, `\x1b[31mred\x1b[0m`},
		{"\x1b]52;c;cGF5bG9hZA==\a", `\x1b]52;c;cGF5bG9hZA==\x07`, `\x1b]52;c;cGF5bG9hZA==\x07`},
		{"line\nfake row\r", `line\x0afake row\x0d`, "line\nfake row\\x0d"},
		{"tab\there", `tab\x09here`, "tab\there"},
		{"csi \u009b2J", `csi \x9b2J`, `csi \x9b2J`},
		{"raw \x9b byte", `raw \x9b byte`, `raw \x9b byte`},
		{"caf\xe9.txt", "caf\xe9.txt", "caf\xe9.txt"}, // Latin-1: as restic prints it
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"evil\u202etxt.exe", `evil\u202etxt.exe`, `evil\u202etxt.exe`},
		{"nul\x00", `nul\x00`, `nul\x00`},
	} {
		if got := String(tc.in); got != tc.str {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.str)
		}
		if got := Text(tc.in); got != tc.text {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.text)
		}
	}
}

func TestCleanStringIsNotCopied(t *testing.T) {
	s := "/srv/pangolin/config/db/db.sqlite"
	if n := testing.AllocsPerRun(100, func() { _ = String(s) }); n != 0 {
		t.Fatalf("String allocated %v times for a clean string", n)
	}
}
