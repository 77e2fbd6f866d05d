# This file is maintained automatically by "tofu init".
# Manual edits may be lost in future updates.

provider "registry.opentofu.org/hashicorp/external" {
  version     = "2.3.5"
  constraints = "~> 2.3"
}

provider "registry.opentofu.org/hashicorp/null" {
  version     = "3.2.4"
  constraints = "~> 3.2"
}

provider "registry.opentofu.org/hetznercloud/hcloud" {
  version     = "1.68.0"
  constraints = "~> 1.68"
}
