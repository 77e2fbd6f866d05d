#!/usr/bin/env bash
# Prints the vendorHash nixos/packages/haul.nix needs, without network:
# it does what buildGoModule's module derivation does with proxyVendor =
# true (nixpkgs pkgs/build-support/go/module.nix: `go mod download` with a
# fresh GOPATH, then cache/download without sumdb/ is the output) and
# hashes that tree as Nix hashes a recursive fixed output (`nix hash
# path`, SHA-256 of its NAR, in SRI form).
#
# The modules come from this machine's Go module cache (GOMODCACHE) used
# as a file:// proxy, so run `go mod download` first if it is cold; the
# files are the same bytes the module proxy serves. Needs go and nix
# (Debian's nix-bin is enough: no daemon, no store writes).
#
#   nixos/packages/vendor-hash.sh            # prints sha256-…
#   go test ./nixos/ -run VendorHash         # checks the committed value
set -euo pipefail
cd "$(dirname "$0")/../.."

work=$(mktemp -d "${TMPDIR:-/tmp}/haul-vendor-hash.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

cache=$(go env GOMODCACHE)
# As in the module derivation: its own GOPATH, no GOFLAGS from outside.
env -u GOFLAGS -u GONOSUMDB -u GONOPROXY -u GOPRIVATE \
	GOPATH="$work/go" GOMODCACHE="$work/go/pkg/mod" GOCACHE="$work/go-cache" \
	GOPROXY="file://$cache/cache/download" GOSUMDB=off \
	GO111MODULE=on GOTOOLCHAIN=local \
	go mod download
rm -rf "$work/go/pkg/mod/cache/download/sumdb"

mkdir -p "$work/nix/conf"
echo 'build-users-group =' >"$work/nix/conf/nix.conf"
NIX_CONF_DIR="$work/nix/conf" NIX_STATE_DIR="$work/nix/state" NIX_STORE_DIR="$work/nix/store" \
	NIX_LOG_DIR="$work/nix/log" XDG_CACHE_HOME="$work/nix/cache" HOME="$work" \
	nix --extra-experimental-features nix-command hash path --type sha256 "$work/go/pkg/mod/cache/download"
