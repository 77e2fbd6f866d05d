package runlog

import "golang.org/x/sys/unix"

// isTerminal asks for the terminal attributes, as golang.org/x/term does.
func isTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
