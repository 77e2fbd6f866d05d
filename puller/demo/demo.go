// Package demo runs the whole backup path locally on generated data:
// `haul demo`.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haulproject/haul/internal/treecmp"
	"github.com/haulproject/haul/internal/units"
	"github.com/haulproject/haul/internal/workload"
	"github.com/haulproject/haul/puller/backup"
	"github.com/haulproject/haul/puller/config"
	"github.com/haulproject/haul/puller/pull"
	"github.com/haulproject/haul/puller/repo"
	"github.com/haulproject/haul/puller/restore"
)

func findAgent(flag string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "haul-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("haul-agent")
	if err != nil {
		return "", fmt.Errorf("haul-agent not found next to haul or on $PATH: build both with `go build -o bin/ ./...` or pass --agent")
	}
	return filepath.Abs(p)
}

// Options say where the demo works.
type Options struct {
	Dir     string    // work here and keep it; "" is a temporary dir, removed after
	Agent   string    // haul-agent binary; "" looks next to the running binary, then $PATH
	SizeMiB int64     // size of the generated data dir
	Out     io.Writer // the demo's narration
}

// Run makes a Pangolin-like data dir (SQLite database, acme.json at 0600,
// config.yml, a WireGuard key, logs), runs haul-agent on it through the
// exec transport, takes a backup, changes a little, takes two more,
// restores the latest and verifies it against the data.
func Run(ctx context.Context, opts Options) error {
	out := opts.Out
	agentBin, err := findAgent(opts.Agent)
	if err != nil {
		return err
	}
	ws := opts.Dir
	if ws == "" {
		ws, err = os.MkdirTemp("", "haul-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(ws)
	} else if err := os.MkdirAll(ws, 0o700); err != nil {
		return err
	}
	ws, _ = filepath.Abs(ws)
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }

	// The "VPS": a data dir and an agent config.
	data := filepath.Join(ws, "vps", "srv", "pangolin", "config")
	step("generating a %d MiB Pangolin-like data dir in %s", opts.SizeMiB, filepath.Dir(data))
	if _, err := os.Stat(data); err == nil {
		return fmt.Errorf("%s exists: use an empty --dir", data)
	}
	st, err := workload.Generate(filepath.Dir(data), workload.Options{TargetSize: opts.SizeMiB << 20, Seed: 1})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "    %d files, %s (database %s)\n", st.Files, units.Bytes(st.Bytes), units.Bytes(st.DBBytes))
	agentCfg := filepath.Join(ws, "vps", "haul-agent.json")
	if err := writeJSON(agentCfg, map[string]any{
		"host":       "demo-vps",
		"data_paths": []string{data},
		"state_dir":  filepath.Join(ws, "vps", "state"),
		"quiesce":    map[string]any{"mode": "none"},
	}); err != nil {
		return err
	}

	// The "NAS": a repository, its password, a haul config.
	nas := filepath.Join(ws, "nas")
	if err := os.MkdirAll(nas, 0o700); err != nil {
		return err
	}
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	if err := os.WriteFile(filepath.Join(nas, "password"), []byte(hex.EncodeToString(pw)+"\n"), 0o600); err != nil {
		return err
	}
	cfgPath := filepath.Join(nas, "haul.toml")
	cfgText := fmt.Sprintf("repository = %q\npassword_file = %q\ncache_dir = %q\n\n[[hosts]]\nname = \"demo-vps\"\ncommand = [%q, \"serve\", \"--config\", %q]\n",
		filepath.Join(nas, "repo"), filepath.Join(nas, "password"), filepath.Join(nas, "cache"), agentBin, agentCfg)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	password, _ := cfg.Password()
	step("creating repository %s", cfg.Repository)
	r, err := repo.Init(ctx, cfg.Repository, password, nil)
	if err != nil {
		return err
	}
	r.Close()

	type row struct {
		name string
		res  *backup.Result
	}
	var rows []row
	pull := func(name string) error {
		step("%s", name)
		r, err := repo.Open(ctx, cfg.Repository, password)
		if err != nil {
			return err
		}
		defer r.Close()
		res, err := backup.Run(ctx, r, pull.Connecter(&cfg.Hosts[0], false), backup.Options{Host: "demo-vps", CacheDir: cfg.CacheDir})
		if err != nil {
			return err
		}
		rows = append(rows, row{name, res})
		return nil
	}
	if err := pull("backup 1: everything is new"); err != nil {
		return err
	}
	step("changing a little: 100 database rows, log lines")
	desc, err := workload.ChangeRows(filepath.Dir(data), 100, 2)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "    %s\n", desc)
	if err := pull("backup 2: only what changed moves"); err != nil {
		return err
	}
	if err := pull("backup 3: nothing changed"); err != nil {
		return err
	}

	target := filepath.Join(nas, "restore")
	step("restoring the latest snapshot to %s and verifying it", target)
	r, err = repo.Open(ctx, cfg.Repository, password)
	if err != nil {
		return err
	}
	defer r.Close()
	sn, err := r.Find(ctx, "demo-vps", "latest")
	if err != nil {
		return err
	}
	t := time.Now()
	lr, err := restore.Local(ctx, r, sn, target, restore.LocalOptions{})
	if err != nil {
		return err
	}
	restoreTook := time.Since(t)
	diffs, err := treecmp.Compare(data, filepath.Join(target, data), treecmp.Options{Hardlinks: true})
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		return fmt.Errorf("restored tree differs from the data:\n  %s", strings.Join(diffs, "\n  "))
	}

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 2, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tsnapshot\tfiles\tsize\tchunks asked\ton the wire\tadded to repo\tagent re-read\ttook\t")
	for _, rw := range rows {
		res := rw.res
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%d files\t%.2fs\t\n", strings.SplitN(rw.name, ":", 2)[0], res.SnapshotID[:8], res.Files,
			units.Bytes(res.Bytes), res.ChunksWanted, units.Bytes(res.Wire.BytesIn+res.Wire.BytesOut), units.Bytes(res.BytesAdded),
			res.Manifest.FilesRead, res.DurationMS/1000)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nrestore: %d files in %.2fs, equal to the data (content, mode, mtime, links)\n", lr.Files, restoreTook.Seconds())
	if opts.Dir != "" {
		fmt.Fprintf(out, "\nkept in %s. Look with the restic CLI:\n  restic -r %s --password-file %s snapshots\n  haul --config %s snapshots\n",
			ws, cfg.Repository, cfg.PasswordFile, cfgPath)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}
