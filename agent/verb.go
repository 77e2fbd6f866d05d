package agent

import (
	"fmt"
	"path"
	"strings"
)

// Verbs the agent serves. They come from SSH_ORIGINAL_COMMAND, which the
// client chooses: the agent matches it against this fixed list and never
// hands it to a shell.
const (
	VerbBackup  = "backup"
	VerbRestore = "restore"
	VerbSFTP    = "sftp"
	VerbVersion = "version"
)

// ParseVerb maps SSH_ORIGINAL_COMMAND to a verb. Accepted: "backup",
// "restore", "version", each optionally preceded by "haul-agent", and the
// names OpenSSH uses for the sftp subsystem. Anything else is refused.
func ParseVerb(orig string) (string, error) {
	if orig == "" {
		return "", fmt.Errorf("no command given: this key runs only haul-agent (backup, restore, version, sftp); interactive shells are refused")
	}
	if strings.ContainsAny(orig, "\x00\n\r\t") {
		return "", fmt.Errorf("command %q refused: control characters", orig)
	}
	f := strings.Split(orig, " ")
	if len(f) == 1 {
		switch {
		case f[0] == "internal-sftp", path.Base(f[0]) == "sftp-server":
			return VerbSFTP, nil
		}
	}
	if len(f) == 2 && (f[0] == "haul-agent" || path.Base(f[0]) == "haul-agent") {
		f = f[1:]
	}
	if len(f) == 1 {
		switch f[0] {
		case VerbBackup, VerbRestore, VerbVersion:
			return f[0], nil
		}
	}
	return "", fmt.Errorf("command %q refused: this key runs only haul-agent verbs (backup, restore, version, sftp)", orig)
}
