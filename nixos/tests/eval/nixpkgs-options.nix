# Declarations of the nixpkgs (and disko) options that our modules and
# the Hetzner host set, with the names and types nixpkgs' own module files
# give them. CI has no nixpkgs, so ./lib.nix evaluates our modules against
# these; a definition of an option that is not here fails ("does not
# exist"), as it would under nixpkgs.
#
# Read from NixOS/nixpkgs (nixos-unstable) and nix-community/disko:
#   assertions, warnings        nixos/modules/misc/assertions.nix
#   boot.kernelModules, boot.kernel.sysctl, boot.initrd.*
#                               nixos/modules/system/boot/kernel.nix, kernel_sysctl.nix
#   boot.loader.grub.*          nixos/modules/system/boot/loader/grub/grub.nix
#   networking.firewall.*       nixos/modules/services/networking/firewall.nix
#   networking.hostName, useNetworkd, useDHCP
#                               nixos/modules/tasks/network-interfaces.nix
#   systemd.services/paths/timers (unit options)
#                               nixos/lib/systemd-unit-options.nix, nixos/modules/system/boot/systemd.nix
#   systemd.tmpfiles.settings   nixos/modules/system/boot/systemd/tmpfiles.nix
#   systemd.network.networks    nixos/modules/system/boot/networkd.nix
#   environment.etc             nixos/modules/system/etc/etc.nix
#   environment.systemPackages  nixos/modules/config/system-path.nix
#   users.users, users.groups   nixos/modules/config/users-groups.nix
#   users.users.<n>.openssh.authorizedKeys.keys, services.openssh.*
#                               nixos/modules/services/networking/ssh/sshd.nix
#   virtualisation.docker.*     nixos/modules/virtualisation/docker.nix
#   services.qemuGuest.enable   nixos/modules/virtualisation/qemu-guest-agent.nix
#   system.checks, system.stateVersion
#                               nixos/modules/system/activation/top-level.nix, misc/version.nix
#   nixpkgs.hostPlatform        nixos/modules/misc/nixpkgs.nix
#   virtualisation.vmVariant    nixos/modules/virtualisation/build-vm.nix: the same
#                               configuration extended with qemu-vm.nix; deferred here
#                               and evaluated by ./default.nix with qemu-vm.nix's
#                               memorySize, diskSize and forwardPorts declarations
#   (security.wrappers and virtualisation.oci-containers, also read, are set by
#   none of our modules.)
#   disko.devices.disk          disko lib/types/{disk,gpt,filesystem}.nix
{ lib, ... }:
let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-unit-options.nix unitOption: lists concatenate,
  # anything else must be equal in every definition.
  unitOption = types.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      if builtins.isList (builtins.head defs).value then
        builtins.concatMap (
          d:
          if builtins.isList d.value then
            d.value
          else
            throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list"
        ) defs
      else
        lib.mergeEqualOption loc defs;
  };
  unitNameType = types.str;
  units = [ "services" "paths" "timers" "sockets" "targets" ];
  listOfUnits = mkOption { type = types.listOf unitNameType; default = [ ]; };

  # commonUnitOptions + stage2CommonUnitOptions.
  commonUnit = {
    enable = mkOption { type = types.bool; default = true; };
    description = mkOption { type = types.singleLineStr; default = ""; };
    documentation = mkOption { type = types.listOf types.str; default = [ ]; };
    wantedBy = listOfUnits;
    requiredBy = listOfUnits;
    upheldBy = listOfUnits;
    aliases = listOfUnits;
    requires = listOfUnits;
    wants = listOfUnits;
    upholds = listOfUnits;
    after = listOfUnits;
    before = listOfUnits;
    bindsTo = listOfUnits;
    partOf = listOfUnits;
    conflicts = listOfUnits;
    requisite = listOfUnits;
    onFailure = listOfUnits;
    onSuccess = listOfUnits;
    unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    startLimitBurst = mkOption { type = types.int; };
    startLimitIntervalSec = mkOption { type = types.int; };
    restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    reloadTriggers = mkOption { type = types.listOf unitOption; default = [ ]; };
  };

  serviceType = types.submodule {
    options = commonUnit // {
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
      };
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      scriptArgs = mkOption { type = types.str; default = ""; };
      preStart = mkOption { type = types.lines; default = ""; };
      postStart = mkOption { type = types.lines; default = ""; };
      reload = mkOption { type = types.lines; default = ""; };
      preStop = mkOption { type = types.lines; default = ""; };
      postStop = mkOption { type = types.lines; default = ""; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      reloadIfChanged = mkOption { type = types.bool; default = false; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      startAt = mkOption { type = types.either types.str (types.listOf types.str); default = [ ]; };
    };
  };
  pathType = types.submodule { options = commonUnit // { pathConfig = mkOption { type = types.attrsOf unitOption; default = { }; }; }; };
  timerType = types.submodule { options = commonUnit // { timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; }; }; };

  # tmpfiles.nix: settings.<config>.<path>.<type> = { mode user group age argument }.
  tmpfilesEntry = types.submodule (
    { name, ... }:
    {
      options = {
        type = mkOption { type = types.str; default = name; };
        mode = mkOption { type = types.str; default = "-"; };
        user = mkOption { type = types.str; default = "-"; };
        group = mkOption { type = types.str; default = "-"; };
        age = mkOption { type = types.str; default = "-"; };
        argument = mkOption { type = types.str; default = ""; };
      };
    }
  );

  networkType = types.submodule {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      matchConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      linkConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      networkConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      dhcpV4Config = mkOption { type = types.attrsOf unitOption; default = { }; };
      ipv6AcceptRAConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      address = mkOption { type = types.listOf types.str; default = [ ]; };
      gateway = mkOption { type = types.listOf types.str; default = [ ]; };
      dns = mkOption { type = types.listOf types.str; default = [ ]; };
      # networkd.nix: routes are attrsets of [Route] keys.
      routes = mkOption { type = types.listOf (types.attrsOf unitOption); default = [ ]; };
    };
  };

  etcType = types.submodule (
    { name, ... }:
    {
      options = {
        enable = mkOption { type = types.bool; default = true; };
        target = mkOption { type = types.str; default = name; };
        text = mkOption { type = types.nullOr types.lines; default = null; };
        source = mkOption { type = types.path; };
        mode = mkOption { type = types.str; default = "symlink"; };
        uid = mkOption { type = types.int; default = 0; };
        gid = mkOption { type = types.int; default = 0; };
        user = mkOption { type = types.str; default = "+0"; };
        group = mkOption { type = types.str; default = "+0"; };
      };
    }
  );

  userType = types.submodule (
    { name, ... }:
    {
      options = {
        name = mkOption { type = types.str; default = name; };
        description = mkOption { type = types.str; default = ""; };
        uid = mkOption { type = types.nullOr types.int; default = null; };
        isSystemUser = mkOption { type = types.bool; default = false; };
        isNormalUser = mkOption { type = types.bool; default = false; };
        group = mkOption { type = types.str; default = ""; };
        extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
        home = mkOption { type = types.path; default = "/var/empty"; };
        createHome = mkOption { type = types.bool; default = false; };
        # users-groups.nix: shell = nullOr (either shellPackage (passwdEntry path)).
        shell = mkOption { type = types.nullOr (types.either types.package types.path); default = null; };
        packages = mkOption { type = types.listOf types.package; default = [ ]; };
        hashedPassword = mkOption { type = types.nullOr types.str; default = null; };
        # sshd.nix userOptions.
        openssh.authorizedKeys = {
          keys = mkOption { type = types.listOf types.singleLineStr; default = [ ]; };
          keyFiles = mkOption { type = types.listOf types.path; default = [ ]; };
        };
      };
    }
  );
  groupType = types.submodule {
    options = {
      gid = mkOption { type = types.nullOr types.int; default = null; };
      members = mkOption { type = types.listOf types.str; default = [ ]; };
    };
  };

  # sshd.nix settings: a freeform submodule with a few typed keys (current
  # nixpkgs types them nullOr: null leaves the key out of sshd_config).
  sshdSettings = types.submodule {
    freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]));
    options = {
      PasswordAuthentication = mkOption { type = types.nullOr types.bool; default = true; };
      KbdInteractiveAuthentication = mkOption { type = types.nullOr types.bool; default = true; };
      PermitRootLogin = mkOption {
        type = types.nullOr (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ]);
        default = "prohibit-password";
      };
      X11Forwarding = mkOption { type = types.nullOr types.bool; default = false; };
      UseDns = mkOption { type = types.nullOr types.bool; default = false; };
    };
  };

  # disko: disk -> gpt -> partitions -> filesystem/btrfs content.
  diskoContent = types.submodule {
    options = {
      type = mkOption { type = types.enum [ "filesystem" "btrfs" "swap" "luks" "lvm_pv" "zfs" "mdraid" ]; };
      format = mkOption { type = types.str; };
      mountpoint = mkOption { type = types.nullOr types.str; default = null; };
      mountOptions = mkOption { type = types.listOf types.str; default = [ "defaults" ]; };
      extraArgs = mkOption { type = types.listOf types.str; default = [ ]; };
      subvolumes = mkOption {
        type = types.attrsOf (
          types.submodule {
            options = {
              mountpoint = mkOption { type = types.nullOr types.str; default = null; };
              mountOptions = mkOption { type = types.listOf types.str; default = [ "defaults" ]; };
            };
          }
        );
        default = { };
      };
    };
  };
  diskoPartition = types.submodule {
    options = {
      type = mkOption {
        type = types.either (types.strMatching "[A-Fa-f0-9]{4}") (types.strMatching "[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{4}-[A-Fa-f0-9]{12}");
        default = "8300";
      };
      size = mkOption { type = types.either (types.enum [ "100%" ]) (types.strMatching "[0-9]+[KMGTP]?"); default = "0"; };
      priority = mkOption { type = types.int; default = 1000; };
      label = mkOption { type = types.str; default = ""; };
      content = mkOption { type = types.nullOr diskoContent; default = null; };
    };
  };
  diskoDisk = types.submodule (
    { name, ... }:
    {
      options = {
        type = mkOption { type = types.enum [ "disk" ]; default = "disk"; };
        device = mkOption { type = types.str; };
        imageSize = mkOption { type = types.strMatching "[0-9]+[KMGTP]?"; default = "2G"; };
        content = mkOption {
          type = types.submodule {
            options = {
              type = mkOption { type = types.enum [ "gpt" "table" "filesystem" ]; };
              partitions = mkOption { type = types.attrsOf diskoPartition; default = { }; };
            };
          };
        };
      };
    }
  );
in
{
  options = {
    assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; internal = true; };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; internal = true; };

    boot = {
      kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
      kernel.sysctl = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]));
        default = { };
      };
      initrd.availableKernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
      initrd.kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
      loader.grub = {
        enable = mkOption { type = types.bool; default = true; };
        efiSupport = mkOption { type = types.bool; default = false; };
        efiInstallAsRemovable = mkOption { type = types.bool; default = false; };
        devices = mkOption { type = types.listOf types.str; default = [ ]; };
      };
    };

    networking = {
      hostName = mkOption {
        type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
        default = "nixos";
      };
      useNetworkd = mkOption { type = types.bool; default = false; };
      useDHCP = mkOption { type = types.bool; default = true; };
      firewall = {
        enable = mkOption { type = types.bool; default = true; };
        allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
        allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      };
    };

    systemd = {
      services = mkOption { type = types.attrsOf serviceType; default = { }; };
      paths = mkOption { type = types.attrsOf pathType; default = { }; };
      timers = mkOption { type = types.attrsOf timerType; default = { }; };
      tmpfiles.settings = mkOption { type = types.attrsOf (types.attrsOf (types.attrsOf tmpfilesEntry)); default = { }; };
      tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
      network.enable = mkOption { type = types.bool; default = false; };
      network.networks = mkOption { type = types.attrsOf networkType; default = { }; };
    };

    environment = {
      etc = mkOption { type = types.attrsOf etcType; default = { }; };
      systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    };

    users = {
      users = mkOption { type = types.attrsOf userType; default = { }; };
      groups = mkOption { type = types.attrsOf groupType; default = { }; };
    };

    services = {
      openssh = {
        enable = mkOption { type = types.bool; default = false; };
        openFirewall = mkOption { type = types.bool; default = true; };
        ports = mkOption { type = types.listOf types.port; default = [ 22 ]; };
        settings = mkOption { type = sshdSettings; default = { }; };
      };
      qemuGuest.enable = mkOption { type = types.bool; default = false; };
      getty.autologinUser = mkOption { type = types.nullOr types.str; default = null; };
    };

    virtualisation = {
      docker = {
        enable = mkOption { type = types.bool; default = false; };
        autoPrune.enable = mkOption { type = types.bool; default = false; };
        daemon.settings = mkOption { type = types.attrsOf types.anything; default = { }; };
      };
      vmVariant = mkOption { type = types.deferredModule; default = { }; };
    };

    system = {
      checks = mkOption { type = types.listOf types.package; default = [ ]; };
      stateVersion = mkOption { type = types.str; };
    };

    nixpkgs.hostPlatform = mkOption { type = types.either types.str types.attrs; };

    disko.devices.disk = mkOption { type = types.attrsOf diskoDisk; default = { }; };
  };
}
