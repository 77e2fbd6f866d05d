# Renders systemd.services/paths/timers to unit files the way nixpkgs does
# (nixos/lib/systemd-lib.nix: serviceToUnit, pathToUnit, timerToUnit and
# attrsToSection): the dependency lists become [Unit] keys, unitConfig
# and X-Restart-Triggers/X-Reload-Triggers go to [Unit], serviceConfig to
# [Service] with NixOS's PATH in Environment=, lists give one line per
# value, booleans are true/false. wantedBy becomes symlinks in nixpkgs
# and is returned here as data.
{ lib, config, pkgs }:
let
  inherit (builtins) attrNames concatStringsSep isBool isList toJSON;
  str = v: if isBool v then (if v then "true" else "false") else toString v;
  section =
    attrs:
    concatStringsSep "" (
      map (
        k:
        let
          v = attrs.${k};
        in
        if isList v then concatStringsSep "" (map (x: "${k}=${str x}\n") v) else "${k}=${str v}\n"
      ) (attrNames attrs)
    );
  deps =
    u:
    lib.filterAttrs (_: v: v != [ ] && v != "") {
      Description = u.description;
      Documentation = concatStringsSep " " u.documentation;
      Requires = concatStringsSep " " u.requires;
      Wants = concatStringsSep " " u.wants;
      Upholds = concatStringsSep " " u.upholds;
      After = concatStringsSep " " u.after;
      Before = concatStringsSep " " u.before;
      BindsTo = concatStringsSep " " u.bindsTo;
      PartOf = concatStringsSep " " u.partOf;
      Conflicts = concatStringsSep " " u.conflicts;
      Requisite = concatStringsSep " " u.requisite;
      OnFailure = concatStringsSep " " u.onFailure;
    }
    // lib.optionalAttrs (u.restartTriggers != [ ]) { X-Restart-Triggers = "${builtins.hashString "sha256" (toJSON u.restartTriggers)}"; }
    // lib.optionalAttrs (u.reloadTriggers != [ ]) { X-Reload-Triggers = "${builtins.hashString "sha256" (toJSON u.reloadTriggers)}"; }
    // u.unitConfig;
  # nixos/modules/system/boot/systemd.nix: every service's path starts
  # with coreutils, findutils, gnugrep, gnused and systemd.
  servicePath = u: [ pkgs.coreutils pkgs.gnugrep pkgs.systemd ] ++ u.path;
  service =
    u:
    {
      text =
        "[Unit]\n"
        + section (deps u)
        + "\n[Service]\n"
        + section (
          {
            Environment = [ "PATH=${lib.makeBinPath (servicePath u)}" ] ++ lib.mapAttrsToList (k: v: "${k}=${toString v}") (lib.filterAttrs (_: v: v != null) u.environment);
          }
          // lib.optionalAttrs (u.reloadIfChanged) { X-ReloadIfChanged = true; }
          // lib.optionalAttrs (!u.restartIfChanged) { X-RestartIfChanged = false; }
          // u.serviceConfig
        );
      inherit (u) wantedBy requiredBy reloadTriggers restartTriggers;
    };
  other =
    kind: key: u:
    {
      text = "[Unit]\n" + section (deps u) + "\n[${kind}]\n" + section u.${key};
      inherit (u) wantedBy requiredBy;
    };
  named = suffix: f: set: lib.listToAttrs (map (n: { name = "${n}.${suffix}"; value = f set.${n}; }) (attrNames set));
in
lib.filterAttrs (_: _: true) (
  named "service" service (lib.filterAttrs (_: u: u.enable) config.systemd.services)
  // named "path" (other "Path" "pathConfig") config.systemd.paths
  // named "timer" (other "Timer" "timerConfig") config.systemd.timers
)
