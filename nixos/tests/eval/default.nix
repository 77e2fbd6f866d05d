# Evaluates our NixOS modules without nixpkgs, with ./lib.nix (a module
# system that follows nixpkgs' lib), ./nixpkgs-options.nix (the nixpkgs
# options they set, typed as nixpkgs types them) and ./nixpkgs-declared.nix
# (names nixpkgs declares that we must not). nixos/nix_test.go drives it.
#
#   nix-instantiate --eval --strict --json nixos/tests/eval/default.nix \
#     --arg modules '[ { services.pangolin-compose.settings.app.log_level = "debug"; } ]' \
#     -A result
#
# Arguments:
#   modules     extra modules (the test's own settings), after the host's;
#   host        include nixos/hosts/hetzner (nixosConfigurations.vps's
#               modules), else only our three modules (haul-agent,
#               pangolin-compose) with `modules`;
#   toolPrefix, tools   where the stand-in packages live (./pkgs.nix);
#   agentBin    the haul-agent package's outPath (bin/haul-agent inside).
{
  modules ? [ ],
  host ? true,
  toolPrefix ? "/usr",
  tools ? { },
  agentPackage ? "/usr",
  repo ? ../../..,
  # Our module files (an older checkout's, to show what the collision
  # test says about it).
  moduleFiles ? [
    (repo + "/nixos/modules/haul-agent.nix")
    (repo + "/nixos/modules/pangolin-compose.nix")
  ],
}:
let
  lib = import ./lib.nix;
  pkgs = import ./pkgs.nix { inherit lib toolPrefix tools; };

  declaredNames = import ./nixpkgs-declared.nix;

  # nixpkgs' own declarations of the names in ./nixpkgs-declared.nix (the
  # native Pangolin and Traefik modules); their config is not modelled,
  # only that the names are taken. enable options default to false, as
  # mkEnableOption does.
  nativeDeclarations = {
    _file = toString ./nixpkgs-declared.nix;
    options = builtins.foldl' (
      acc: name:
      let
        path = lib.splitString "." name;
      in
      lib.recursiveUpdate acc (
        builtins.foldl' (v: k: { ${k} = v; }) (
          lib.mkOption ({ type = lib.types.unspecified; } // (if lib.last path == "enable" then { default = false; } else { default = null; }))
        ) (lib.reverseList path)
      )
    ) { } declaredNames;
  };

  ourModules = moduleFiles ++ [
    { services.haul-agent.package = lib.mkDefault { type = "derivation"; name = "haul-agent"; outPath = agentPackage; }; }
  ];

  # What flake.nix's nixosConfigurations.vps puts together (nixpkgs'
  # modules stand in through the two declaration files; disko's module is
  # its disko.devices declarations there).
  hostModules = [
    { nixpkgs.hostPlatform = "x86_64-linux"; }
    (repo + "/nixos/hosts/hetzner")
  ];

  allModules = [ ./nixpkgs-options.nix nativeDeclarations ] ++ ourModules ++ (if host then hostModules else [ ]) ++ modules;
  specialArgs = {
    inherit pkgs;
    modulesPath = ./modules-path;
  };
  eval = lib.evalModules { modules = allModules; inherit specialArgs; };
  inherit (eval) config;

  # virtualisation.vmVariant (nixos/modules/virtualisation/build-vm.nix)
  # is the same configuration extended with qemu-vm.nix and the
  # vmVariant definitions; these are the qemu-vm.nix options the host
  # sets there, as that file declares them.
  qemuVmDeclarations = {
    _file = "nixos/modules/virtualisation/qemu-vm.nix (declarations)";
    options.virtualisation = with lib; {
      memorySize = mkOption { type = types.ints.positive; default = 1024; };
      diskSize = mkOption { type = types.nullOr types.ints.positive; default = 1024; };
      forwardPorts = mkOption {
        type = types.listOf (
          types.submodule {
            options = {
              from = mkOption { type = types.enum [ "host" "guest" ]; default = "host"; };
              proto = mkOption { type = types.enum [ "tcp" "udp" ]; default = "tcp"; };
              host.address = mkOption { type = types.str; default = ""; };
              host.port = mkOption { type = types.port; };
              guest.address = mkOption { type = types.str; default = ""; };
              guest.port = mkOption { type = types.port; };
            };
          }
        );
        default = [ ];
      };
    };
  };
  vm = lib.evalModules {
    modules = allModules ++ [ qemuVmDeclarations config.virtualisation.vmVariant ];
    inherit specialArgs;
  };

  ours = builtins.filter (d: !(lib.hasPrefix (toString ./.) d.file)) eval.declarations;
  nixpkgsNames = declaredNames ++ map (d: d.path) (builtins.filter (d: d.file == toString ./nixpkgs-options.nix) eval.declarations);
in
{
  inherit config lib pkgs eval;
  result = {
    # Option names our modules declare, and any of them nixpkgs declares.
    declared = map (d: d.path) ours;
    collisions = builtins.filter (n: builtins.elem n nixpkgsNames) (map (d: d.path) ours);
    failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
    inherit (config) warnings;
    units = import ./units.nix { inherit lib config pkgs; };
    etc = builtins.mapAttrs (_: e: { inherit (e) text; source = if e.text == null then "${e.source}" else null; }) (lib.filterAttrs (_: e: e.enable) config.environment.etc);
    compose = config.services.pangolin-compose.compose;
    firewall = config.networking.firewall;
    inherit (config.services.haul-agent) dataPaths;
    authorizedKeys = builtins.mapAttrs (_: u: u.openssh.authorizedKeys.keys) config.users.users;
    # system.checks: the example site.nix refuses to build (not in the VM).
    checks = map (c: c.name) config.system.checks;
    vm = {
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) vm.config.assertions);
      checks = map (c: c.name) vm.config.system.checks;
      inherit (vm.config.virtualisation) memorySize diskSize forwardPorts;
    };
  };
}
