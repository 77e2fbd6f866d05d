# The values that make this VPS yours. Edit them before the first deploy;
# docs/nixos.md walks through each.
#
# As shipped, this file holds example values and `example = true`: the
# configuration evaluates (so `nix flake check` passes on a fresh clone),
# but building it for a real machine stops with a message until you set
# `example = false`. `nixos-rebuild build-vm` builds it anyway, for a try.
{
  example = true;

  hostName = "vps";

  # Hetzner Cloud hands out IPv4 by DHCP but IPv6 only as a routed /64.
  # Put tofu's output here as it prints it (`tofu output -raw
  # ipv6_address`, the /64's ::1, e.g. "2a01:4f8:c0c:1234::1"; /64 is
  # added), or an address with its own prefix length, or null for IPv4 only.
  ipv6Address = null;

  # The public NIC (Hetzner attaches it first: enp1s0 on x86 cloud
  # servers). A private network's NIC is never matched by the uplink.
  uplinkInterface = "enp1s0";

  # Your own keys, for root logins (nixos-anywhere, nixos-rebuild).
  adminKeys = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample admin@example"
  ];

  # The NAS's keys. The backup key can only pull; the restore key can also
  # push a restore (keep its private half offline until you need it).
  nas = {
    backupKeys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleBackupExampleBackupExampleBackupExam nas-backup"
    ];
    restoreKeys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleRestoreExampleRestoreExampleRestore nas-restore"
    ];
  };

  pangolin = {
    dashboardDomain = "pangolin.example.com";
    baseDomain = "example.com";
    letsEncryptEmail = "admin@example.com";
    # Pin each image by digest: `docker buildx imagetools inspect
    # docker.io/fosrl/pangolin:<version>` prints it. The zeros below are
    # placeholders, not images.
    images = {
      pangolin = "docker.io/fosrl/pangolin:latest@sha256:0000000000000000000000000000000000000000000000000000000000000000";
      gerbil = "docker.io/fosrl/gerbil:latest@sha256:0000000000000000000000000000000000000000000000000000000000000000";
      traefik = "docker.io/traefik:v3.6@sha256:0000000000000000000000000000000000000000000000000000000000000000";
    };
  };
}
