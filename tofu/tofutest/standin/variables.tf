# The input variables of nixos-anywhere's terraform/all-in-one module at
# tag 1.13.0 (terraform/all-in-one/variables.tf), names, types and
# defaults, so a configuration that is valid against this stand-in passes
# the same inputs to the real module.
variable "kexec_tarball_url" {
  type    = string
  default = null
}

variable "nixos_partitioner_attr" {
  type = string
}

variable "nixos_system_attr" {
  type = string
}

variable "file" {
  type    = string
  default = null
}

variable "target_host" {
  type = string
}

variable "install_user" {
  type    = string
  default = null
}

variable "install_port" {
  type    = string
  default = null
}

variable "target_user" {
  type    = string
  default = "root"
}

variable "target_port" {
  type    = number
  default = 22
}

variable "instance_id" {
  type    = string
  default = null
}

variable "install_ssh_key" {
  type    = string
  default = null
}

variable "deployment_ssh_key" {
  type    = string
  default = null
}

variable "debug_logging" {
  type    = bool
  default = false
}

variable "stop_after_disko" {
  type    = bool
  default = false
}

variable "no_reboot" {
  type    = bool
  default = false
}

variable "phases" {
  type    = set(string)
  default = ["kexec", "disko", "install", "reboot"]
}

variable "extra_files_script" {
  type    = string
  default = null
}

variable "disk_encryption_key_scripts" {
  type = list(object({
    path   = string
    script = string
  }))
  default = []
}

variable "extra_environment" {
  type    = map(string)
  default = {}
}

variable "nix_options" {
  type    = map(string)
  default = {}
}

variable "nixos_generate_config_path" {
  type    = string
  default = ""
}

variable "nixos_facter_path" {
  type    = string
  default = ""
}

variable "special_args" {
  type    = any
  default = {}
}

variable "build_on_remote" {
  type    = bool
  default = false
}

variable "install_bootloader" {
  type    = bool
  default = false
}

variable "copy_host_keys" {
  type    = bool
  default = false
}
