# The API endpoint is not set here: the provider reads HCLOUD_ENDPOINT
# (terraform-provider-hcloud v1.68.0, hcloud/plugin_provider.go), which
# `haul rebuild` sets from hcloud_endpoint, so its preflight and tofu talk
# to the same API.
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

# What the next server is made of, read at plan time. A replace
# (`haul rebuild` runs `tofu apply -replace=hcloud_server.vps`) destroys the
# old server before it creates the new one, so everything Hetzner would
# refuse at create time is checked here, before anything is deleted: the
# location exists, the image exists for x86, and the server type is x86 and
# orderable in the location (the per-location list Hetzner publishes since
# the 2025 deprecation of server-type-wide fields; see the provider's
# docs/data-sources/server_type.md at v1.68.0).
data "hcloud_location" "vps" {
  name = var.location
}

data "hcloud_image" "boot" {
  name              = var.image
  with_architecture = "x86"
}

data "hcloud_server_type" "vps" {
  name = var.server_type

  lifecycle {
    postcondition {
      condition     = self.architecture == "x86"
      error_message = "Server type ${var.server_type} is ${self.architecture}, but nixosConfigurations.vps is x86_64-linux: pick an x86 type (cx23, cx33, cpx22, ...) in server_type."
    }
    postcondition {
      condition = anytrue([
        for l in self.locations : l.name == data.hcloud_location.vps.name && l.available &&
        try(timecmp(l.unavailable_after, plantimestamp()) > 0, true)
      ])
      error_message = "Hetzner cannot create a ${var.server_type} in ${var.location} now (not offered there, temporarily unavailable, or past its unavailable_after date), so a rebuild would delete the old server and fail to create the new one. Nothing was changed. Pick a type offered in ${var.location} (`hcloud server-type list`; cx23 is the current smallest x86 type) and set server_type, or change location only if you can lose the primary IPs."
    }
  }
}

# A type or image that still works but is deprecated: a warning, not a
# failure, so there is time to move before Hetzner removes it.
check "server_type_not_deprecated" {
  assert {
    condition = alltrue([
      for l in data.hcloud_server_type.vps.locations : !l.is_deprecated if l.name == var.location
    ])
    error_message = "Server type ${var.server_type} is deprecated in ${var.location}: a rebuild stops working after its unavailable_after date. Move to a current type (cx23) with a plain `tofu apply` while the server runs."
  }
}

check "image_not_deprecated" {
  assert {
    condition     = data.hcloud_image.boot.deprecated == null || data.hcloud_image.boot.deprecated == ""
    error_message = "Image ${var.image} is deprecated (since ${data.hcloud_image.boot.deprecated == null ? "" : data.hcloud_image.boot.deprecated}): set image to its successor (e.g. debian-13) before Hetzner removes it."
  }
}

resource "hcloud_server" "vps" {
  name         = var.server_name
  server_type  = data.hcloud_server_type.vps.name
  location     = data.hcloud_location.vps.name
  image        = data.hcloud_image.boot.name
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
    # Hetzner reads ssh_keys and image only when it creates a server (and
    # nixos-anywhere replaces the image at once); a changed key or image
    # must not replace a running server on a plain `tofu apply`. Replacing
    # it is `haul rebuild`'s job, and a replace creates the new server with
    # the current values.
    ignore_changes = [ssh_keys, image]
  }
}

