// Package escape makes strings a remote peer chose safe to print on a
// terminal or in a log: control characters (ESC, CR, backspace, BEL, the
// C1 controls such as CSI and OSC), invalid UTF-8, and Unicode characters
// that reorder or break lines are shown as \x1b-style escapes, so an agent's
// error text, stderr or file names can neither drive the terminal (colours,
// cursor moves, OSC 52 clipboard writes) nor fake output lines.
//
// Ordinary printable text, any script, passes unchanged byte for byte, so
// listings of ordinary names stay identical to restic's.
package escape

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// String escapes every control character, newlines and tabs included: for
// one-line fields (names, paths, versions, error codes).
func String(s string) string { return escape(s, false) }

// Text escapes like String but keeps newlines and tabs: for multi-line
// text such as an agent's stderr tail or error message.
func Text(s string) string { return escape(s, true) }

// Quote is String in double quotes, for a name inside a sentence.
func Quote(s string) string { return `"` + String(s) + `"` }

// Strings escapes each of ss (a new slice; ss is unchanged).
func Strings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = String(s)
	}
	return out
}

// Bytes is String for a byte string (names need not be UTF-8).
func Bytes(b []byte) string { return String(string(b)) }

func escape(s string, lines bool) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if unsafe(r, n, lines) || badByte(s, i, r, n) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s // nothing to escape: no copy
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case badByte(s, i, r, n):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafe(r, n, lines):
			b.WriteString(s[i : i+n])
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

// badByte reports an invalid UTF-8 byte in 0x80-0x9f: an 8-bit terminal
// takes these as C1 controls (0x9b is CSI). Other invalid bytes (a Latin-1
// "café") are shown by terminals as replacement characters, and print
// unchanged, as restic prints them.
func badByte(s string, i int, r rune, n int) bool {
	return r == utf8.RuneError && n == 1 && s[i] >= 0x80 && s[i] < 0xa0
}

func unsafe(r rune, n int, lines bool) bool {
	switch {
	case r == utf8.RuneError && n == 1:
		return false // decided by the byte, in escape
	case r == '\n' || r == '\t':
		return !lines
	case r < 0x20 || r == 0x7f:
		return true
	case r >= 0x80 && r < 0xa0: // C1 controls
		return true
	case r == 0x2028 || r == 0x2029: // line and paragraph separators
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true // bidirectional overrides reorder what is shown
	}
	return false
}
