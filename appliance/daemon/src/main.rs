//! `cloudpiped`, the cloudpipe appliance daemon.
//!
//! At boot it finds the payload (config drive, metadata service, or `--payload`),
//! checks it, configures the VM's tenant interface, forwarding, the `cloudpipe0` TUN
//! and proxy ARP or NAT, then terminates WireGuard on UDP 1194 until SIGTERM, taking
//! client changes from instance properties and from `wg` (the control socket)
//! without a restart. See run.rs for the order of things; this file only parses
//! flags and sets up logging.

mod backoff;
mod configdrive;
mod control;
mod dad;
mod http;
mod mtu;
mod nat;
mod notify;
mod plumbing;
mod privileges;
mod run;
mod source;
mod supervisor;
mod tunnel;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The cloudpipe appliance daemon: boots from the payload and serves WireGuard.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit status: 0 clean stop (SIGTERM/SIGINT), 1 failure, 2 payload rejected, \
                  3 no payload (404 or empty config drive), 4 metadata service not usable \
                  within --boot-timeout. SIGHUP re-reads the payload and instance properties; SIGUSR1 logs one status line per peer; SIGTERM and SIGINT stop within 2 s, removing the TUN device, proxy entries, NAT rules and the control socket.\n\nWhile serving, a TUN device deleted from under the daemon is created again with every session kept (three times a minute at most, then exit status 1), and a tenant NIC or TUN device that goes down and up gets back its address, default route, proxy entries and routes.\n\nThe control socket (--control-dir/<tun-name>.sock) speaks WireGuard's userspace API: stock `wg show`, `wg set`, `wg syncconf` work against it. `cloudpipe status` reads the same socket."
)]
struct Args {
    /// Read the payload from this file (any encoding) instead of the config drive or
    /// the metadata service.
    #[arg(long, env = "CLOUDPIPED_PAYLOAD", value_name = "FILE")]
    payload: Option<PathBuf>,

    /// Config drive: `auto` (a block device labelled config-2), `none`, or a device,
    /// image file or mounted directory.
    #[arg(
        long,
        env = "CLOUDPIPED_CONFIG_DRIVE",
        default_value = "auto",
        value_name = "auto|none|PATH"
    )]
    config_drive: source::ConfigDrive,

    /// Base URL of the metadata service.
    #[arg(long, env = "CLOUDPIPED_METADATA_URL", default_value = "http://169.254.169.254", value_parser = parse_url)]
    metadata_url: http::Url,

    /// Seconds to keep retrying the metadata service at boot before giving up.
    #[arg(long, env = "CLOUDPIPED_BOOT_TIMEOUT", default_value = "120", value_parser = parse_secs, value_name = "SECS")]
    boot_timeout: Duration,

    /// Seconds one metadata request may take, body included.
    #[arg(long, env = "CLOUDPIPED_REQUEST_TIMEOUT", default_value = "5", value_parser = parse_secs, value_name = "SECS")]
    request_timeout: Duration,

    /// Seconds between polls of meta_data.json for added and revoked clients (0: off).
    #[arg(long, env = "CLOUDPIPED_POLL_INTERVAL", default_value = "10", value_parser = parse_secs, value_name = "SECS")]
    poll_interval: Duration,

    /// Name of the TUN device.
    #[arg(long, env = "CLOUDPIPED_TUN_NAME", default_value = tunnel::DEFAULT_TUN_NAME)]
    tun_name: String,

    /// Directory of the control socket `<tun-name>.sock` (the `wg` UAPI, mode
    /// 0600); `wg` looks in /var/run/wireguard.
    #[arg(long, env = "CLOUDPIPED_CONTROL_DIR", default_value = control::socket::DEFAULT_DIR, value_name = "DIR")]
    control_dir: PathBuf,

    /// Data-path worker queues, each a TUN queue and a UDP socket with two threads
    /// (0: one per CPU).
    #[arg(
        long,
        env = "CLOUDPIPED_WORKERS",
        default_value = "0",
        value_name = "N"
    )]
    workers: usize,

    /// TUN offloads (IFF_VNET_HDR: TCP segmentation and coalescing); `false` moves
    /// one packet per read and write.
    #[arg(long, env = "CLOUDPIPED_TUN_OFFLOAD", default_value = "true", value_name = "BOOL", action = clap::ArgAction::Set)]
    tun_offload: bool,

    /// Private directory for mounting a vfat config drive while it is read.
    #[arg(
        long,
        env = "CLOUDPIPED_RUNTIME_DIR",
        default_value = "/run/cloudpiped"
    )]
    runtime_dir: PathBuf,

    /// Who to run as after set-up, when started as root: a user name or UID:GID.
    /// The process then keeps CAP_NET_ADMIN only. `root` keeps uid 0 (with
    /// CAP_NET_ADMIN only). Started as another user (the systemd unit's User=, with
    /// CAP_NET_ADMIN as an ambient capability) there is nothing to switch.
    /// [default when root: cloudpipe]
    #[arg(long, env = "CLOUDPIPED_USER", value_name = "USER")]
    user: Option<String>,

    /// Keep root and every capability after set-up (debugging only).
    #[arg(long, env = "CLOUDPIPED_KEEP_PRIVILEGES")]
    keep_privileges: bool,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `cloudpiped=debug`.
    #[arg(long, env = "CLOUDPIPED_LOG", default_value = "info")]
    log: String,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_url(s: &str) -> Result<http::Url, String> {
    http::Url::parse(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // boringtun reports a client that went away (session expiry) at ERROR, once per
    // client: normal life for a VPN server, and our own counters and peer status say
    // it better. Silence it unless the filter names boringtun.
    let directives = if args.log.contains("boringtun") {
        args.log.clone()
    } else {
        format!("{},boringtun=off", args.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,boringtun=off"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    // Under systemd the journal stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
    let settings = run::Settings {
        sources: source::Sources {
            payload_file: args.payload,
            config_drive: args.config_drive,
            metadata_url: args.metadata_url,
            boot_timeout: args.boot_timeout,
            request_timeout: args.request_timeout,
            mount_dir: args.runtime_dir.join("config-2"),
        },
        poll_interval: args.poll_interval,
        tun_name: args.tun_name,
        control_dir: args.control_dir,
        data_path: tunnel::DataPath {
            workers: args.workers,
            offload: args.tun_offload,
        },
        keep_privileges: args.keep_privileges,
        user: None,
    };
    // Resolved before anything is touched: a missing user is a usage error.
    // Resolved before anything is touched. Started unprivileged (the unit's User=)
    // there is nobody to become unless --user names one (which must be us).
    let name = match args.user {
        Some(u) => Some(u),
        None if nix::unistd::geteuid().is_root() => Some(privileges::DEFAULT_USER.to_string()),
        None => None,
    };
    let user = match name.filter(|_| !args.keep_privileges) {
        None => None,
        Some(n) => match privileges::RunAs::parse(&n) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::from(run::exit::FAILURE);
            }
        },
    };
    run::main(run::Settings { user, ..settings })
}
