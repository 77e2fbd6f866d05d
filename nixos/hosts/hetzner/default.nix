# The VPS: a Hetzner Cloud x86 server running Pangolin's stack, backed up
# by the NAS through haul-agent. nixos-anywhere installs it from
# `.#nixosConfigurations.vps` (tofu/ drives that); `nixos-rebuild switch
# --flake .#vps --target-host root@<ip>` updates it.
#
# Operator-specific values come from ./site.nix.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  site = import ./site.nix;
  # site.nix takes tofu's `ipv6_address` output as it is: the provider
  # documents it as "the first IPv6 address of the assigned network"
  # (hcloud provider docs/resources/server.md), a bare address (::1 of the
  # routed /64). A value with its own prefix length is taken as written.
  ipv6 =
    if site.ipv6Address == null then
      null
    else if lib.hasInfix "/" site.ipv6Address then
      site.ipv6Address
    else
      "${site.ipv6Address}/64";
  # The reason a build of the example site stops, shown by Nix when it
  # builds this derivation.
  refuseExampleSite = pkgs.runCommand "nixos-hosts-hetzner-site-nix-is-the-example" { } ''
    echo "nixos/hosts/hetzner/site.nix still holds the example values (example = true):" >&2
    echo "set your domain, image digests, admin and NAS keys there, then set example = false." >&2
    exit 1
  '';
in
{
  imports = [
    (modulesPath + "/profiles/qemu-guest.nix")
    ./disko.nix
  ];

  options.vps.allowExampleSite = lib.mkOption {
    type = lib.types.bool;
    default = false;
    description = "Build even though site.nix holds the example values. Only the local VM (build-vm) sets it.";
  };

  config = {
    system.checks = lib.optional (site.example && !config.vps.allowExampleSite) refuseExampleSite;

    # Hetzner Cloud boots x86 servers with legacy BIOS: GRUB goes into the
    # BIOS boot partition (disko fills boot.loader.grub.devices from it).
    # The EFI files go to the removable-media path as well, which needs no
    # NVRAM entry, so the disk also boots if the machine is offered UEFI.
    boot.loader.grub = {
      enable = true;
      efiSupport = true;
      efiInstallAsRemovable = true;
    };

    networking.hostName = site.hostName;
    networking.useNetworkd = true;
    # The public NIC only. Hetzner attaches it first, on PCI slot 1
    # (enp1s0, eth0 under the predictable-names fallback); a private
    # network's NIC comes later (enp7s0, …) and is configured by Hetzner's
    # DHCP on that network if you add one, never by this match.
    systemd.network.networks."10-uplink" = {
      matchConfig.Name = site.uplinkInterface or "enp1s0";
      networkConfig.DHCP = "ipv4";
      address = lib.optional (ipv6 != null) ipv6;
      routes = lib.optional (ipv6 != null) { Gateway = "fe80::1"; GatewayOnLink = true; };
    };

    # Hetzner's console password reset and its graceful shutdown talk to
    # the QEMU guest agent (nixos/modules/virtualisation/qemu-guest-agent.nix).
    services.qemuGuest.enable = true;

    # Key-only SSH. Root logs in with the admin keys (deploys) and the
    # NAS's forced-command keys; nothing logs in with a password.
    services.openssh = {
      enable = true;
      # sshd.nix defaults this to true already; said here because the
      # NAS reaches the agent only through it.
      openFirewall = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };
    users.users.root.openssh.authorizedKeys.keys = site.adminKeys;

    services.haul-agent = {
      enable = true;
      host = site.hostName;
      inherit (site.nas) backupKeys restoreKeys;
      # dataPaths, quiesce (pause the compose project) and the ready marker
      # follow from services.pangolin-compose.
    };

    services.pangolin-compose = {
      enable = true;
      # Off by default, as in nixpkgs' modules; this host serves the world.
      openFirewall = true;
      inherit (site.pangolin)
        dashboardDomain
        baseDomain
        letsEncryptEmail
        images
        ;
    };

    # Try it locally: `nixos-rebuild build-vm --flake .#vps`, then
    # ./result/bin/run-vps-vm (docs/nixos.md, "Try it in a local VM").
    virtualisation.vmVariant = {
      vps.allowExampleSite = true;
      # The example admin key opens nothing; log the console in instead.
      services.getty.autologinUser = "root";
      virtualisation = {
        memorySize = 2048;
        diskSize = 8192;
        forwardPorts = [
          { from = "host"; host.port = 2222; guest.port = 22; }
          { from = "host"; host.port = 8080; guest.port = 80; }
          { from = "host"; host.port = 8443; guest.port = 443; }
        ];
      };
    };

    system.stateVersion = "25.11";
  };
}
