//! `cloudpipe network ...`: create (or import from Nova), list, show, set-endpoint,
//! delete.

use super::{count, open, read_payload, table};
use crate::cli::{NetworkCmd, NetworkOptions};
use crate::model::{build_config, server_key_path, Network, NetworkFile, Status};
use crate::state::{self, StateDir};
use anyhow::{bail, Context, Result};
use cloudpipe_core::client_config::{endpoint_route, EndpointRoute};
use cloudpipe_core::config::{
    check_name, parse_cidr, tunnel_mtu, Config, ConfigError, Mode, MAX_MTU, MIN_MTU,
    WIREGUARD_OVERHEAD,
};
use cloudpipe_core::keys::PrivateKey;
use cloudpipe_core::neutron::{allowed_address_pairs, cover, MAX_ALLOWED_ADDRESS_PAIRS};
use cloudpipe_core::payload::{self, Payload};
use cloudpipe_core::pool::Pool;
use std::net::Ipv4Addr;

pub fn run(state: &StateDir, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create { name, opts } => create(state, &name, &opts, Origin::Create),
        NetworkCmd::ImportNova {
            name,
            cidr,
            endpoint,
            clients,
            mtu,
            file,
        } => import_nova(state, &name, cidr, endpoint, clients, mtu, &file),
        NetworkCmd::List => {
            let _lock = state.lock()?;
            // One unreadable network does not hide the others.
            let mut unreadable = 0;
            let mut rows = Vec::new();
            for name in state.networks()? {
                let row = Network::open(state.network_dir(&name)).and_then(|net| {
                    let active = net
                        .clients
                        .iter()
                        .filter(|c| c.status == Status::Active)
                        .count();
                    Ok(vec![
                        name.clone(),
                        net.file.cidr.clone(),
                        net.file.address.to_string(),
                        format!("{active} of {}", net.config()?.pool.len()),
                        net.file.endpoint.clone().unwrap_or_else(|| "(none)".into()),
                    ])
                });
                match row {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        eprintln!("cloudpipe: network {name}: {e:#}");
                        unreadable += 1;
                    }
                }
            }
            if rows.is_empty() && unreadable == 0 {
                eprintln!(
                    "no networks yet: create one with `cloudpipe network create NAME --cidr SUBNET --endpoint FLOATING_IP`"
                );
            } else if !rows.is_empty() {
                print!(
                    "{}",
                    table(
                        &["NETWORK", "SUBNET", "APPLIANCE", "CLIENTS", "ENDPOINT"],
                        &rows
                    )?
                );
            }
            if unreadable > 0 {
                bail!(
                    "{} could not be read",
                    count(unreadable, "network", "networks")
                );
            }
            Ok(())
        }
        NetworkCmd::Show { name, live } => {
            let stored = {
                let net = open(state, &name)?;
                show(&net)?;
                super::status::Stored::from(&net)
            };
            if live {
                // The network's lock is released while the appliance is asked.
                let r = super::status::report(stored);
                println!();
                print!("{}", super::status::render_report(&r));
                if !r.reachable {
                    anyhow::bail!(
                        "the appliance of {name} is not reachable: {}",
                        r.error.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        NetworkCmd::SetEndpoint { name, endpoint } => {
            let mut net = open(state, &name)?;
            let endpoint = normalize_endpoint(&endpoint, net.file.listen_port)?;
            check_endpoint(&endpoint, &net.config()?, &Origin::SetEndpoint)?;
            let old = net.file.endpoint.replace(endpoint.clone());
            state::write_json(&net.dir.join("network.json"), &net.file, 0o600)?;
            eprintln!("clients of {name} connect to {endpoint}");
            let active = net.clients.iter().filter(|c| c.status == Status::Active);
            if old.is_some_and(|o| o != endpoint) && active.count() > 0 {
                eprintln!(
                    "existing clients' configs name the old endpoint: give them new ones \
                     (`cloudpipe client show {name} NAME --config`)"
                );
            }
            Ok(())
        }
        NetworkCmd::Delete { name, yes } => {
            check_name(&name).map_err(|r| anyhow::anyhow!("network name {name:?}: {r}"))?;
            let _lock = state.lock()?;
            let net = Network::open(state.network_dir(&name))?;
            if !yes {
                bail!("this deletes network {name:?} and all its keys; run again with --yes");
            }
            let dir = net.dir.clone();
            // Still holding the network's lock: its lock file goes with the folder.
            state::remove_dir_atomic(&dir)?;
            drop(net);
            eprintln!("deleted network {name} and its keys");
            Ok(())
        }
    }
}

/// Which command is making the network: error messages name its own options.
enum Origin {
    Create,
    /// `import-nova`: routes and the pool come from the payload.
    ImportNova,
    SetEndpoint,
}

/// The command-line option (or payload part) behind a configuration field, for
/// error messages.
fn flag_of(field: &str, origin: &Origin) -> String {
    let base = field.split('[').next().unwrap_or(field);
    let index = &field[base.len()..];
    match (base, origin) {
        ("network", _) => "network name".into(),
        ("routes", Origin::ImportNova) => {
            format!("the Nova payload's pushed route{index} (dmz_net/dmz_mask)")
        }
        // The pool is the top --clients addresses (Nova's rule); there is no --pool.
        ("pool", _) => "--clients".into(),
        ("listen_port", _) => "--port".into(),
        ("status_port", _) => "--status-port".into(),
        ("routes", _) => format!("--route{index}"),
        ("cidr" | "gateway" | "address" | "mtu" | "dns" | "mode", _) => {
            format!("--{base}")
        }
        _ => field.to_string(),
    }
}

/// Refuse an endpoint clients would route into their own tunnel; warn about a name,
/// which may resolve there.
fn check_endpoint(endpoint: &str, config: &Config, origin: &Origin) -> Result<()> {
    let (flag, routes_flag) = match origin {
        Origin::Create => ("--endpoint", "--route"),
        Origin::ImportNova => ("--endpoint", "the Nova payload's pushed route"),
        Origin::SetEndpoint => ("the endpoint", "the network's pushed route"),
    };
    let routed = config.client_allowed_ips();
    let which = |n: &ipnetwork::Ipv4Network| {
        if *n == config.subnet {
            format!("the tenant subnet {n}")
        } else {
            format!("{routes_flag} {n}")
        }
    };
    match endpoint_route(endpoint, &routed) {
        EndpointRoute::Outside => Ok(()),
        EndpointRoute::Inside(n) => bail!(
            "{flag} {endpoint} is inside {}, which clients send through the tunnel: they \
             would send their own WireGuard packets into it and reach nothing; use an \
             endpoint outside it (the floating IP) or push narrower routes",
            which(&n)
        ),
        EndpointRoute::Name(host) => {
            let list: Vec<String> = routed.iter().map(|n| n.to_string()).collect();
            eprintln!(
                "warning: {flag} {host} is a name: it must resolve outside what clients send \
                 through the tunnel ({}), or clients loop their own packets into it",
                list.join(", ")
            );
            Ok(())
        }
    }
}

/// `import-nova`: a network equivalent to a Nova cloudpipe payload.
fn import_nova(
    state: &StateDir,
    name: &str,
    cidr: String,
    endpoint: Option<String>,
    clients: Option<u32>,
    mtu: u16,
    file: &std::path::Path,
) -> Result<()> {
    let bytes = read_payload(file)?;
    let nova = match payload::decode(&bytes) {
        Ok(Payload::Nova(n)) => n,
        Ok(Payload::Cloudpipe(_)) => bail!(
            "{} is already a cloudpipe v1 payload, not a Nova one",
            file.display()
        ),
        Err(e) => bail!("{}: {e}", file.display()),
    };
    let (clients, why) = match (clients, nova.clients) {
        (Some(n), Some(m)) if m > 0 && n != m => {
            (n, format!("--clients {n} (the payload had {m})"))
        }
        (Some(n), _) => (n, format!("--clients {n}")),
        (None, Some(m)) if m > 0 => (m, format!("the payload's {m}")),
        (None, had) => {
            let what = match had {
                Some(_) => {
                    "reserves no VPN client addresses (cnt_vpn_clients = 0, \
                            the default of later Nova releases)"
                }
                None => "does not say how many VPN clients it had",
            };
            eprintln!(
                "the Nova payload {what}: the pool gets {IMPORT_CLIENTS} addresses \
                 (choose with --clients N)"
            );
            (
                IMPORT_CLIENTS,
                format!("{IMPORT_CLIENTS} (--clients default)"),
            )
        }
    };
    let opts = NetworkOptions {
        cidr,
        gateway: None,
        address: None,
        clients,
        routes: nova.routes.iter().map(|r| r.to_string()).collect(),
        dns: vec![],
        endpoint,
        mode: Mode::ProxyArp,
        // Nova's bootscript always enabled it.
        client_to_client: true,
        mtu,
        port: cloudpipe_core::config::DEFAULT_LISTEN_PORT,
        status_port: None,
    };
    create(state, name, &opts, Origin::ImportNova)?;
    eprintln!(
        "imported from Nova's payload: clients {why}, routes {}, client-to-client on",
        if opts.routes.is_empty() {
            "none".to_string()
        } else {
            opts.routes.join(", ")
        }
    );
    Ok(())
}

/// The pool size `import-nova` gives a payload with no VPN clients (Nova's old
/// `cnt_vpn_clients` default, and `network create`'s).
const IMPORT_CLIENTS: u32 = 5;

/// `HOST[:PORT]` with the port made explicit.
pub fn normalize_endpoint(endpoint: &str, default_port: u16) -> Result<String> {
    let e = endpoint.trim();
    if e.is_empty() || e.contains(char::is_whitespace) {
        bail!("endpoint {endpoint:?}: expected HOST[:PORT]");
    }
    if let Some((_, rest)) = e.split_once("://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        bail!(
            "endpoint {endpoint:?} is a URL: expected a host name or address, HOST[:PORT] \
             (WireGuard speaks UDP, not HTTP), e.g. {:?}",
            if host.is_empty() {
                "vpn.example.com"
            } else {
                host
            }
        );
    }
    if e.contains('/') {
        bail!(
            "endpoint {endpoint:?}: expected a host name or address, HOST[:PORT], without a path"
        );
    }
    if let Some(rest) = e.strip_prefix('[') {
        // [IPv6]:port or [IPv6]
        let (host, tail) = rest.split_once(']').context("endpoint: unclosed '['")?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok(format!("[{host}]:{}", parse_port(p)?)),
            None if tail.is_empty() => Ok(format!("[{host}]:{default_port}")),
            None => bail!("endpoint {endpoint:?}: expected [ADDRESS]:PORT"),
        };
    }
    match e.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            bail!("endpoint {endpoint:?}: write IPv6 addresses as [ADDRESS]:PORT")
        }
        Some((host, port)) => Ok(format!("{host}:{}", parse_port(port)?)),
        None => Ok(format!("{e}:{default_port}")),
    }
}

fn parse_port(p: &str) -> Result<u16> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => bail!("endpoint port {p:?} is not a port number"),
        Ok(n) => Ok(n),
    }
}

/// `--cidr`: a subnet with its prefix length (a bare address would be a /32, which
/// holds no clients).
fn parse_subnet(cidr: &str) -> Result<ipnetwork::Ipv4Network> {
    if !cidr.contains('/') {
        bail!(
            "--cidr {cidr:?}: the prefix length is missing: give the subnet as ADDRESS/PREFIX, \
             e.g. {}/24",
            cidr.trim()
        );
    }
    parse_cidr(cidr).map_err(|e| anyhow::anyhow!("--cidr: {e}"))
}

fn create(state: &StateDir, name: &str, o: &NetworkOptions, origin: Origin) -> Result<()> {
    check_name(name).map_err(|r| anyhow::anyhow!("network name {name:?}: {r}"))?;
    let subnet = parse_subnet(&o.cidr)?;
    let mtu = tunnel_mtu(o.mtu)
        .filter(|_| o.mtu <= MAX_MTU)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--mtu: {} is outside {}..={MAX_MTU}: it is the tenant network's MTU \
             (`openstack network show -c mtu NETWORK`), which must leave {WIREGUARD_OVERHEAD} \
             bytes for WireGuard and at least {MIN_MTU} for the tunnel",
                o.mtu,
                MIN_MTU + WIREGUARD_OVERHEAD
            )
        })?;
    let host = |n: u32| Ipv4Addr::from(u32::from(subnet.network()).saturating_add(n));
    let gateway = o.gateway.unwrap_or(host(1));
    let address = o.address.unwrap_or(host(2));
    let pool = Pool::nova_default(
        subnet,
        o.clients,
        &[(gateway, "gateway"), (address, "appliance address")],
    )
    .map_err(|e| anyhow::anyhow!("--clients: {e}"))?;
    let endpoint = o
        .endpoint
        .as_deref()
        .map(|e| normalize_endpoint(e, o.port))
        .transpose()?;
    let file = NetworkFile {
        name: name.to_string(),
        cidr: subnet.to_string(),
        gateway,
        address,
        pool: cloudpipe_core::config::PoolFile {
            first: pool.first(),
            last: pool.last(),
        },
        routes: o.routes.clone(),
        dns: o.dns.clone(),
        mode: o.mode,
        client_to_client: o.client_to_client,
        mtu,
        tenant_mtu: Some(o.mtu),
        listen_port: o.port,
        endpoint,
        status_port: o.status_port,
    };

    let key = PrivateKey::generate(&mut rand_core::OsRng);
    // The whole configuration the payload will carry is checked before anything is
    // written, and so is what Neutron will be asked for.
    let config =
        build_config(&file, &key, &[]).map_err(|e| match e.downcast_ref::<ConfigError>() {
            Some(c) => anyhow::anyhow!("{}: {}", flag_of(&c.field, &origin), c.reason),
            None => e,
        })?;
    if let Err(e) = allowed_address_pairs(&config) {
        // Nova's rule puts a smaller pool higher above the gateway: say what fits.
        let fits = (1..o.clients).rev().find(|n| {
            Pool::nova_default(subnet, *n, &config.reserved())
                .ok()
                .and_then(|p| {
                    cover(p.first(), p.last(), subnet, &[gateway])
                        .ok()
                        .filter(|c| c.len() <= MAX_ALLOWED_ADDRESS_PAIRS)
                })
                .is_some()
        });
        let hint = fits.map_or(String::new(), |n| {
            format!(" (--clients {n} fits, or --mode masquerade needs no pairs)")
        });
        bail!("{} {}: {e}{hint}", flag_of("pool", &origin), o.clients);
    }
    if let Some(e) = &file.endpoint {
        check_endpoint(e, &config, &origin)?;
    }

    let _global = state.lock()?;
    let dir = state.network_dir(name);
    if dir.join("network.json").exists() {
        bail!("network {name:?} already exists");
    }
    // All its files or none: a full disk or a crash never leaves half a network
    // (a folder with a private key and no network.json).
    state::create_dir_atomic(&dir, |staging| {
        let mut b = state::Batch::new();
        b.write(
            &server_key_path(staging),
            format!("{}\n", key.to_base64()).as_bytes(),
            0o600,
        )?;
        b.write_json(&staging.join("network.json"), &file, 0o600)?;
        b.commit()?;
        state::create_dir(&staging.join("clients"))
    })?;
    eprintln!(
        "created network {name}: {} gateway {gateway}, appliance {address}, pool {}-{} ({})",
        file.cidr,
        pool.first(),
        pool.last(),
        count(pool.len() as usize, "client", "clients")
    );
    eprintln!(
        "clients get MTU {mtu}, for a tenant network of MTU {} (read it with \
         `openstack network show -c mtu NETWORK`; recreate with --mtu if it differs)",
        o.mtu
    );
    Ok(())
}

fn show(net: &Network) -> Result<()> {
    let f = &net.file;
    let config = net.config()?;
    println!("network:          {}", f.name);
    println!("subnet:           {}", f.cidr);
    println!("gateway:          {}", f.gateway);
    println!("appliance:        {} (UDP {})", f.address, f.listen_port);
    println!(
        "endpoint:         {}",
        f.endpoint
            .as_deref()
            .unwrap_or("(none: cloudpipe network set-endpoint)")
    );
    println!("public key:       {}", net.server_public_key());
    println!("mode:             {}", f.mode);
    println!(
        "client-to-client: {}",
        if f.client_to_client { "on" } else { "off" }
    );
    match f.tenant_mtu {
        Some(t) => println!("mtu:              {} (tenant network {t})", f.mtu),
        None => println!("mtu:              {}", f.mtu),
    }
    println!(
        "pool:             {}-{} ({})",
        config.pool.first(),
        config.pool.last(),
        count(config.pool.len() as usize, "address", "addresses")
    );
    let routes: Vec<String> = config
        .client_allowed_ips()
        .iter()
        .map(|r| r.to_string())
        .collect();
    println!("client routes:    {}", routes.join(", "));
    match f.status_port {
        Some(p) => println!(
            "status:           http://{}:{p}/status and /metrics (tenant subnet and clients)",
            f.address
        ),
        None => println!("status:           off (network create --status-port)"),
    }
    if !f.dns.is_empty() {
        let dns: Vec<String> = f.dns.iter().map(|d| d.to_string()).collect();
        println!("dns:              {}", dns.join(", "));
    }
    println!("clients:");
    if net.clients.is_empty() {
        println!("  (none)");
    }
    for c in &net.clients {
        println!(
            "  {:<20} {:<15} {}  {}",
            c.name,
            c.address,
            c.public_key,
            status_text(c.status)
        );
    }
    Ok(())
}

pub fn status_text(s: Status) -> &'static str {
    match s {
        Status::Active => "active",
        Status::Revoked { released: false } => "revoked (address held until published)",
        Status::Revoked { released: true } => "revoked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_are_named_as_options() {
        let c = &Origin::Create;
        assert_eq!(flag_of("listen_port", c), "--port");
        assert_eq!(flag_of("routes[1]", c), "--route[1]");
        assert_eq!(flag_of("mtu", c), "--mtu");
        assert_eq!(flag_of("network", c), "network name");
        assert_eq!(flag_of("peers[0].address", c), "peers[0].address");
        // import-nova has no --route: its routes come from the payload.
        let i = &Origin::ImportNova;
        assert_eq!(
            flag_of("routes[0]", i),
            "the Nova payload's pushed route[0] (dmz_net/dmz_mask)"
        );
        assert_eq!(flag_of("pool", i), "--clients");
    }

    #[test]
    fn endpoints_get_a_port() {
        assert_eq!(
            normalize_endpoint("vpn.example.org", 1194).unwrap(),
            "vpn.example.org:1194"
        );
        assert_eq!(
            normalize_endpoint("203.0.113.10:51820", 1194).unwrap(),
            "203.0.113.10:51820"
        );
        assert_eq!(
            normalize_endpoint("[2001:db8::1]", 1194).unwrap(),
            "[2001:db8::1]:1194"
        );
        assert!(normalize_endpoint("2001:db8::1", 1194).is_err());
        assert!(normalize_endpoint("host:0", 1194).is_err());
        assert!(normalize_endpoint("host:x", 1194).is_err());
        assert!(normalize_endpoint("", 1194).is_err());
        let e = normalize_endpoint("https://vpn.example.com/wg", 1194).unwrap_err();
        assert!(
            e.to_string().contains("is a URL") && e.to_string().contains("\"vpn.example.com\""),
            "{e}"
        );
        let e = normalize_endpoint("vpn.example.com/wg", 1194).unwrap_err();
        assert!(e.to_string().contains("without a path"), "{e}");
    }
}
