package bench

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Machine describes where the numbers were taken.
type Machine struct {
	NProc    int
	MemTotal int64 // bytes
	Kernel   string
	CPU      string
	Load     [3]float64 // /proc/loadavg when the suite started
}

// ReadMachine describes this machine.
func ReadMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), Load: LoadAvg()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = cstr(u.Sysname[:]) + " " + cstr(u.Release[:]) + " " + cstr(u.Machine[:])
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemTotal = kb << 10
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// LoadAvg reads the 1, 5 and 15 minute load averages.
func LoadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

// Versions are the tools' own version lines.
func (e *Env) Versions() [][2]string {
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return "(" + err.Error() + ")"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return strings.TrimSpace(line)
	}
	ssh := first("ssh", "-V")
	sshd := ""
	if b, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "openssh-server").Output(); err == nil {
		sshd = "openssh-server " + string(b)
	}
	goVersion := first("go", "version")
	source := "built from the working tree at " + first("git", "-C", e.ModuleRoot, "rev-parse", "--short", "HEAD")
	// Only changes to haul's own code make the numbers differ from the commit's.
	if out, _ := exec.Command("git", "-C", e.ModuleRoot, "status", "--porcelain", "--", "agent", "puller", "proto", "internal", "go.mod", "go.sum").Output(); len(out) > 0 {
		source += " plus uncommitted changes to haul's code"
	}
	if d := os.Getenv("HAUL_BIN_DIR"); d != "" {
		source = "prebuilt binaries from HAUL_BIN_DIR=" + d
	}
	return [][2]string{
		{"haul", first(filepath.Join(e.Bins, "haul"), "version") + "; " + source},
		{"haul-agent", first(filepath.Join(e.Bins, "haul-agent"), "--version")},
		{"restic", first(e.Restic, "version")},
		{"rsync", first(e.Rsync, "--version")},
		{"borg", first(e.Borg, "--version")},
		{"ssh", strings.TrimSpace(ssh + " " + sshd)},
		{"go", strings.TrimSpace(regexp.MustCompile(`\s+`).ReplaceAllString(goVersion, " "))},
	}
}
