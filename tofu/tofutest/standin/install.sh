#!/usr/bin/env bash
# The stand-in install (see main.tf). STANDIN_DIR is the test's directory;
# each run n writes args.n (the inputs), extra-files.n (the script's
# output) and root.n (what it produced), then, with STANDIN_WAIT set,
# creates up.n and waits for the test to create ready.n (the new machine
# answers). A file named fail in STANDIN_DIR makes the install fail.
set -euo pipefail
d="${STANDIN_DIR:?STANDIN_DIR is not set: the test sets it}"
n=$(($(cat "$d/installs" 2>/dev/null || echo 0) + 1))
echo "$n" >"$d/installs"
printf '%s\n' "$ARGUMENTS" >"$d/args.$n"
if [[ -e $d/fail ]]; then
	echo "stand-in nixos-anywhere: installing failed (injected by the test)" >&2
	exit 1
fi
script=$STANDIN_EXTRA_FILES_SCRIPT
mkdir -p "$d/root.$n"
if [[ -n $script ]]; then
	if [[ ! -x $script ]]; then
		echo "extra_files_script '$script' is not executable" >&2
		exit 1
	fi
	script=$(realpath "$script")
	(cd "$d/root.$n" && "$script") >"$d/extra-files.$n" 2>&1 || {
		cat "$d/extra-files.$n" >&2
		exit 1
	}
fi
echo "stand-in nixos-anywhere: install $n done"
if [[ -n ${STANDIN_WAIT:-} ]]; then
	: >"$d/up.$n"
	for ((i = 0; i < 1200; i++)); do
		if [[ -e $d/ready.$n ]]; then
			exit 0
		fi
		sleep 0.05
	done
	echo "stand-in nixos-anywhere: the test never brought the new machine up" >&2
	exit 3
fi
