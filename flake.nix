{
  description = "haul: a disposable VPS whose data a NAS pulls, keeps and puts back";

  # There is no flake.lock in the repository yet: the first `nix flake lock`
  # (or any nix command on the flake) needs network access to pin these.
  inputs = {
    # nixos-unstable: go.mod asks for Go 1.26.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      disko,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      version = "0.1.0-dev+${self.shortRev or self.dirtyShortRev or "unknown"}";

      haulPackages =
        pkgs:
        pkgs.callPackage ./nixos/packages/haul.nix {
          # go.mod's `go 1.26.0` needs a Go at least that new.
          buildGoModule = pkgs.buildGo126Module or pkgs.buildGoModule;
          inherit version;
          # Only what the Go build reads, so edits to docs or Nix files do
          # not rebuild the binaries.
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./go.mod
              ./go.sum
              ./agent
              ./internal
              ./proto
              ./puller
            ];
          };
        };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          p = haulPackages pkgs;
        in
        {
          inherit (p) haul haul-agent;
          default = p.haul;
        }
      );

      # The modules default their package to this flake's build.
      nixosModules = {
        haul-agent =
          { pkgs, ... }:
          {
            imports = [ ./nixos/modules/haul-agent.nix ];
            services.haul-agent.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.haul-agent;
          };
        # services.pangolin-compose: Pangolin's Docker compose stack. Not
        # nixpkgs' native services.pangolin, which it can sit beside.
        pangolin-compose = ./nixos/modules/pangolin-compose.nix;
        default = {
          imports = [
            self.nixosModules.haul-agent
            self.nixosModules.pangolin-compose
          ];
        };
      };

      # The Hetzner Cloud VPS (x86_64). Edit nixos/hosts/hetzner/site.nix
      # first; docs/nixos.md explains deploying it with nixos-anywhere.
      nixosConfigurations.vps = lib.nixosSystem {
        modules = [
          { nixpkgs.hostPlatform = "x86_64-linux"; }
          disko.nixosModules.disko
          self.nixosModules.default
          ./nixos/hosts/hetzner
        ];
      };

      # `nix run .#vm`: the VPS configuration in a local QEMU VM.
      apps.x86_64-linux.vm = {
        type = "app";
        meta.description = "Boot nixosConfigurations.vps in a local QEMU VM";
        program = "${self.nixosConfigurations.vps.config.system.build.vm}/bin/run-${self.nixosConfigurations.vps.config.networking.hostName}-vm";
      };

      checks = forAllSystems (
        pkgs:
        let
          p = haulPackages pkgs;
          # The renderer the module uses, on the VPS's own settings: the
          # agent must accept what the module would install.
          vps = self.nixosConfigurations.vps.config;
        in
        {
          agent-config =
            pkgs.runCommand "haul-agent-check-config"
              {
                agentConfig = pkgs.writeText "haul-agent.json" vps.environment.etc."haul-agent/config.json".text;
              }
              ''
                ${p.haul-agent}/bin/haul-agent check-config --offline --config "$agentConfig" > $out
              '';

          # A NixOS VM test: a VPS node with the agent module, a NAS node
          # with haul, a backup over SSH and a restore compared byte for
          # byte. Needs KVM and network access for nixpkgs; CI here has
          # neither, so it runs wherever Nix does.
          backup-restore = pkgs.testers.runNixOSTest (
            import ./nixos/tests/backup-restore.nix {
              haulPackages = p;
              agentModule = self.nixosModules.haul-agent;
            }
          );
        }
      );
    };
}
