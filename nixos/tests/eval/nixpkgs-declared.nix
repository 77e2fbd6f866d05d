# Option names nixpkgs itself declares in or next to the namespaces our
# modules use. Our modules must not declare any of them: nixpkgs imports
# its modules by default, so a second declaration stops every evaluation
# ("The option `…' is already declared in …").
#
# services.pangolin.* and services.gerbil.* are nixpkgs' native Pangolin
# module (nixos/modules/services/networking/pangolin.nix: enable, package,
# settings, openFirewall, baseDomain, dashboardDomain, letsEncryptEmail,
# dnsProvider, environmentFile, dataDir; gerbil.port,
# gerbil.environmentFile). services.traefik.* is
# nixos/modules/services/web-servers/traefik.nix, which that module
# enables. Every option in ./nixpkgs-options.nix is declared by nixpkgs as
# well; the collision test adds those names to this list.
[
  "services.pangolin.enable"
  "services.pangolin.package"
  "services.pangolin.settings"
  "services.pangolin.openFirewall"
  "services.pangolin.baseDomain"
  "services.pangolin.dashboardDomain"
  "services.pangolin.letsEncryptEmail"
  "services.pangolin.dnsProvider"
  "services.pangolin.environmentFile"
  "services.pangolin.dataDir"
  "services.gerbil.port"
  "services.gerbil.environmentFile"
  "services.traefik.enable"
  "services.traefik.package"
  "services.traefik.group"
  "services.traefik.dataDir"
  "services.traefik.staticConfigOptions"
  "services.traefik.staticConfigFile"
  "services.traefik.dynamicConfigOptions"
  "services.traefik.dynamicConfigFile"
  "services.traefik.environmentFiles"
]
