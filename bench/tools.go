package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Tool is one backup program as its users would run it against the VPS.
type Tool struct {
	Name string // as in the tables: "haul", "rsync", "rsync -z", "restic", "borg"
	// Side is where the client runs: "nas" for pull, "vps" for push.
	Side string
	// How says in a few words how the tool was run, for the doc.
	How string

	init   func(ctx context.Context, e *Env) error
	backup func(e *Env, step, prev string) *exec.Cmd
}

// Tool names.
const (
	ToolHaul   = "haul"
	ToolRsync  = "rsync"
	ToolRsyncZ = "rsync -z"
	ToolRestic = "restic"
	ToolBorg   = "borg"
)

// AllTools are the peers in table order.
var AllTools = []string{ToolHaul, ToolRsync, ToolRsyncZ, ToolRestic, ToolBorg}

// LookupTool returns the tool called name.
func LookupTool(name string) (Tool, error) {
	switch name {
	case ToolHaul:
		return Tool{
			Name: ToolHaul, Side: "nas",
			How: "pull: `haul init --create-password`, then `haul backup --json` on the NAS; `haul-agent serve` is the forced command on the VPS (quiesce mode none)",
			init: func(ctx context.Context, e *Env) error {
				_, err := run(ctx, e.haulCmd("init", "--create-password"))
				return err
			},
			backup: func(e *Env, _, _ string) *exec.Cmd { return e.haulCmd("backup", "--json") },
		}, nil
	case ToolRsync, ToolRsyncZ:
		z := name == ToolRsyncZ
		dir := "rsync"
		how := "pull, rsnapshot's way: `rsync -a --delete --numeric-ids --link-dest=<previous> -e ssh` on the NAS into a new directory per run"
		if z {
			dir = "rsync-z"
			how = "as rsync, plus `-z` (rsync 3.2+ negotiates zstd)"
		}
		return Tool{
			Name: name, Side: "nas", How: how,
			init: func(_ context.Context, e *Env) error { return os.MkdirAll(filepath.Join(e.NAS, dir), 0o700) },
			backup: func(e *Env, step, prev string) *exec.Cmd {
				args := []string{"-a", "--delete", "--numeric-ids"}
				if z {
					args = append(args, "-z")
				}
				if prev != "" {
					args = append(args, "--link-dest="+filepath.Join(e.NAS, dir, prev))
				}
				args = append(args, "-e", strings.Join(e.sshCommand(keyRsync, true), " "),
					e.User+"@127.0.0.1:"+e.Data+"/", filepath.Join(e.NAS, dir, step)+"/")
				cmd := exec.Command(e.Rsync, args...)
				cmd.Env = baseEnv()
				return cmd
			},
		}, nil
	case ToolRestic:
		return Tool{
			Name: ToolRestic, Side: "vps",
			How:  "push: `restic backup` on the VPS to an sftp repository on the NAS (sftp-server as the forced command; restic's cache on the VPS)",
			init: func(ctx context.Context, e *Env) error { _, err := run(ctx, e.resticCmd("init")); return err },
			backup: func(e *Env, _, _ string) *exec.Cmd {
				return e.resticCmd("backup", "--host", "vps", "--json", "--quiet", e.Data)
			},
		}, nil
	case ToolBorg:
		return Tool{
			Name: ToolBorg, Side: "vps",
			How: "push: `borg create` on the VPS over SSH to `borg serve --restrict-to-path` (the forced command) on the NAS; repokey encryption, default lz4",
			init: func(ctx context.Context, e *Env) error {
				_, err := run(ctx, e.borgCmd("init", "-e", "repokey", e.borgRepo()))
				return err
			},
			backup: func(e *Env, step, _ string) *exec.Cmd { return e.borgCmd("create", e.borgRepo()+"::"+step, e.Data) },
		}, nil
	}
	return Tool{}, fmt.Errorf("bench: unknown tool %q (known: %s)", name, strings.Join(AllTools, ", "))
}

func (e *Env) haulCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(e.Bins, "haul"), append([]string{"--config", e.haulCfg}, args...)...)
	cmd.Env = baseEnv()
	return cmd
}

func (e *Env) resticCmd(args ...string) *exec.Cmd {
	sftp := strings.Join(append(e.sshCommand(keyRestic, true), e.User+"@127.0.0.1", "-s", "sftp"), " ")
	cmd := exec.Command(e.Restic, append([]string{"-o", "sftp.command=" + sftp}, args...)...)
	cmd.Env = append(baseEnv(),
		"RESTIC_REPOSITORY=sftp:nas:"+filepath.Join(e.NAS, "restic-repo"),
		"RESTIC_PASSWORD_FILE="+e.pwFile,
		"RESTIC_CACHE_DIR="+filepath.Join(e.VPS, "restic-cache"),
		"RESTIC_PROGRESS_FPS=0.1",
	)
	return cmd
}

func (e *Env) borgRepo() string {
	return fmt.Sprintf("ssh://%s@127.0.0.1:%d%s", e.User, e.Fwd.Port(), filepath.Join(e.NAS, "borg"))
}

func (e *Env) borgCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(e.Borg, args...)
	cmd.Env = append(baseEnv(),
		"BORG_RSH="+strings.Join(e.sshCommand(keyBorg, false), " "),
		"BORG_PASSPHRASE=correct horse battery staple",
		"BORG_BASE_DIR="+filepath.Join(e.VPS, "borg-home"),
		"BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
	)
	return cmd
}

// HaulResult is the part of `haul backup --json` the bench reports.
type HaulResult struct {
	SnapshotID   string  `json:"snapshot_id"`
	Files        int64   `json:"files"`
	Bytes        int64   `json:"bytes"`
	ChunksWanted int64   `json:"chunks_wanted"`
	ChunkBytes   int64   `json:"chunk_bytes"`
	Deltas       int64   `json:"deltas"`
	Fallbacks    int64   `json:"delta_fallbacks"`
	FreezeMS     float64 `json:"freeze_ms"`
	Wire         struct {
		BytesIn  int64 `json:"bytes_in"`
		BytesOut int64 `json:"bytes_out"`
	} `json:"wire"`
	Freeze struct {
		BytesCopied int64 `json:"bytes_copied"`
		FilesCopied int64 `json:"files_copied"`
	} `json:"freeze"`
	Manifest struct {
		FilesRead int64 `json:"files_read"`
		BytesRead int64 `json:"bytes_read"`
		Same      int64 `json:"same"`
	} `json:"manifest"`
	DurationMS float64            `json:"duration_ms"`
	Phases     map[string]float64 `json:"phases_ms"`
}

func parseHaul(stdout []byte) (*HaulResult, error) {
	var out struct {
		OK    bool `json:"ok"`
		Hosts []struct {
			HaulResult
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal(stdout, &out); err != nil {
		return nil, fmt.Errorf("bench: haul backup --json: %w\n%s", err, tailBytes(stdout, 2048))
	}
	if !out.OK || len(out.Hosts) != 1 {
		return nil, fmt.Errorf("bench: haul backup failed: %s", tailBytes(stdout, 2048))
	}
	h := out.Hosts[0].HaulResult
	return &h, nil
}
