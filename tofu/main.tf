provider "hcloud" {
  token = var.hcloud_token
}

locals {
  flake  = coalesce(var.flake, abspath("${path.module}/.."))
  labels = { "managed-by" = "haul-tofu", "haul-host" = var.haul_host }
}

# The addresses outlive every server: DNS points at them, and a rebuild
# (-replace=hcloud_server.vps) hands them to the new server. auto_delete
# off and delete protection on, so deleting the server never deletes them.
resource "hcloud_primary_ip" "ipv4" {
  name              = "${var.server_name}-ipv4"
  type              = "ipv4"
  location          = var.location
  assignee_type     = "server"
  auto_delete       = false
  delete_protection = true
  labels            = local.labels

  lifecycle {
    prevent_destroy = true
  }
}

resource "hcloud_primary_ip" "ipv6" {
  name              = "${var.server_name}-ipv6"
  type              = "ipv6"
  location          = var.location
  assignee_type     = "server"
  auto_delete       = false
  delete_protection = true
  labels            = local.labels

  lifecycle {
    prevent_destroy = true
  }
}

# SSH only from the homelab; the web and Gerbil's WireGuard from anywhere.
resource "hcloud_firewall" "vps" {
  name   = var.server_name
  labels = local.labels

  rule {
    description = "SSH from the homelab (NAS backups, admin deploys)"
    direction   = "in"
    protocol    = "tcp"
    port        = "22"
    source_ips  = var.homelab_cidrs
  }

  rule {
    description = "HTTP (ACME challenges, redirect to HTTPS)"
    direction   = "in"
    protocol    = "tcp"
    port        = "80"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }

  rule {
    description = "HTTPS (Pangolin and the proxied sites)"
    direction   = "in"
    protocol    = "tcp"
    port        = "443"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }

  rule {
    description = "Gerbil WireGuard for sites (Newt)"
    direction   = "in"
    protocol    = "udp"
    port        = "51820"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }

  rule {
    description = "Gerbil WireGuard for clients"
    direction   = "in"
    protocol    = "udp"
    port        = "21820"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }
}

resource "hcloud_ssh_key" "admin" {
  name       = "${var.server_name}-admin"
  public_key = var.admin_ssh_public_key
  labels     = local.labels
}

resource "hcloud_server" "vps" {
  name         = var.server_name
  server_type  = var.server_type
  location     = var.location
  image        = var.image
  ssh_keys     = [hcloud_ssh_key.admin.id]
  firewall_ids = [hcloud_firewall.vps.id]
  labels       = local.labels

  public_net {
    ipv4_enabled = true
    ipv4         = hcloud_primary_ip.ipv4.id
    ipv6_enabled = true
    ipv6         = hcloud_primary_ip.ipv6.id
  }

  lifecycle {
    # Hetzner reads ssh_keys only when it creates a server; a changed key
    # must not replace a running one. Replacing it is `haul rebuild`'s job.
    ignore_changes = [ssh_keys]
  }
}

# nixos-anywhere installs nixosConfigurations.vps on every new server
# (instance_id changes with the server) and copies the files the
# extra-files script writes: the kept SSH host key, so haul's pin holds.
module "deploy" {
  source = "github.com/nix-community/nixos-anywhere//terraform/all-in-one"

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
