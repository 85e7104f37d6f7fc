#!/bin/bash
# Build the cloudpipe image (qcow2) with diskimage-builder.
# Needs root, `pip install diskimage-builder`, and Debian's qemu-utils, kpartx,
# debootstrap. Output: cloudpipe.qcow2 in the current directory.
set -eu
set -o pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p cloudpiped --manifest-path "$root/Cargo.toml"
export ELEMENTS_PATH=$root/image-build/elements${ELEMENTS_PATH:+:$ELEMENTS_PATH}
export DIB_CLOUDPIPE_BIN_DIR=${DIB_CLOUDPIPE_BIN_DIR:-$root/target/release}
export DIB_CLOUDPIPE_CONFIGS_DIR=${DIB_CLOUDPIPE_CONFIGS_DIR:-$root/configs}
exec disk-image-create -o "${IMAGE_NAME:-cloudpipe}" -t qcow2 debian-minimal vm block-device-mbr cloudpipe "$@"
