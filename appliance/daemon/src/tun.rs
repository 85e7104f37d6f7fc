//! The tunnel's TUN device. tun-rs only creates it (its address-management feature
//! is off); MTU, link state and routes are set through [`crate::netconf`].

/// Name of the TUN device on the appliance.
pub const DEFAULT_NAME: &str = "cloudpipe0";

/// Create the TUN device `name` (layer 3, no packet information header). The device
/// lives as long as the returned handle: a crash leaves nothing behind.
pub fn create(name: &str) -> anyhow::Result<tun_rs::SyncDevice> {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .build_sync()
        .map_err(|e| anyhow::anyhow!("creating TUN device {name}: {e}"))
}
