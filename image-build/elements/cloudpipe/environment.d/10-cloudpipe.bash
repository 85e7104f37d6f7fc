# Defaults for the cloudpipe element (sourced, not executed).
_cloudpipe_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
export DIB_CLOUDPIPE_BIN_DIR=${DIB_CLOUDPIPE_BIN_DIR:-$_cloudpipe_repo/target/release}
export DIB_CLOUDPIPE_CONFIGS_DIR=${DIB_CLOUDPIPE_CONFIGS_DIR:-$_cloudpipe_repo/configs}
unset _cloudpipe_repo
