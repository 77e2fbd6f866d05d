# services.haul-agent: the VPS side of haul. sshd starts haul-agent as the
# forced command of the NAS's keys; there is no daemon and no listening
# socket. This module renders the agent's config, writes the keys'
# authorized_keys lines, prepares the state dir, and runs the recover guard.
#
# The config and the key lines are rendered by ../lib/agent-config.nix, a
# pure function that CI evaluates without nixpkgs; this file only maps
# options onto it and onto the system.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkIf
    mkOption
    literalExpression
    types
    ;

  cfg = config.services.haul-agent;

  # The Pangolin compose module (./pangolin-compose.nix) is ours too. When it is enabled the
  # agent defaults to backing up its data and to the quiesce method that
  # matches how it runs: a compose project driven by Docker.
  pangolin = config.services.pangolin-compose or { enable = false; };

  configPath = "/etc/haul-agent/config.json";

  rendered = import ../lib/agent-config.nix {
    agentBin = "${cfg.package}/bin/haul-agent";
    inherit configPath;
    inherit (cfg)
      host
      dataPaths
      stateDir
      readyMarker
      allowInplaceRestore
      allowSpecialFiles
      keepPrevious
      lockTimeout
      chunkWorkers
      backupKeys
      restoreKeys
      ;
    quiesce = {
      inherit (cfg.quiesce)
        mode
        containers
        composeProject
        units
        dockerHost
        timeout
        guardTimeout
        ;
    };
  };

  usesDocker = cfg.quiesce.mode != "none" && (cfg.quiesce.containers != [ ] || cfg.quiesce.composeProject != null);
  agent = "${cfg.package}/bin/haul-agent";
in
{
  options.services.haul-agent = {
    enable = mkEnableOption "haul-agent, the VPS side of haul: the NAS's keys may run it (and only it) over SSH to pull backups and push restores";

    package = mkOption {
      type = types.package;
      description = "The haul-agent package. The flake's nixosModules.haul-agent sets it to the flake's own build.";
      example = literalExpression "inputs.haul.packages.x86_64-linux.haul-agent";
    };

    host = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "vps";
      description = "Name the agent reports to the puller. null uses the machine's hostname. The puller files snapshots under the name in its own config.";
    };

    dataPaths = mkOption {
      type = types.listOf types.str;
      default = lib.optional pangolin.enable pangolin.dataDir;
      defaultText = literalExpression ''lib.optional config.services.pangolin-compose.enable config.services.pangolin-compose.dataDir'';
      example = [ "/var/lib/pangolin" ];
      description = ''
        Absolute directories to back up and restore. Snapshots record them
        as they are on this machine. They must not overlap each other or
        the state dir.
      '';
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/haul-agent";
      description = ''
        The agent's mirror of the data, its chunk cache, lock and freeze
        marker. It holds the same secrets as the data (WireGuard key,
        acme.json), so it is created 0700 for the agent's user and is never
        served except as the read-only mirror view.
      '';
    };

    readyMarker = mkOption {
      type = types.str;
      default = "${cfg.stateDir}/ready";
      defaultText = literalExpression ''"''${config.services.haul-agent.stateDir}/ready"'';
      description = ''
        File the agent writes after a successful restore, and
        `haul-agent mark-ready` writes on a fresh install that has nothing
        to restore. services.pangolin-compose does not start before it exists, so a
        rebuilt VPS never generates a new WireGuard key or registers a
        duplicate exit node before its data is back.
      '';
    };

    quiesce = {
      mode = mkOption {
        type = types.enum [ "none" "pause" "stop" ];
        default = if pangolin.enable then "pause" else "none";
        defaultText = literalExpression ''if config.services.pangolin-compose.enable then "pause" else "none"'';
        description = ''
          How the services writing the data are held still while the agent
          syncs its mirror (the rest of a backup runs from the mirror, with
          the services running).

          - `"pause"` freezes Docker containers (cgroup freezer) for the
            sync only, usually well under a second. The copy is what a
            power cut would leave, which SQLite recovers from by design;
            WireGuard tunnels and TCP connections survive.
          - `"stop"` stops the targets and starts them again in order: a
            clean shutdown, at the cost of seconds of downtime. It is the
            only mode for systemd units.
          - `"none"` copies while the services write: only per-file
            consistent.
        '';
      };

      containers = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "pangolin" "gerbil" "traefik" ];
        description = "Docker container names to quiesce, in start order (they are stopped in reverse).";
      };

      composeProject = mkOption {
        type = types.nullOr types.str;
        default = if pangolin.enable then pangolin.composeProject else null;
        defaultText = literalExpression ''if config.services.pangolin-compose.enable then config.services.pangolin-compose.composeProject else null'';
        example = "pangolin";
        description = ''
          Quiesce every container labelled com.docker.compose.project=NAME.
          This is the method that matches services.pangolin-compose: its stack is a
          compose project whose containers Docker's restart policy keeps,
          so the agent pauses or stops them through the Docker Engine API.
        '';
      };

      units = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "docker-pangolin.service" "docker-gerbil.service" ];
        description = ''
          systemd units to stop, in start order, for containers that systemd
          manages (virtualisation.oci-containers): a `docker stop` would be
          undone by the unit's Restart=. Needs mode "stop".
        '';
      };

      dockerHost = mkOption {
        type = types.str;
        default = "unix:///run/docker.sock";
        description = "Docker Engine API endpoint, as a unix socket URL.";
      };

      timeout = mkOption {
        type = types.str;
        default = "30s";
        description = "Bound on each stop, start, pause or unpause call (a Go duration).";
      };

      guardTimeout = mkOption {
        type = types.str;
        default = "30s";
        description = ''
          If an agent dies inside a freeze, the guard
          (haul-agent-recover.timer) brings the targets back once the freeze
          is this old. Worst case, services are down for about this plus
          services.haul-agent.guardInterval.
        '';
      };
    };

    guardInterval = mkOption {
      type = types.str;
      default = "30s";
      example = "1min";
      description = "How often haul-agent-recover.timer runs `haul-agent recover` (a systemd time span). It also runs once at boot.";
    };

    allowInplaceRestore = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Allow a restore onto a machine that is already marked ready. Off, a
        restore key can only fill a fresh machine, so a stolen restore key
        cannot overwrite a running VPS.
      '';
    };

    allowSpecialFiles = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Make every restore create device nodes and keep the setuid and
        setgid bits of files, as `haul restore --allow-special` asks for
        one restore. Off, a snapshot of a compromised host cannot plant a
        device node or a setuid binary on this one; Pangolin's data needs
        neither.
      '';
    };

    keepPrevious = mkOption {
      type = types.ints.unsigned;
      default = 2;
      description = "How many copies of the data replaced by a restore (*.prev-<time>) to keep.";
    };

    lockTimeout = mkOption {
      type = types.str;
      default = "10m";
      description = "How long a session waits for another one (two pulls at once never double-stop the services).";
    };

    chunkWorkers = mkOption {
      type = types.nullOr (types.ints.between 1 4);
      default = null;
      example = 2;
      description = ''
        How many cores chunk one large changed file (32 MiB or more) in a
        backup. Unset: 1, so that on a 2-vCPU VPS the services keep the
        other core while the agent reads a changed database.
      '';
    };

    backupKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... nas-backup" ];
      description = ''
        Public keys of the NAS that may pull backups. Each is written to
        the user's authorized_keys as
        `command="…/haul-agent serve --config /etc/haul-agent/config.json",restrict <key>`:
        the key runs nothing but the agent, gets no shell, pty or
        forwarding, and cannot restore.
      '';
    };

    restoreKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... nas-restore" ];
      description = ''
        Public keys that may also restore: written like backupKeys, with
        `--allow-restore` added to the forced command. Keep the private
        half offline until a restore or rebuild needs it. A key must not
        be in both lists.
      '';
    };

    user = mkOption {
      type = types.str;
      default = "root";
      example = "haul";
      description = ''
        The account the NAS logs in as; sshd runs the agent as this user.
        It must read every file under dataPaths and, to restore, write them
        and set their owners, which in practice means root. Another name
        creates a system user with a login shell (sshd runs forced
        commands through it); it only works for data that user can read
        and write.
      '';
    };

    dockerAccess = mkOption {
      type = types.bool;
      default = usesDocker;
      defaultText = literalExpression ''config.services.haul-agent.quiesce.mode != "none" && (containers != [ ] || composeProject != null)'';
      description = ''
        Let the agent's user use the Docker Engine API socket to pause,
        stop and start containers (a non-root user is added to the
        "docker" group).

        Access to the Docker socket is root-equivalent: whoever can talk
        to it can start a privileged container with the host's / mounted.
        A dedicated user in the docker group is therefore no safer than
        root if the agent were subverted. What keeps the NAS's key harmless
        is the forced command and `restrict`, not the user.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions =
      map (a: { inherit (a) assertion message; }) rendered.assertions
      ++ [
        {
          assertion = cfg.backupKeys != [ ] || cfg.restoreKeys != [ ];
          message = "services.haul-agent is enabled but backupKeys and restoreKeys are empty: the NAS could not reach the agent. Add the NAS's backup key.";
        }
        {
          assertion = usesDocker -> cfg.dockerAccess;
          message = "services.haul-agent.quiesce names Docker containers but dockerAccess is false: the agent could not pause or stop them. Enable dockerAccess or set quiesce.mode to \"none\".";
        }
        {
          assertion = cfg.dockerAccess -> config.virtualisation.docker.enable;
          message = "services.haul-agent.dockerAccess is true but virtualisation.docker.enable is false: there is no Docker daemon to talk to.";
        }
        {
          assertion = cfg.user == "root" -> config.services.openssh.settings.PermitRootLogin != "no";
          message = "services.haul-agent.user is root but services.openssh.settings.PermitRootLogin is \"no\": sshd would refuse the NAS's keys. Use \"forced-commands-only\" or \"prohibit-password\".";
        }
        {
          assertion = config.services.openssh.enable;
          message = "services.haul-agent needs services.openssh.enable: the NAS reaches the agent only through sshd.";
        }
      ];

    warnings = lib.optional (cfg.quiesce.units != [ ] && cfg.user != "root") ''
      services.haul-agent.quiesce.units lists systemd units but the agent runs as ${cfg.user}: only root (or a polkit rule you add) may stop and start system units, so freezes would fail.
    '';

    environment.etc."haul-agent/config.json".text = rendered.configJSON;
    environment.systemPackages = [ cfg.package ];

    users.users.${cfg.user} =
      {
        openssh.authorizedKeys.keys = rendered.authorizedKeys;
      }
      // lib.optionalAttrs (cfg.user != "root") {
        isSystemUser = true;
        group = cfg.user;
        home = cfg.stateDir;
        # sshd runs a forced command as `$SHELL -c command`; nologin would
        # refuse it. The command line is fixed, so the shell parses nothing
        # the client sends.
        shell = pkgs.bashInteractive;
        extraGroups = lib.optional cfg.dockerAccess "docker";
      };
    users.groups = lib.optionalAttrs (cfg.user != "root") { ${cfg.user} = { }; };

    systemd.tmpfiles.settings."10-haul-agent".${cfg.stateDir}.d = {
      mode = "0700";
      inherit (cfg) user;
      group = if cfg.user == "root" then "root" else cfg.user;
    };

    # The guard: if an agent is killed inside a freeze, nothing else would
    # unpause or restart the services. `recover` does nothing unless a
    # freeze marker older than guardTimeout names a dead agent.
    systemd.services.haul-agent-recover = {
      description = "haul-agent guard: bring back services an interrupted backup left quiesced";
      wantedBy = [ "multi-user.target" ];
      # At boot: after Docker is up (the targets are containers), and before
      # the stacks are started (pangolin-compose.service orders itself after this).
      after = [ "docker.service" "systemd-tmpfiles-setup.service" ];
      wants = lib.optional cfg.dockerAccess "docker.service";
      serviceConfig = {
        Type = "oneshot";
        User = cfg.user;
        ExecStart = "${agent} recover --config ${configPath}";
      };
    };
    systemd.timers.haul-agent-recover = {
      description = "Run the haul-agent guard every ${cfg.guardInterval}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = cfg.guardInterval;
        OnUnitActiveSec = cfg.guardInterval;
        AccuracySec = "1s";
      };
    };
  };
}
