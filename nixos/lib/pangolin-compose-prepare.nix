# The start script of services.pangolin-compose (ExecStartPre and the
# first step of ExecReload): returns the script's text. The module wraps
# it in pkgs.writeShellScript; CI renders it through the module with
# ../tests/eval (no nixpkgs) and runs it against real data dirs.
#
# What it does, in order, on <dataDir>/config:
#
# 1. Creates the directories Pangolin and Traefik expect, leaving the
#    modes of anything a restore brought back alone.
# 2. Makes sure there is a server secret in secretFile, never a new one
#    for existing data:
#    - secretFile present and non-empty: use it;
#    - else config.yml has server.secret (Pangolin's installer writes it
#      inline there): take that one, write secretFile (0600);
#    - else, if config/db/db.sqlite exists: fail, saying what to restore
#      (Pangolin encrypted values in that database with the old secret);
#    - else generateSecret: make one (a fresh install), or fail.
# 3. Renders config.yml: the file already there (if any), merged with the
#    module's settings (jq's `*`: objects merge key by key, the module's
#    value wins for every key it sets, lists and scalars are replaced
#    whole), then server.secret from secretFile. Keys the module does not
#    set (email/SMTP, anything else the installer or an operator wrote)
#    are kept. It fails if the secret placeholder is anywhere in the
#    result.
# 4. Renders Traefik's traefik_config.yml and dynamic_config.yml the same
#    way (extra middlewares, routers, … in those files are kept).
# 5. Keeps letsencrypt/acme.json 0600 (Traefik refuses it otherwise).
#
# Every file is written to a temporary name in the same directory and
# renamed, so a failed start leaves the previous file as it was.
{
  lib,
  dataDir,
  secretFile,
  generateSecret,
  secretPlaceholder,
  # Packages whose bin/ make the script's PATH (coreutils, grep, yq, jq).
  path,
  # The yq executable (kislyuk's yq: jq over YAML; pkgs.yq in nixpkgs).
  yq,
  configTemplate,
  traefikStatic,
  traefikDynamic,
}:
let
  q = lib.escapeShellArg;
in
''
  set -euo pipefail
  umask 077
  export PATH=${q (lib.makeBinPath path)}
  yq=${q yq}
  d=${q dataDir}/config
  secret=${q secretFile}
  placeholder=${q secretPlaceholder}
  say() { printf 'pangolin-compose: %s\n' "$*" >&2; }

  for dir in "$d" "$d/db" "$d/logs" "$d/letsencrypt" "$d/traefik" "$d/traefik/logs"; do
    [ -d "$dir" ] || install -d -m 0750 "$dir"
  done

  # --- 2. the server secret ---------------------------------------------
  if [ ! -s "$secret" ]; then
    inline=""
    if [ -s "$d/config.yml" ]; then
      if ! inline=$("$yq" -r '.server.secret // empty | tostring' "$d/config.yml"); then
        say "$d/config.yml is not valid YAML; fix or restore it (it holds server.secret on an installer-made host)"
        exit 1
      fi
    fi
    if [ -n "$inline" ] && [ "$inline" != "$placeholder" ]; then
      # Pangolin's installer keeps the secret inline in config.yml: keep
      # using exactly that one, from a file of its own from now on.
      [ -d "$(dirname "$secret")" ] || install -d -m 0700 "$(dirname "$secret")"
      printf '%s' "$inline" >"$secret.tmp"
      chmod 0600 "$secret.tmp"
      mv -f "$secret.tmp" "$secret"
      say "took server.secret from $d/config.yml into $secret"
    elif [ -e "$d/db/db.sqlite" ]; then
      say "$d/db/db.sqlite exists but there is no server secret: $secret is missing or empty and $d/config.yml has no server.secret."
      say "Pangolin encrypted values in that database with its secret; a new one would make them unreadable, so none is generated."
      say "Restore config/server-secret (or the config.yml holding server.secret) from the same backup as the database, then start again."
      exit 1
    else
      ${
        if generateSecret then
          ''
            # First start with no data at all: make the secret once. It
            # lives with the data, so backups carry it.
            [ -d "$(dirname "$secret")" ] || install -d -m 0700 "$(dirname "$secret")"
            od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secret.tmp"
            chmod 0600 "$secret.tmp"
            mv -f "$secret.tmp" "$secret"
            say "generated a new server secret in $secret (no data yet)"
          ''
        else
          ''
            say "$secret is missing or empty; put Pangolin's server secret there or set services.pangolin-compose.generateSecret = true"
            exit 1
          ''
      }
    fi
  fi

  # --- 3./4. the config files -------------------------------------------
  # render TARGET TEMPLATE [jq filter applied after the merge] [jq args…]
  render() {
    local target=$1 template=$2 post=$3
    shift 3
    local tmp
    tmp=$(mktemp "$target.XXXXXX")
    if [ -s "$target" ]; then
      if ! "$yq" -y -s "$@" "(.[0] // {}) * .[1] | $post" "$target" "$template" >"$tmp"; then
        rm -f "$tmp"
        say "could not merge $target with the module's settings (is it valid YAML with a mapping at the top?)"
        exit 1
      fi
    elif ! "$yq" -y "$@" ". | $post" "$template" >"$tmp"; then
      rm -f "$tmp"
      say "could not render $target"
      exit 1
    fi
    printf '%s\n' "$tmp"
  }

  tmp=$(render "$d/config.yml" ${q configTemplate} '.server.secret = ($secret | rtrimstr("\n"))' --rawfile secret "$secret")
  chmod 0600 "$tmp"
  if grep -qF -- "$placeholder" "$tmp"; then
    rm -f "$tmp"
    say "the rendered config.yml still holds the secret placeholder $placeholder; refusing to start Pangolin without its secret"
    exit 1
  fi
  mv -f "$tmp" "$d/config.yml"

  tmp=$(render "$d/traefik/traefik_config.yml" ${q traefikStatic} '.')
  chmod 0644 "$tmp"
  mv -f "$tmp" "$d/traefik/traefik_config.yml"
  tmp=$(render "$d/traefik/dynamic_config.yml" ${q traefikDynamic} '.')
  chmod 0644 "$tmp"
  mv -f "$tmp" "$d/traefik/dynamic_config.yml"

  # --- 5. acme.json ------------------------------------------------------
  [ -e "$d/letsencrypt/acme.json" ] || install -m 0600 /dev/null "$d/letsencrypt/acme.json"
  chmod 0600 "$d/letsencrypt/acme.json"
''
