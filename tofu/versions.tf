terraform {
  # OpenTofu 1.6 or later (Terraform 1.5+ reads it too).
  required_version = ">= 1.6.0"

  required_providers {
    hcloud = {
      source = "hetznercloud/hcloud"
      # 1.58 added `location` to primary IPs (Hetzner retired `datacenter`).
      version = "~> 1.58"
    }
  }
}
