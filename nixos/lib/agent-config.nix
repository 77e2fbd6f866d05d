# Renders haul-agent's JSON config (agent/config.go is the schema) and the
# NAS keys' authorized_keys lines from the values of services.haul-agent.
#
# It uses builtins only, never nixpkgs or lib, so that CI can evaluate it
# with `nix-instantiate --eval --strict --json` and hand the result to
# `haul-agent check-config` without nixpkgs or a network. The NixOS module
# (../modules/haul-agent.nix) is a thin wrapper around it.
#
# Example:
#   import ./agent-config.nix {
#     agentBin = "/nix/store/...-haul-agent/bin/haul-agent";
#     configPath = "/etc/haul-agent/config.json";
#     dataPaths = [ "/var/lib/pangolin" ];
#     stateDir = "/var/lib/haul-agent";
#     quiesce = { mode = "pause"; composeProject = "pangolin"; };
#     backupKeys = [ "ssh-ed25519 AAAA... nas-backup" ];
#   }
# returns { config; configJSON; authorizedKeys; readyMarker; assertions; failedAssertions; }.
{
  # Absolute path of the haul-agent executable named in the forced command.
  agentBin,
  # Absolute path the rendered config is installed at.
  configPath,
  host ? null,
  dataPaths,
  stateDir,
  # { mode, containers, composeProject, units, dockerHost, timeout, guardTimeout }
  quiesce ? { },
  readyMarker ? null,
  allowInplaceRestore ? false,
  allowSpecialFiles ? false,
  keepPrevious ? null,
  lockTimeout ? null,
  chunkWorkers ? null,
  backupKeys ? [ ],
  restoreKeys ? [ ],
}:
let
  inherit (builtins)
    all
    concatLists
    concatStringsSep
    elem
    filter
    genList
    isInt
    isString
    length
    match
    split
    stringLength
    substring
    ;

  q = {
    mode = "none";
    containers = [ ];
    composeProject = null;
    units = [ ];
    dockerHost = null;
    timeout = null;
    guardTimeout = null;
  } // quiesce;

  hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;
  hasLineBreak = s: length (split "[\n\r]" s) > 1;
  isAbs = p: isString p && hasPrefix "/" p;
  # The agent cleans paths itself; requiring them clean here keeps the
  # overlap checks below simple and the rendered file identical to what the
  # agent uses.
  isClean = p: isAbs p && p != "/" && match ".*(//|/\\.\\.?/|/\\.\\.?$|/$).*" p == null;
  inside = p: dir: p == dir || hasPrefix (dir + "/") p;
  # sshd hands the forced command to the login user's shell, so its parts
  # must not contain anything a shell would interpret.
  shellSafePath = p: isString p && match "/[A-Za-z0-9._+@/-]+" p != null;
  # Go's time.ParseDuration syntax, without sign or µs.
  isDuration = d: d == null || (isString d && match "(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|ms|s|m|h))+" d != null);
  optional = cond: x: if cond then [ x ] else [ ];
  nonEmpty = x: x != null && x != [ ] && x != "";

  marker = if readyMarker == null then stateDir + "/ready" else readyMarker;

  # Every unordered pair of data paths that overlaps (equal, or one inside
  # the other).
  at = builtins.elemAt dataPaths;
  n = length dataPaths;
  overlapping = filter (p: p != null) (concatLists (genList (i: genList (j:
    if i < j && (inside (at i) (at j) || inside (at j) (at i)) then { a = at i; b = at j; } else null
  ) n) n));

  # A public key line as ssh-keygen writes it: type, base64 blob, optional
  # comment. Options of its own (from=, command=) are refused: the module
  # writes the options, and a second set would be a configuration error.
  keyParts = k: match "(ssh-[a-z0-9-]+|ecdsa-sha2-nistp[0-9]+|sk-[a-z0-9@.-]+) ([A-Za-z0-9+/]+=*)( .*)?" k;
  validKey = k: isString k && !hasLineBreak k && keyParts k != null;
  blob = k: builtins.elemAt (keyParts k) 1;
  badKeys = filter (k: !validKey k) (backupKeys ++ restoreKeys);
  backupBlobs = map blob (filter validKey backupKeys);
  bothKinds = filter (k: elem (blob k) backupBlobs) (filter validKey restoreKeys);

  serve = "${agentBin} serve --config ${configPath}";
  line = command: key: ''command="${command}",restrict ${key}'';

  config =
    {
      data_paths = dataPaths;
      state_dir = stateDir;
      quiesce =
        { inherit (q) mode; }
        // (if q.containers != [ ] then { inherit (q) containers; } else { })
        // (if nonEmpty q.composeProject then { compose_project = q.composeProject; } else { })
        // (if q.units != [ ] then { inherit (q) units; } else { })
        // (if nonEmpty q.dockerHost then { docker_host = q.dockerHost; } else { })
        // (if nonEmpty q.timeout then { inherit (q) timeout; } else { })
        // (if nonEmpty q.guardTimeout then { guard_timeout = q.guardTimeout; } else { });
      # Always written, so the agent and the units gated on it (the Pangolin
      # stack) agree on one path.
      ready_marker = marker;
      allow_inplace_restore = allowInplaceRestore;
      allow_special_files = allowSpecialFiles;
    }
    // (if nonEmpty host then { inherit host; } else { })
    // (if keepPrevious != null then { keep_previous = keepPrevious; } else { })
    // (if nonEmpty lockTimeout then { lock_timeout = lockTimeout; } else { })
    // (if chunkWorkers != null then { chunk_workers = chunkWorkers; } else { });

  assertions = [
    {
      assertion = dataPaths != [ ];
      message = "services.haul-agent.dataPaths is empty: list the absolute directories the NAS should back up, for example [ \"/var/lib/pangolin\" ].";
    }
    {
      assertion = all isClean dataPaths;
      message = "services.haul-agent.dataPaths must hold absolute, clean directory paths other than / (no trailing slash, no . or .. parts); got ${builtins.toJSON (filter (p: !isClean p) dataPaths)}.";
    }
    {
      assertion = overlapping == [ ];
      message = "services.haul-agent.dataPaths lists overlapping directories (${concatStringsSep ", " (map (p: "${p.a} and ${p.b}") overlapping)}): list each directory once, and not also one of its parents.";
    }
    {
      assertion = isClean stateDir;
      message = "services.haul-agent.stateDir must be an absolute, clean path other than /; got ${builtins.toJSON stateDir}.";
    }
    {
      assertion = all (p: !(inside stateDir p) && !(inside p stateDir)) dataPaths;
      message = "services.haul-agent.stateDir ${stateDir} overlaps the data paths: the state dir holds the agent's mirror of the data, so it must live outside them (and they outside it).";
    }
    {
      assertion = elem q.mode [ "none" "pause" "stop" ];
      message = "services.haul-agent.quiesce.mode is ${builtins.toJSON q.mode}; it must be \"none\", \"pause\" or \"stop\".";
    }
    {
      assertion = q.mode == "none" || q.containers != [ ] || nonEmpty q.composeProject || q.units != [ ];
      message = "services.haul-agent.quiesce.mode is \"${q.mode}\" but there is nothing to quiesce: set quiesce.containers, quiesce.composeProject or quiesce.units, or set the mode to \"none\".";
    }
    {
      assertion = !(q.mode == "pause" && q.units != [ ]);
      message = "services.haul-agent.quiesce.mode \"pause\" cannot pause systemd units (${concatStringsSep ", " q.units}): use mode \"stop\" for units, or list the Docker containers instead.";
    }
    {
      assertion = q.dockerHost == null || (isString q.dockerHost && match "unix:///.+" q.dockerHost != null);
      message = "services.haul-agent.quiesce.dockerHost must be a unix socket URL such as \"unix:///run/docker.sock\"; got ${builtins.toJSON q.dockerHost}.";
    }
    {
      assertion = all isDuration [ q.timeout q.guardTimeout lockTimeout ];
      message = "services.haul-agent durations (quiesce.timeout, quiesce.guardTimeout, lockTimeout) must be Go durations such as \"30s\" or \"10m\"; got ${builtins.toJSON [ q.timeout q.guardTimeout lockTimeout ]}.";
    }
    {
      assertion = isClean marker;
      message = "services.haul-agent.readyMarker must be an absolute, clean path; got ${builtins.toJSON marker}.";
    }
    {
      assertion = all (p: !(inside marker p)) dataPaths;
      message = "services.haul-agent.readyMarker ${marker} is inside a data path: a restore replaces the data directories and would remove or bring back the marker; keep it in the state dir.";
    }
    {
      assertion = keepPrevious == null || (isInt keepPrevious && keepPrevious >= 0);
      message = "services.haul-agent.keepPrevious must be 0 or more; got ${builtins.toJSON keepPrevious}.";
    }
    {
      assertion = host == null || (isString host && host != "" && !hasLineBreak host);
      message = "services.haul-agent.host must be a non-empty name on one line, or null for the machine's hostname.";
    }
    {
      assertion = shellSafePath agentBin && shellSafePath configPath;
      message = "haul-agent's executable (${agentBin}) and config path (${configPath}) must be absolute paths of letters, digits and ._+@-/ only: sshd hands the forced command to the user's shell.";
    }
    {
      assertion = badKeys == [ ];
      message = "services.haul-agent.backupKeys/restoreKeys must each be one public key as ssh-keygen prints it (\"ssh-ed25519 AAAA... comment\"), without options of their own and on one line; these are not: ${builtins.toJSON badKeys}.";
    }
    {
      assertion = bothKinds == [ ];
      message = "a key is listed in both services.haul-agent.backupKeys and restoreKeys (${concatStringsSep ", " bothKinds}); sshd uses the first matching line, so it would be unclear what the key may do: give restore its own key.";
    }
  ];
in
{
  inherit config assertions;
  readyMarker = marker;
  configJSON = builtins.toJSON config;
  # Backup keys first: they can never restore, whatever comes later.
  authorizedKeys = map (line serve) backupKeys ++ map (line "${serve} --allow-restore") restoreKeys;
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) assertions);
}
