# Stand-in for the few nixpkgs packages and builders our modules use, so
# that ./default.nix can evaluate them without nixpkgs.
#
# - Packages are attrsets whose outPath is a directory with bin/ on this
#   machine (toolPrefix, /usr by default; `tools` overrides single ones),
#   so a rendered script runs here with Debian's coreutils, grep, jq, yq
#   (the same programs as nixpkgs' coreutils, gnugrep, jq and yq, which is
#   kislyuk's jq wrapper), and a rendered unit names real executables.
# - writeText/writeShellScript/formats.*.generate write files with
#   builtins.toFile (nix-instantiate --read-write-mode puts them in the
#   store; in read-only mode only their paths are computed). formats.yaml
#   writes JSON, which is YAML: nixpkgs renders YAML from the same value.
# - formats.{json,yaml}.type is nixpkgs' pkgs/pkgs-lib/formats.nix value
#   type: null, bool, int, float, str, path, attrsOf and listOf itself.
{
  lib,
  toolPrefix ? "/usr",
  tools ? { },
}:
let
  inherit (lib) types;
  pkg =
    name:
    {
      type = "derivation";
      inherit name;
      pname = name;
      outPath = tools.${name} or toolPrefix;
      meta.mainProgram = name;
    };
  valueType =
    types.nullOr (
      types.oneOf [
        types.bool
        types.int
        types.float
        types.str
        types.path
        (types.attrsOf valueType)
        (types.listOf valueType)
      ]
    )
    // {
      description = "JSON value";
    };
  format = {
    type = valueType;
    generate = name: value: builtins.toFile name (builtins.toJSON value);
  };
in
{
  formats = {
    json = _: format;
    yaml = _: format;
  };
  writeText = name: text: builtins.toFile name text;
  writeShellScript = name: text: builtins.toFile name "#!/bin/bash\n${text}";
  runCommand = name: _env: _script: pkg name;
}
// lib.genAttrs [
  "bash"
  "bashInteractive"
  "coreutils"
  "docker-compose"
  "gnugrep"
  "jq"
  "systemd"
  "yq"
] pkg
