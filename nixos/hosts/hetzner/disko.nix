# Disk layout for a Hetzner Cloud x86 server, applied by nixos-anywhere
# through disko. Hetzner boots these machines with legacy BIOS (SeaBIOS),
# so GRUB needs a BIOS boot partition on the GPT disk; the ESP is there as
# well so the same image boots where UEFI is offered (see default.nix for
# GRUB's efiSupport and efiInstallAsRemovable).
#
# Nothing on this disk needs to survive a rebuild: the data comes back from
# the NAS, so there is a single root file system and no separate data
# volume.
#
# The root is XFS with reflinks (mkfs.xfs -m reflink=1; xfsprogs has made
# it the default since 5.1, said explicitly here), so /var/lib is on a
# file system where FICLONE works: haul-agent's mirror in
# /var/lib/haul-agent shares blocks with the data in /var/lib/pangolin
# instead of doubling it, and both are on the same file system, which a
# clone needs. GRUB never reads it: /boot is the vfat ESP. disko's
# filesystem type passes extraArgs to mkfs.<format>
# (disko lib/types/filesystem.nix).
{
  disko.devices.disk.main = {
    type = "disk";
    device = "/dev/sda";
    content = {
      type = "gpt";
      partitions = {
        # GRUB's core image for BIOS boot; 1 MiB, no file system.
        boot = {
          size = "1M";
          type = "EF02";
          priority = 1;
        };
        ESP = {
          size = "512M";
          type = "EF00";
          priority = 2;
          content = {
            type = "filesystem";
            format = "vfat";
            mountpoint = "/boot";
            mountOptions = [ "umask=0077" ];
          };
        };
        root = {
          size = "100%";
          content = {
            type = "filesystem";
            format = "xfs";
            extraArgs = [ "-m" "reflink=1" ];
            mountpoint = "/";
          };
        };
      };
    };
  };
}
