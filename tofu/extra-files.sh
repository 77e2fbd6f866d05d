#!/usr/bin/env bash
# nixos-anywhere's extra_files_script: it runs in an empty directory whose
# contents are copied to the new machine's /. Put the VPS's kept SSH host
# key at etc/ssh/, so the new machine answers with the key haul pins.
# tofu passes HAUL_BIN, HAUL_CONFIG and HAUL_HOST (main.tf, extra_environment).
set -euo pipefail
: "${HAUL_HOST:?HAUL_HOST is not set: main.tf passes var.haul_host}"
"${HAUL_BIN:-haul}" --config "${HAUL_CONFIG:-/etc/haul/haul.toml}" \
	hostkey export --host "$HAUL_HOST" --out .
