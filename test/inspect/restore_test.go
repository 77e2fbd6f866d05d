package inspect_test

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// A partial restore gives exactly the selected files, and the same tree
// `restic restore` gives with the same patterns.
func TestPartialRestoreMatchesRestic(t *testing.T) {
	t.Parallel() // each test has its own sshd, agent and repository
	e := newEnv(t)
	makeTree(t, e.data)
	id := e.backup()
	d := e.data
	rel := func(p string) string { return strings.TrimPrefix(p, "/") } // where a path lands below --target

	cases := []struct {
		name  string
		args  []string
		files []string // the regular files the restore must hold, below d
		links []string // and the symlinks
	}{
		{"one file", []string{"--include", d + "/config/key"}, []string{"config/key"}, nil},
		{"includes", []string{"--include", d + "/config/letsencrypt", "--include", "*.yml"},
			[]string{"config/config.yml", "config/letsencrypt/acme.json", "config/traefik/dynamic_config.yml", "config/traefik/traefik_config.yml"}, nil},
		{"case-insensitive include", []string{"--iinclude", "*/TRAEFIK/*_CONFIG.YML"},
			[]string{"config/traefik/dynamic_config.yml", "config/traefik/traefik_config.yml"}, nil},
		{"excludes", []string{"--exclude", d + "/config/db", "--exclude", "*.log", "--exclude", "caf*"},
			[]string{"config/config.yml", "config/key", "config/key.hardlink", "config/letsencrypt/acme.json", "config/traefik/dynamic_config.yml", "config/traefik/traefik_config.yml"},
			[]string{"config-link", "dotdot-link", "etc-link", "hostname-link"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mine, theirs := t.TempDir(), t.TempDir()
			e.haul(append([]string{"restore", "--host", "vps", "--target", mine}, c.args...)...)
			e.restic(append([]string{"restore", id, "--target", theirs}, c.args...)...)

			got := readTree(t, mine)
			var files, links []string
			for p, en := range got {
				switch {
				case en.Mode&os.ModeSymlink != 0:
					links = append(links, strings.TrimPrefix(p, rel(d)+"/"))
				case en.Mode.IsRegular():
					files = append(files, strings.TrimPrefix(p, rel(d)+"/"))
					src, err := os.ReadFile(filepath.Join("/", p))
					must(t, err)
					if string(src) != en.Content {
						t.Errorf("%s differs from the source", p)
					}
				case !en.Mode.IsDir():
					t.Errorf("%s (%v) was not selected", p, en.Mode)
				}
			}
			sort.Strings(files)
			sort.Strings(links)
			if !reflect.DeepEqual(files, c.files) || !reflect.DeepEqual(links, c.links) {
				t.Errorf("restored files %q and links %q, want %q and %q", files, links, c.files, c.links)
			}
			if want := readTree(t, theirs); !reflect.DeepEqual(got, want) {
				t.Errorf("haul's tree differs from restic's:\nhaul:   %v\nrestic: %v", got, want)
			}
		})
	}

	// Onto an agent, a selection would replace the data path with part of
	// it: refused before anything is sent.
	_, stderr, code := e.haulCode("restore", "--host", "vps", "--include", d+"/config/key")
	if code != 2 || !strings.Contains(stderr, "--target") {
		t.Errorf("restore onto the agent with --include: exit %d, %s", code, stderr)
	}
	_, stderr, code = e.haulCode("restore", "--host", "vps", "--target", t.TempDir(), "--include", "*.yml", "--exclude", "*.log")
	if code != 2 || !strings.Contains(stderr, "mutually exclusive") {
		t.Errorf("--include with --exclude: exit %d, %s", code, stderr)
	}
}
