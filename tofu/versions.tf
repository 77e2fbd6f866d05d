terraform {
  # The provider is tested with the OpenTofu releases supported upstream,
  # 1.10 to 1.12 at v1.68.0 (its .github/workflows/test.yml), and Terraform
  # 1.14 and 1.15. CI builds OpenTofu 1.12.6 (.ci/build-tofu).
  required_version = ">= 1.10.0"

  required_providers {
    hcloud = {
      source = "hetznercloud/hcloud"
      # 1.67 removed `datacenter` from servers and primary IPs (Hetzner
      # retired it); `location` and the per-location server type
      # availability used in main.tf are there. CI builds 1.68.0.
      version = "~> 1.68"
    }
  }
}
