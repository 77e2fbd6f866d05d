variable "hcloud_token" {
  type        = string
  sensitive   = true
  description = "Hetzner Cloud API token (Read & Write) of the project holding the VPS. `haul rebuild` passes it as TF_VAR_hcloud_token; never put it in a .tfvars file in git."
}

variable "server_name" {
  type        = string
  default     = "vps"
  description = "Name of the server in Hetzner Cloud. The primary IPs are named <server_name>-ipv4 and <server_name>-ipv6, as haul's [hosts.rebuild] expects by default."
}

variable "server_type" {
  type        = string
  default     = "cx23"
  description = "Hetzner Cloud server type (x86: nixosConfigurations.vps is x86_64-linux). cx23 replaced cx22, which Hetzner deprecated (terraform-provider-hcloud's docs moved to cx23 in commit c9cdbb9, 2025-10-28). Checked at plan time: a type Hetzner cannot create in the location fails the plan before anything is deleted."
}

variable "location" {
  type        = string
  default     = "fsn1"
  description = "Hetzner Cloud location of the server and its primary IPs (fsn1, nbg1, hel1, …). Primary IPs cannot move: changing it means new addresses."
}

variable "image" {
  type        = string
  default     = "debian-12"
  description = "Image the server boots first; nixos-anywhere kexecs into a NixOS installer from it and replaces it. A change applies to the next server only (`haul rebuild`): it never replaces the running one."
}

variable "homelab_cidrs" {
  type        = list(string)
  description = "Addresses allowed to reach SSH (22/tcp): the homelab's public address as /32 (and /128), from which the NAS pulls backups and admins deploy."

  # By prefix length, not by string: 0::/0, 0.0.0.0/1 + 128.0.0.0/1 or
  # ::ffff:0:0/96 (every IPv4 address, IPv4-mapped) are the world too.
  validation {
    condition     = length(var.homelab_cidrs) > 0
    error_message = "homelab_cidrs is empty: list the homelab's public address(es), e.g. [\"203.0.113.7/32\", \"2001:db8:7::/64\"]."
  }
  validation {
    condition     = alltrue([for c in var.homelab_cidrs : can(cidrhost(c, 0))])
    error_message = "Every homelab_cidrs entry must be a CIDR block like 203.0.113.7/32 or 2001:db8:7::/64 (a bare address needs /32 or /128)."
  }
  validation {
    # (Entries that are no CIDR block are the previous rule's to report.)
    condition = alltrue([
      for c in var.homelab_cidrs : try(
        strcontains(c, ":")
        ? tonumber(split("/", c)[1]) >= 32 && strcontains(cidrhost(c, 0), ":")
        : tonumber(split("/", c)[1]) >= 8,
        true
      )
    ])
    error_message = "homelab_cidrs must name the homelab, not the world: IPv4 blocks need a prefix of /8 or longer and IPv6 blocks /32 or longer (and no IPv4-mapped ::ffff: block). Use the homelab's own address as /32 (IPv4) or its /64 or /128 (IPv6), e.g. [\"203.0.113.7/32\"]."
  }
}

variable "admin_ssh_public_key" {
  type        = string
  description = "Public SSH key (one authorized_keys line) Hetzner puts on the fresh server, so nixos-anywhere can log in as root to install. The installed system takes its keys from nixos/hosts/hetzner/site.nix."
}

variable "install_ssh_key" {
  type        = string
  default     = null
  sensitive   = true
  description = "Private half of admin_ssh_public_key for the install, if not in your ssh-agent (null: nixos-anywhere uses the agent)."
}

variable "flake" {
  type        = string
  default     = null
  description = "Path or URL of the flake holding nixosConfigurations.vps. null: the repository this directory is in."
}

variable "haul_bin" {
  type        = string
  default     = "haul"
  description = "The haul executable the extra-files script runs (`haul hostkey export`). `haul rebuild` sets it to itself."
}

variable "haul_config" {
  type        = string
  default     = "/etc/haul/haul.toml"
  description = "haul's config file, whose host_keys_dir keeps the VPS's SSH host key. `haul rebuild` sets it to its own."
}

variable "haul_host" {
  type        = string
  default     = "vps"
  description = "The host's name in haul's config, whose kept host key the new server gets. `haul rebuild` sets it."
}
