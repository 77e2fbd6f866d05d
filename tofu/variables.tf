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
  default     = "cx22"
  description = "Hetzner Cloud server type (x86: nixosConfigurations.vps is x86_64-linux)."
}

variable "location" {
  type        = string
  default     = "fsn1"
  description = "Hetzner Cloud location of the server and its primary IPs (fsn1, nbg1, hel1, …). Primary IPs cannot move: changing it means new addresses."
}

variable "image" {
  type        = string
  default     = "debian-12"
  description = "Image the server boots first; nixos-anywhere kexecs into a NixOS installer from it and replaces it."
}

variable "homelab_cidrs" {
  type        = list(string)
  description = "Addresses allowed to reach SSH (22/tcp): the homelab's public address as /32 (and /128), from which the NAS pulls backups and admins deploy."

  validation {
    condition     = length(var.homelab_cidrs) > 0 && alltrue([for c in var.homelab_cidrs : !contains(["0.0.0.0/0", "::/0"], c)])
    error_message = "List the homelab's own addresses (e.g. 203.0.113.7/32); SSH must not be open to the world."
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
