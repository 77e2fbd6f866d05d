# nixos-anywhere installs nixosConfigurations.vps on every new server
# (instance_id changes with the server) and copies the files the
# extra-files script writes: the kept SSH host key, so haul's pin holds.
#
# Pinned to the release tag 1.13.0 (2025-11-13); its inputs are
# terraform/all-in-one/variables.tf at that tag. The module declares its
# providers without versions (terraform/install/providers.tf: hashicorp/null;
# terraform/nix-build uses data "external", i.e. hashicorp/external), so
# they are constrained here, and .terraform.lock.hcl records the versions.
# Tests swap this file for a stand-in module with the same inputs
# (tofu/tofutest): nixos-anywhere runs `nix build` at plan time.
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "~> 3.2"
    }
    external = {
      source  = "hashicorp/external"
      version = "~> 2.3"
    }
  }
}

module "deploy" {
  source = "github.com/nix-community/nixos-anywhere//terraform/all-in-one?ref=1.13.0"

  nixos_system_attr      = "${local.flake}#nixosConfigurations.vps.config.system.build.toplevel"
  nixos_partitioner_attr = "${local.flake}#nixosConfigurations.vps.config.system.build.diskoScript"

  target_host        = hcloud_server.vps.ipv4_address
  instance_id        = hcloud_server.vps.id
  install_ssh_key    = var.install_ssh_key
  extra_files_script = "${path.module}/extra-files.sh"
  extra_environment = {
    HAUL_BIN    = var.haul_bin
    HAUL_CONFIG = var.haul_config
    HAUL_HOST   = var.haul_host
  }
}
