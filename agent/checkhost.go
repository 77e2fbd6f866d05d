package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haulproject/haul/agent/quiesce"
	"github.com/haulproject/haul/internal/units"
	"golang.org/x/sys/unix"
)

// HostCheck is one result of CheckHost.
type HostCheck struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail says what was found; for a failure, what to do.
	Detail string `json:"detail"`
}

// CheckHost checks what a first backup with cfg needs on this host: each
// data path exists and is a directory, the Docker socket answers when a
// Docker quiesce is configured and the containers or the compose project
// it names exist, and the state dir's file system has room for the mirror
// (a full copy of the data paths). It never changes anything. The error
// lists the failed checks.
func CheckHost(ctx context.Context, cfg *Config) ([]HostCheck, error) {
	var checks []HostCheck
	add := func(name string, ok bool, format string, args ...any) {
		checks = append(checks, HostCheck{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}

	var dataBytes int64
	sized := true
	for _, p := range cfg.DataPaths {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			add("data path "+p, false, "%s does not exist: create it, or fix data_paths (Pangolin's installer keeps its data in config/ beside docker-compose.yml, for example /opt/pangolin/config or /root/config)", p)
			continue
		case err != nil:
			add("data path "+p, false, "%v", err)
			continue
		case !fi.IsDir():
			add("data path "+p, false, "%s is a %s, not a directory: data_paths lists directories", p, kindOf(fi.Mode()))
			continue
		}
		n, files, err := diskUsage(p)
		if err != nil {
			sized = false
			add("data path "+p, false, "%s cannot be read completely: %v", p, err)
			continue
		}
		dataBytes += n
		add("data path "+p, true, "directory, %d entries, %s", files, units.Bytes(n))
	}

	if cfg.Quiesce.Mode != "none" && (len(cfg.Quiesce.Containers) > 0 || cfg.Quiesce.ComposeProject != "") {
		checkDocker(ctx, cfg, add)
	}
	if len(cfg.Quiesce.Units) > 0 {
		add("systemd units", true, "%s (not checked here: `systemctl status %s`)", strings.Join(cfg.Quiesce.Units, ", "), strings.Join(cfg.Quiesce.Units, " "))
	}

	// The mirror is a full copy of the data paths; the chunk cache and the
	// markers are small beside it. Measured on the state dir's file system
	// (its nearest existing parent, if it is not made yet).
	dir := cfg.StateDir
	for {
		if _, err := os.Stat(dir); err == nil || dir == "/" {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		add("state dir "+cfg.StateDir, false, "statfs %s: %v", dir, err)
	} else {
		free := int64(st.Bavail) * int64(st.Bsize)
		if os.Geteuid() == 0 {
			free = int64(st.Bfree) * int64(st.Bsize)
		}
		// What the mirror already holds is not needed again.
		have, _, _ := diskUsage(cfg.MirrorDir())
		need := max(dataBytes-have, 0)
		switch {
		case !sized:
			add("state dir "+cfg.StateDir, free > 0, "%s free on the file system of %s; the mirror's size is unknown (a data path could not be read)", units.Bytes(free), dir)
		case need > free:
			add("state dir "+cfg.StateDir, false, "the mirror needs %s (a copy of the data paths) on the file system of %s and %s is free: free space, grow the disk, or move state_dir", units.Bytes(need), dir, units.Bytes(free))
		default:
			add("state dir "+cfg.StateDir, true, "the mirror needs %s (a copy of the data paths, %s in it now); %s free on the file system of %s", units.Bytes(need), units.Bytes(have), units.Bytes(free), dir)
		}
	}

	var failed []string
	for _, c := range checks {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Detail)
		}
	}
	if len(failed) > 0 {
		return checks, fmt.Errorf("%s is not ready for a first backup:\n  %s", cfg.Host, strings.Join(failed, "\n  "))
	}
	return checks, nil
}

func checkDocker(ctx context.Context, cfg *Config, add func(string, bool, string, ...any)) {
	host := dockerHost(cfg)
	d, err := quiesce.NewDocker(host)
	if err != nil {
		add("docker", false, "%v", err)
		return
	}
	timeout := min(cfg.Quiesce.Timeout.Or(10*time.Second), 10*time.Second)
	if err := d.Ping(ctx, timeout); err != nil {
		add("docker "+host, false, "the Docker socket does not answer (%v): is dockerd running (`systemctl status docker`), and is quiesce.docker_host right?", err)
		return
	}
	add("docker "+host, true, "answers")
	for _, name := range cfg.Quiesce.Containers {
		c, err := d.Inspect(ctx, name, timeout)
		switch {
		case errors.Is(err, quiesce.ErrContainerNotFound):
			add("container "+name, false, "no container %s on %s: `docker ps -a` lists them; fix quiesce.containers", name, host)
		case err != nil:
			add("container "+name, false, "%v", err)
		default:
			add("container "+name, true, "exists (%s)", c.State.Status)
		}
	}
	if p := cfg.Quiesce.ComposeProject; p != "" {
		cs, err := d.ComposeProject(ctx, p, timeout)
		switch {
		case err != nil:
			add("compose project "+p, false, "%v", err)
		case len(cs) == 0:
			add("compose project "+p, false, "no container on %s carries the label com.docker.compose.project=%s: the installer's project is named in its docker-compose.yml (`name:`, \"pangolin\"); `docker compose ls -a` lists the projects; fix quiesce.compose_project", host, p)
		default:
			names := make([]string, len(cs))
			for i, c := range cs {
				names[i] = strings.TrimPrefix(c.Name, "/")
			}
			add("compose project "+p, true, "containers %s", strings.Join(names, ", "))
		}
	}
}

// diskUsage is the space the tree at dir takes (allocated blocks, each
// hard-linked inode once) and its number of entries; 0 if dir is missing.
func diskUsage(dir string) (int64, int64, error) {
	var total, n int64
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return fs.SkipAll
			}
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n++
		if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			k := [2]uint64{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, max(n-1, 0), err
}

func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "file"
	}
	return m.Type().String()
}
