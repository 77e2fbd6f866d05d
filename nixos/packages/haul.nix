# haul (the puller) and haul-agent, built from this repository with
# buildGoModule. flake.nix calls this with callPackage.
{
  buildGoModule,
  src,
  version,
}:
let
  # The module download is a fixed-output derivation: its store path
  # depends on its name and hash only. buildGoModule names it
  # "<pname>-<version>-go-modules", and the flake's version carries the
  # commit, so every commit would download all modules again. One
  # version-free name for both packages makes it one derivation, fetched
  # once per go.sum.
  modAttrs = _: {
    name = "haul-go-modules";
    preBuild = "";
  };

  common = {
    inherit src version;

    # The module download's hash, computed without network by
    # nixos/packages/vendor-hash.sh (what buildGoModule's module
    # derivation does with proxyVendor, hashed as Nix hashes it). CI
    # (go test ./nixos/ -run VendorHash) recomputes it and fails when
    # go.mod/go.sum changed without it. One hash serves both packages:
    # same go.mod, same module download.
    vendorHash = "sha256-PFnzq2c9/N6GFbBh/Xt372zMhJGiaLAXCpYp3Mk6wCQ=";

    # proxyVendor keeps a Go module cache (not a vendor/ tree) as the
    # fixed-output derivation. The puller needs it: `go generate` copies
    # restic's internal packages out of the module cache, which a vendor/
    # tree does not hold in full.
    proxyVendor = true;

    overrideModAttrs = modAttrs;

    # Static binaries: the agent runs on any VPS, the puller on TrueNAS.
    env.CGO_ENABLED = 0;

    # The test suite needs sshd, dockerd and the restic CLI; CI runs it
    # (.ci/run), the Nix build does not.
    doCheck = false;
  };
in
{
  haul = buildGoModule (
    common
    // {
      pname = "haul";
      subPackages = [ "puller/cmd/haul" ];

      # puller/internal/restic is generated, not committed: copy restic's
      # internal packages from the module cache (GOPROXY points at the
      # fixed-output module download here) at the version go.mod pins.
      preBuild = ''
        go generate ./puller/internal/resticgen
      '';
      # buildGoModule hands preBuild to the module download too; that
      # derivation only runs `go mod download` and must not generate.
      overrideModAttrs = modAttrs;

      ldflags = [
        "-s"
        "-w"
        "-X github.com/haulproject/haul/internal/version.Version=${version}"
      ];

      meta = {
        description = "Pull consistent, deduplicated, encrypted snapshots of a VPS into a local restic-format repository";
        mainProgram = "haul";
      };
    }
  );

  haul-agent = buildGoModule (
    common
    // {
      pname = "haul-agent";
      subPackages = [ "agent/cmd/haul-agent" ];
      ldflags = [
        "-s"
        "-w"
        "-X github.com/haulproject/haul/internal/version.Version=${version}"
      ];
      meta = {
        description = "VPS side of haul: the forced command that serves consistent backups and restores over SSH";
        mainProgram = "haul-agent";
      };
    }
  );
}
