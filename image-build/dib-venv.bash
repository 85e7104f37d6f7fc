# Sourced (not run) by scripts/build-image and image-build/check.sh: diskimage-builder
# from PyPI in a virtualenv, put first on PATH (its dib-lint also needs the venv's
# `python`). The venv is target/dib-venv; CLOUDPIPE_DIB_VERSION picks the release.

# dib_venv REPO_ROOT: create or update the venv when it lacks the pinned version.
dib_venv() {
    local venv=$1/target/dib-venv
    local version=${CLOUDPIPE_DIB_VERSION:-3.43.0}
    if [[ $("$venv/bin/disk-image-create" --version 2>/dev/null) != "$version" ]]; then
        # Debian's python3, whose venv module the python3-venv package provides.
        /usr/bin/python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "diskimage-builder==$version"
    fi
    export PATH=$venv/bin:$PATH
}
