# Defaults for the cloudpipe element (sourced, not executed).
_cloudpipe_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)
export DIB_CLOUDPIPE_BIN_DIR=${DIB_CLOUDPIPE_BIN_DIR:-$_cloudpipe_repo/target/release}
export DIB_CLOUDPIPE_CONFIGS_DIR=${DIB_CLOUDPIPE_CONFIGS_DIR:-$_cloudpipe_repo/configs}
unset _cloudpipe_repo

# Classic interface names, so the first NIC is eth0 on any hypervisor (the
# networkd file in static/ matches it). The bootloader element appends this
# variable to the kernel command line; keep its default and whatever was set.
case " ${DIB_BOOTLOADER_DEFAULT_CMDLINE:-} " in
    *" net.ifnames=0 "*) ;;
    *) export DIB_BOOTLOADER_DEFAULT_CMDLINE="${DIB_BOOTLOADER_DEFAULT_CMDLINE:-nofb nomodeset gfxpayload=text} net.ifnames=0" ;;
esac
# An appliance boots unattended: no 5 s boot menu.
export DIB_GRUB_TIMEOUT=${DIB_GRUB_TIMEOUT:-1}
# systemd-networkd configures the NIC, not ifupdown (which minbase lacks anyway).
export DIB_APT_MINIMAL_CREATE_INTERFACES=${DIB_APT_MINIMAL_CREATE_INTERFACES:-0}
