#!/bin/bash
# Quick checks of the cloudpipe element, without building an image (scripts/test
# runs them): dib-lint (diskimage-builder's own element checks: README.rst, sorted
# element-deps, the hook preamble, indentation, YAML), what dib-lint does not check
# (two-digit hook prefixes, bash syntax, the files the element copies), and
# `systemd-analyze verify` of the unit with the image's drop-ins, and its
# sandboxing scored by `systemd-analyze security` (exposure under 2.0).
# Installs diskimage-builder into target/dib-venv when it is missing (needs
# python3-venv: scripts/install-deps image).
set -eu
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
el=$here/elements/cloudpipe
fail=0
err() { echo "image-build/check: $*" >&2; fail=1; }

# shellcheck source=dib-venv.bash
. "$here/dib-venv.bash"
dib_venv "$root"
# dib-lint checks $ELEMENTS_DIR and, for DIB's own tree, $LIB_DIR (none here).
nolib=$(mktemp -d)
trap 'rm -rf "$nolib"' EXIT
(cd "$here" && ELEMENTS_DIR=elements LIB_DIR=$nolib dib-lint >"$nolib/lint.log" 2>&1) \
    || { cat "$nolib/lint.log" >&2; err "dib-lint failed"; }

for hook in "$el"/extra-data.d/* "$el"/install.d/* "$el"/post-install.d/*; do
    name=${hook#"$el"/}
    [[ $(basename "$hook") =~ ^[0-9][0-9]- ]] || err "$name has no two-digit prefix"
    bash -n "$hook" || err "$name: bash syntax"
done
bash -n "$el/environment.d/10-cloudpipe.bash" || err "environment.d: bash syntax"
for script in "$root/scripts/build-image" "$root/scripts/image-smoke" "$here"/no-device-mapper/*; do
    bash -n "$script" || err "${script#"$root"/}: bash syntax"
done
# What extra-data.d copies must exist in the repository.
for f in configs/cloudpiped.service configs/sysctl.d/90-cloudpipe.conf \
    configs/sysusers.d/cloudpipe.conf configs/udev/61-cloudpipe-config-drive.rules; do
    [ -f "$root/$f" ] || err "$f (copied into the image) is missing"
done
# The unit's user is the one the element creates, and the udev rule hands the
# config drive to its group.
unit_user=$(sed -n 's/^User=//p' "$root/configs/cloudpiped.service")
sysusers_user=$(awk '$1 == "u" { print $2 }' "$root/configs/sysusers.d/cloudpipe.conf")
[ -n "$unit_user" ] && [ "$unit_user" = "$sysusers_user" ] \
    || err "the unit runs as '$unit_user' but sysusers.d/cloudpipe.conf creates '$sysusers_user'"
grep -q "GROUP=\"$unit_user\"" "$root/configs/udev/61-cloudpipe-config-drive.rules" \
    || err "61-cloudpipe-config-drive.rules does not give the config drive to group $unit_user"
# The defaults point where the repository puts things.
(
    set +u
    # shellcheck source=/dev/null
    . "$el/environment.d/10-cloudpipe.bash"
    [ "$DIB_CLOUDPIPE_CONFIGS_DIR" = "$root/configs" ] || { echo "image-build/check: DIB_CLOUDPIPE_CONFIGS_DIR defaults to $DIB_CLOUDPIPE_CONFIGS_DIR" >&2; exit 1; }
    [[ " $DIB_BOOTLOADER_DEFAULT_CMDLINE " == *" net.ifnames=0 "* ]] || { echo "image-build/check: the kernel command line lacks net.ifnames=0 (the networkd file matches eth0)" >&2; exit 1; }
) || fail=1
# The unit installed must be the one whose ExecStart the element installs.
grep -q '^ExecStart=/usr/local/bin/cloudpiped$' "$root/configs/cloudpiped.service" \
    || err "configs/cloudpiped.service does not run /usr/local/bin/cloudpiped (where install.d puts it)"

# systemd-analyze verify: the unit with the image's drop-ins beside it. The binary
# is not installed on this host, so ExecStart points at /bin/true (checked above);
# any message, warning included, fails.
unit=$nolib/unit
mkdir -p "$unit"
sed 's#^ExecStart=/usr/local/bin/cloudpiped$#ExecStart=/bin/true#' \
    "$root/configs/cloudpiped.service" >"$unit/cloudpiped.service"
cp -r "$el/static/etc/systemd/system/cloudpiped.service.d" "$unit/"
if ! out=$(systemd-analyze verify "$unit/cloudpiped.service" 2>&1) || [ -n "$out" ]; then
    echo "$out" >&2
    err "systemd-analyze verify cloudpiped.service (with the image's drop-ins) complained"
fi

# systemd-analyze security: the unit's sandboxing as systemd scores it (0 best,
# 10 worst; --threshold counts tenths). Offline: no systemd needs to run here.
max_exposure=19
if score=$(systemd-analyze security --offline=yes --threshold=$max_exposure \
    "$unit/cloudpiped.service" 2>&1); then
    exposure=$(grep -o 'Overall exposure level for [^:]*: [0-9.]*' <<<"$score" | awk '{print $NF}')
    echo "image-build/check: systemd-analyze security: exposure $exposure (at most ${max_exposure:0:1}.${max_exposure:1})"
else
    echo "$score" | grep -v '✓' >&2
    err "systemd-analyze security: cloudpiped.service is exposed above ${max_exposure:0:1}.${max_exposure:1}"
fi

[ $fail -eq 0 ] && echo "image-build/check: element ok (dib-lint, hooks, unit verified and scored)"
exit $fail
