//! Command-line definitions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "cloudpipe",
    version,
    about = "Create and run WireGuard cloudpipes for tenant networks",
    long_about = "Create a tenant network's cloudpipe (the VPN appliance VM), manage its clients \
                  (standard WireGuard configs, QR codes), build the boot payload for \
                  `openstack server create --user-data`, and print the Neutron commands that \
                  launch it. State lives in a state directory, one folder per network.",
    after_long_help = "A first network:\n  \
        cloudpipe network create demo --cidr 10.0.0.0/24 --endpoint 203.0.113.10\n  \
        cloudpipe client add demo alice --output demo.conf  # wg-quick up ./demo.conf\n  \
        cloudpipe client add demo,other bob                 # one tunnel, two networks\n  \
        cloudpipe client add demo carol --public-key KEY    # a key made on carol's device\n  \
        cloudpipe openstack demo                            # the commands that launch it\n\n\
        State: --state-dir or CLOUDPIPE_STATE_DIR (default /var/lib/cloudpipe, root's).\n\n\
        Exit status: 0 on success, 1 on an error (one line on standard error), 2 on a \
        usage error."
)]
pub struct Cli {
    /// State directory (one folder per network; secrets inside are mode 0600).
    #[arg(long, global = true, env = "CLOUDPIPE_STATE_DIR", default_value = crate::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Networks: create, import from Nova, list, show, delete.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Clients: add (prints a wg-quick config), list, show, revoke.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Print the boot payload (user-data), or inspect one.
    ///
    /// Printing a network's payload records its active clients as the baseline the
    /// appliance boots with: later client changes are published as instance
    /// properties (`cloudpipe publish`), and clients revoked before it hold no
    /// address any more. Refused when Nova's 65535-byte user-data limit is exceeded
    /// (the error says how many clients fit).
    Payload(PayloadArgs),
    /// Print the instance-property commands that publish client changes to a running
    /// appliance; --done records that they were run.
    Publish(PublishArgs),
    /// Print the OpenStack (Neutron) commands that launch the network's cloudpipe.
    Openstack(OpenstackArgs),
    /// Bring up a WireGuard client from a wg-quick file, in the foreground.
    ///
    /// The interface is named after the file (alice.conf: alice), gets the file's
    /// Address, MTU (default 1420), a route per AllowedIPs (unless Table = off) and
    /// DNS (through resolvconf), and runs on cloudpipe's forwarding core (userspace,
    /// no kernel WireGuard needed). Stops on Ctrl-C, SIGTERM or `cloudpipe down`,
    /// removing what it added. Root (or CAP_NET_ADMIN). As a service:
    /// configs/cloudpipe-up@.service.
    Up(UpArgs),
    /// Take down what `cloudpipe up CONFIG` brought up.
    Down(DownArgs),
    /// Live tunnel details: network, public endpoint, server key, tunnel MTU, pool
    /// use, and per client name, address, endpoint, latest handshake, transfer and
    /// state (online, idle, never connected, revoked).
    ///
    /// On the appliance (as root), from the daemon's control socket. With --all, on
    /// the tenant's side: every network of the state directory, the stored clients
    /// merged with what each appliance serves on its tenant address (`network create
    /// --status-port`; reachable from a tenant VM or through the tunnel); networks
    /// that cannot be reached are named, with why, and shown as stored.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Every network of the state directory, live where its appliance is reachable.
    #[arg(long)]
    pub all: bool,
    /// Print JSON: the appliance's status document; with --all, one report per
    /// network (reachable, error, live, merged clients).
    #[arg(long)]
    pub json: bool,
    /// The appliance daemon's control socket (cloudpiped --control-dir/--tun-name).
    #[arg(
        long,
        env = "CLOUDPIPE_SOCKET",
        default_value = "/var/run/wireguard/cloudpipe0.sock",
        value_name = "PATH",
        conflicts_with = "all"
    )]
    pub socket: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// The wg-quick file (what `cloudpipe client add` writes).
    pub config: PathBuf,
    /// Worker queues, each a TUN queue and a UDP socket with two threads (0: one per CPU).
    #[arg(long, env = "CLOUDPIPE_WORKERS", default_value_t = 0, value_name = "N")]
    pub workers: usize,
    /// TUN offloads (TCP segmentation and coalescing); `false` moves one packet per
    /// read and write.
    #[arg(long, default_value_t = true, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub offload: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The wg-quick file given to `cloudpipe up`.
    pub config: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct NetworkOptions {
    /// Tenant subnet, e.g. 10.0.0.0/24.
    #[arg(long)]
    pub cidr: String,
    /// Subnet gateway [default: first host, .1].
    #[arg(long)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// The appliance's address [default: second host, .2].
    #[arg(long)]
    pub address: Option<std::net::Ipv4Addr>,
    /// Size of the client pool: the top N addresses below broadcast (Nova's rule).
    #[arg(long, default_value_t = 5)]
    pub clients: u32,
    /// A route pushed to clients (Nova's dmz_net/dmz_mask); repeat for more.
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// A DNS server for clients; repeat for more.
    #[arg(long = "dns")]
    pub dns: Vec<std::net::Ipv4Addr>,
    /// Where clients connect: the floating IP or name, HOST[:PORT] (port default: --port).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// proxy-arp: clients appear in the tenant subnet (needs allowed-address-pairs);
    /// masquerade: clients leave with the appliance's address.
    #[arg(long, default_value = "proxy-arp")]
    pub mode: cloudpipe_core::config::Mode,
    /// Let clients reach each other (Nova's client-to-client).
    #[arg(long)]
    pub client_to_client: bool,
    /// The tenant network's MTU, as `openstack network show -c mtu NETWORK` prints it
    /// (ML2/OVS with VXLAN: 1450; OVN with Geneve: 1442; flat or VLAN: 1500). Clients'
    /// configs get it less 80 bytes of WireGuard overhead; 1450 also fits 1500.
    #[arg(long, default_value_t = cloudpipe_core::config::DEFAULT_TENANT_MTU)]
    pub mtu: u16,
    /// UDP listen port.
    #[arg(long, default_value_t = cloudpipe_core::config::DEFAULT_LISTEN_PORT)]
    pub port: u16,
    /// Serve live status (JSON) and Prometheus metrics over HTTP on this TCP port of
    /// the appliance's tenant address, for the tenant subnet and tunnel clients
    /// (`cloudpipe status --all`, `network show --live`) [default: off].
    #[arg(long, value_name = "PORT")]
    pub status_port: Option<u16>,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network's cloudpipe: server key, client pool, routes. The whole
    /// configuration is checked as the appliance will check it before anything is
    /// written; an existing name is refused.
    Create {
        /// The network's name: 1-32 of A-Z a-z 0-9 . _ - (not starting with . or -).
        name: String,
        #[command(flatten)]
        opts: NetworkOptions,
    },
    /// Create a network equivalent to a Nova cloudpipe payload (any encoding): its
    /// client count becomes the pool size, its DMZ route a pushed route.
    ImportNova {
        /// The new network's name.
        name: String,
        /// Tenant subnet (Nova's payload does not carry it).
        #[arg(long)]
        cidr: String,
        /// Where clients connect, HOST[:PORT].
        #[arg(long)]
        endpoint: Option<String>,
        /// Size of the client pool when the payload has none (later Nova releases
        /// default `cnt_vpn_clients` to 0) [default: 5]; given, it replaces the
        /// payload's.
        #[arg(long)]
        clients: Option<u32>,
        /// The tenant network's MTU (`openstack network show -c mtu NETWORK`).
        #[arg(long, default_value_t = cloudpipe_core::config::DEFAULT_TENANT_MTU)]
        mtu: u16,
        /// The Nova payload file (any encoding), or - for standard input.
        file: PathBuf,
    },
    /// List networks: name, subnet, appliance address, clients, endpoint.
    List,
    /// Show a network's tunnel details (never private keys).
    Show {
        /// The network.
        name: String,
        /// Also ask the appliance (its status listener, `--status-port`) who is
        /// connected: latest handshake, transfer, state per client.
        #[arg(long)]
        live: bool,
    },
    /// Set where clients connect: the floating IP or a name, HOST[:PORT].
    SetEndpoint {
        /// The network.
        name: String,
        /// HOST[:PORT]; the port defaults to the network's listen port.
        endpoint: String,
    },
    /// Delete a network and every key it holds.
    Delete {
        /// The network.
        name: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Add a client: next free pool address, new keys; prints its wg-quick config on
    /// standard output. The client's keys are kept (mode 0600) so `client show
    /// --config` can print the config again.
    Add {
        /// The network (see `cloudpipe network list`), or several separated by commas
        /// (`web,db`): one tunnel, one key pair, a [Peer] for each appliance.
        #[arg(value_name = "NETWORK[,NETWORK...]")]
        network: String,
        /// The client's name: 1-32 of A-Z a-z 0-9 . _ - (not starting with . or -).
        /// A client of that name in other networks joins these with the same key, and
        /// the config printed reaches all of its networks.
        name: String,
        /// Register a public key made on the client's own device (`wg genkey | wg
        /// pubkey`, or the WireGuard app) instead of making a key pair: the private key
        /// never leaves the device, and the config printed has a placeholder for it.
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        /// Write the config to FILE (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        to: ConfigOutputs,
    },
    /// List a network's clients: name, address, status, the networks each is a client
    /// of, public key.
    List {
        /// The network.
        network: String,
    },
    /// Show a client; --config (or --qr, --qr-png) gives its credentials again: the
    /// same wg-quick config `client add` gave, while the client is active.
    Show {
        /// The network.
        network: String,
        /// The client.
        name: String,
        /// Print the client's wg-quick config (with its private key) instead; --qr
        /// and --qr-png imply it.
        #[arg(long)]
        config: bool,
        #[command(flatten)]
        to: ConfigOutputs,
    },
    /// Revoke a client. Once a payload was printed, its address returns to the pool
    /// only when the revocation is published (`cloudpipe publish NETWORK --done`);
    /// before that, at once.
    Revoke {
        /// The network.
        network: String,
        /// The client.
        name: String,
    },
}

/// The QR code forms of a client config, for the mobile apps.
#[derive(Args, Debug)]
pub struct ConfigOutputs {
    /// Print the config as a QR code in the terminal instead of as text.
    #[arg(long)]
    pub qr: bool,
    /// Write the config as a QR code PNG (mode 0600: it holds the private key)
    /// instead of printing it as text.
    #[arg(long, value_name = "FILE")]
    pub qr_png: Option<PathBuf>,
    /// Replace a file that is already there (the --qr-png file, and `client add`'s
    /// --output); without it that is an error, and nothing changes.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PayloadArgs {
    #[command(subcommand)]
    pub inspect: Option<PayloadCmd>,
    /// The network whose payload to print.
    pub network: Option<String>,
    /// nova: what Nova's API takes (base64 twice); guest: what `openstack server
    /// create --user-data FILE` takes and the guest reads (base64, 76 columns);
    /// zip: the raw zip (config drive; needs --output).
    #[arg(long, default_value = "guest")]
    pub encoding: cloudpipe_core::payload::Encoding,
    /// Write to FILE (mode 0600: the payload holds the server's private key)
    /// instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum PayloadCmd {
    /// Decode a payload in any encoding and print it with secrets redacted, and
    /// whether it validates (exit status 1 if not, naming the field). A Nova
    /// payload prints what was found and how to import it.
    Inspect {
        /// The payload file, or - for standard input.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The network.
    pub network: String,
    /// Record that the printed commands were run: revoked clients' addresses return
    /// to the pool (before a payload was printed, revocation frees them at once).
    #[arg(long)]
    pub done: bool,
    /// Print the cloudpipe properties the instance should have, as a JSON object.
    #[arg(long, conflicts_with = "done")]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct OpenstackArgs {
    /// The network.
    pub network: String,
    /// Image with cloudpiped baked in.
    #[arg(long, default_value = "cloudpipe")]
    pub image: String,
    #[arg(long, default_value = "m1.small")]
    pub flavor: String,
    /// Neutron network (name or ID) [default: the cloudpipe network's name].
    #[arg(long)]
    pub network_id: Option<String>,
    /// External network for the floating IP.
    #[arg(long, default_value = "public")]
    pub external_network: String,
    /// Print the same recipe as JSON (Neutron's field names: security group and
    /// rules, port with fixed IP and allowed address pairs, allocation pools,
    /// floating IP, server with user-data).
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn state_dir_is_global() {
        for args in [
            &["cloudpipe", "--state-dir", "/s", "network", "list"][..],
            &["cloudpipe", "network", "list", "--state-dir", "/s"][..],
            &["cloudpipe", "network", "--state-dir", "/s", "list"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.state_dir, PathBuf::from("/s"), "{args:?}");
        }
    }

    #[test]
    fn network_create_defaults_follow_nova() {
        let cli = Cli::try_parse_from([
            "cloudpipe",
            "network",
            "create",
            "n",
            "--cidr",
            "10.0.0.0/24",
        ])
        .unwrap();
        let Command::Network(NetworkCmd::Create { opts, .. }) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(opts.clients, 5);
        assert_eq!(opts.port, 1194);
        assert_eq!(opts.mode, cloudpipe_core::config::Mode::ProxyArp);
        assert!(!opts.client_to_client);
    }

    #[test]
    fn payload_takes_a_network_or_inspect() {
        let cli = Cli::try_parse_from(["cloudpipe", "payload", "n", "--encoding", "nova"]).unwrap();
        let Command::Payload(p) = cli.command else {
            panic!()
        };
        assert_eq!(p.network.as_deref(), Some("n"));
        assert_eq!(p.encoding, cloudpipe_core::payload::Encoding::Nova);
        let cli = Cli::try_parse_from(["cloudpipe", "payload", "inspect", "-"]).unwrap();
        let Command::Payload(p) = cli.command else {
            panic!()
        };
        assert!(matches!(p.inspect, Some(PayloadCmd::Inspect { .. })));
        assert!(Cli::try_parse_from(["cloudpipe", "payload", "n", "--encoding", "rar"]).is_err());
    }

    #[test]
    fn publish_json_and_done_exclude_each_other() {
        let e = Cli::try_parse_from(["cloudpipe", "publish", "n", "--json", "--done"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
