# A stand-in for nixos-anywhere's terraform/all-in-one module (tag 1.13.0)
# for tests: nixos-anywhere runs `nix build` at plan time and installs
# over SSH, neither of which can run here. Like the real module's install
# step (terraform/install/main.tf), one resource is replaced whenever
# instance_id changes and runs a local-exec with the module's inputs as
# ARGUMENTS (JSON) and extra_environment in its environment. Its script
# (install.sh) records the inputs, runs extra_files_script for real the way
# run-nixos-anywhere.sh does (in an empty directory, which becomes the
# new machine's /), and hands that directory to the test, which brings up
# the "new VPS".
resource "terraform_data" "install" {
  triggers_replace = var.instance_id

  provisioner "local-exec" {
    environment = merge({
      ARGUMENTS = jsonencode({
        nixos_system_attr      = var.nixos_system_attr
        nixos_partitioner_attr = var.nixos_partitioner_attr
        target_host            = var.target_host
        target_user            = var.target_user
        target_port            = var.target_port
        instance_id            = var.instance_id
        install_ssh_key_set    = var.install_ssh_key != null
        extra_files_script     = var.extra_files_script
        phases                 = join(",", sort(tolist(var.phases)))
        extra_environment_keys = sort(keys(var.extra_environment))
      })
      STANDIN_EXTRA_FILES_SCRIPT = var.extra_files_script == null ? "" : var.extra_files_script
    }, var.extra_environment)
    command = "${path.module}/install.sh"
  }
}

output "result" {
  description = "Stands in for the real module's output (the system build's result)."
  value       = { out = "/nix/store/00000000000000000000000000000000-nixos-system-vps" }
}
