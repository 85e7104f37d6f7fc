#!/bin/bash
# Static checks of the cloudpipe element, fast and without building an image:
# required files, hook scripts executable with the DIB preamble and valid bash,
# element-deps sorted, the files the element copies exist; dib-lint when installed.
set -eu
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
el=$here/elements/cloudpipe
fail=0
err() { echo "image-build/check: $*" >&2; fail=1; }

for f in README.rst element-deps package-installs.yaml environment.d/10-cloudpipe.bash; do
    [ -f "$el/$f" ] || err "missing $f"
done
sort -c "$el/element-deps" 2>/dev/null || err "element-deps is not sorted"
for hook in "$el"/extra-data.d/* "$el"/install.d/* "$el"/post-install.d/*; do
    name=${hook#"$el"/}
    [ -x "$hook" ] || err "$name is not executable"
    [[ $(basename "$hook") =~ ^[0-9][0-9]- ]] || err "$name has no two-digit prefix"
    [ "$(head -n1 "$hook")" = "#!/bin/bash" ] || err "$name does not start with #!/bin/bash"
    grep -q 'DIB_DEBUG_TRACE' "$hook" || err "$name ignores DIB_DEBUG_TRACE"
    grep -qx 'set -eu' "$hook" || err "$name lacks set -eu"
    grep -qx 'set -o pipefail' "$hook" || err "$name lacks set -o pipefail"
    bash -n "$hook" || err "$name: bash syntax"
done
[ -x "$el/environment.d/10-cloudpipe.bash" ] && err "environment.d files are sourced, not executed"
bash -n "$el/environment.d/10-cloudpipe.bash" || err "environment.d: bash syntax"
bash -n "$here/build.sh" || err "build.sh: bash syntax"
# What extra-data.d copies must exist in the repository.
for f in configs/cloudpiped.service configs/sysctl.d/90-cloudpipe.conf; do
    [ -f "$root/$f" ] || err "$f (copied into the image) is missing"
done
# The defaults point where build.sh and the repository put things.
(
    set +u
    # shellcheck source=/dev/null
    . "$el/environment.d/10-cloudpipe.bash"
    [ "$DIB_CLOUDPIPE_CONFIGS_DIR" = "$root/configs" ] || { echo "image-build/check: DIB_CLOUDPIPE_CONFIGS_DIR defaults to $DIB_CLOUDPIPE_CONFIGS_DIR" >&2; exit 1; }
) || fail=1
# The unit installed must be the one whose ExecStart the element installs.
grep -q '^ExecStart=/usr/local/bin/cloudpiped' "$root/configs/cloudpiped.service" \
    || err "configs/cloudpiped.service does not run /usr/local/bin/cloudpiped"
if command -v dib-lint >/dev/null; then
    (cd "$here" && dib-lint) || fail=1
fi
[ $fail -eq 0 ] && echo "image-build/check: element ok"
exit $fail
