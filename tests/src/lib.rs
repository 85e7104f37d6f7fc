//! The cloudpipe network lab: a tenant network of a real Neutron, wired in network
//! namespaces the way Neutron's agents would wire it.
//!
//! ```text
//!   outside (203.0.113.2) --ext0-- router --qr0== switch: br0 == cloudpipe (eth0, the appliance VM, .2)
//!                                  | .1 gw              (filter) \== tenant-vm (eth0, a port in the pool)
//!                                  | 169.254.169.254 metadata server (on lo)
//!                                  | floating IP: 1:1 NAT to the appliance's port
//! ```
//!
//! [`Lab::new`] makes a project with a member user in the lab's Keystone, and in
//! Neutron (as that member) the tenant network `lab` (10.77.0.0/24, MTU from
//! [`LabOptions::mtu`]), a router to the external network `public` and a floating IP.
//! Launching (at once, or [`Lab::launch`] with the recipe `cloudpipe openstack --json`
//! printed) applies the recipe's allocation pools, security group, port and floating
//! IP, then gives the tenant VM a port of its own from the allocation pool. Every
//! namespace then takes its state from what Neutron returns: MACs, addresses, the
//! network's MTU, the port filter (fixed IPs, allowed address pairs, security groups,
//! port security: see [`neutron`]) and the floating IP's NAT. No test bypasses it.
//!
//! Names are unique per lab (`cp<pid>x<n>`: namespaces, the project and its user);
//! dropping the [`Lab`] kills every process it started (by PID), deletes its
//! namespaces and its project's Neutron resources, also when a test panics. Only
//! traffic between these namespaces is ever sent; the lab talks to Keystone and
//! Neutron on loopback. Needs `scripts/openstack-lab start` first.

pub mod client_mode;
pub mod daemon;
pub mod demo;
pub mod flood;
pub mod metadata_server;
pub mod mission;
pub mod netns;
pub mod neutron;
pub mod openstack;
pub mod payloads;
pub mod privileges;
pub mod swarm;
pub mod unit;
pub mod wg_client;

use anyhow::Context;
use cloudpipe_core::config::Mode;
use cloudpipe_core::neutron::Recipe;
use ipnetwork::Ipv4Network;
use neutron::{PortState, SgRule, Wired};
use openstack::{str_at, Session, Tenant};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use daemon::Daemon;

/// The tenant subnet.
pub const SUBNET: &str = "10.77.0.0/24";
pub const PREFIX: u8 = 24;
/// The router's address on the tenant network: the subnet's gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The appliance's fixed IP (its Neutron port).
pub const APPLIANCE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The metadata service, on the router's loopback.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_URL: &str = "http://169.254.169.254";
/// An external user, outside the external subnet's allocation pool.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const WG_PORT: u16 = 1194;
/// The lab network's name in Neutron (and the CLI's, and the lab payload's).
pub const NETWORK: &str = "lab";
/// Tenant networks' MTU in a default cloud: ML2/OVS with VXLAN.
pub const DEFAULT_MTU: u16 = cloudpipe_core::config::DEFAULT_TENANT_MTU;
/// Interface names inside the namespaces.
pub const BRIDGE: &str = "br0";
pub const EXTERNAL_IF: &str = "ext0";
pub const VM_IF: &str = "eth0";
/// The daemon's TUN device.
pub const TUN: &str = "cloudpipe0";
/// Who the lab's daemons run as after set-up (`--user`): an id pair no account on
/// a Debian machine has (above the 60000-65535 blocks Debian and systemd's dynamic
/// users take, below the subordinate-id ranges of user namespaces). The image
/// names a real user (`cloudpipe`) instead; the lab cannot create one.
pub const DAEMON_UID: u32 = 4_001_194;
pub const DAEMON_USER: &str = "4001194:4001194";
/// Prefix of every lab namespace, project and user name: `cp<pid>x<n>-<role>`.
pub const NS_PREFIX: &str = "cp";
/// The Neutron port name of the lab's tenant VM.
pub const TENANT_VM_PORT: &str = "tenant-vm";
/// The security group the lab gives its tenant VMs: anything from the tenant
/// networks (what a tenant would open for its own subnet), Neutron's egress defaults.
const VM_GROUP: &str = "lab-vms";

/// The namespaces of a lab (of its first tenant network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Router,
    /// The tenant bridges and their port filter (Neutron's integration bridge).
    Switch,
    Cloudpipe,
    TenantVm,
    Outside,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Router,
        Role::Switch,
        Role::Cloudpipe,
        Role::TenantVm,
        Role::Outside,
    ];
    pub fn suffix(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Switch => "switch",
            Role::Cloudpipe => "cloudpipe",
            Role::TenantVm => "tenant-vm",
            Role::Outside => "outside",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.suffix() == s)
    }
}

#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Play the DHCP client's part in the appliance: its port's fixed IP, a default
    /// route via the gateway and the network's MTU (DHCP option 26) on its eth0 before
    /// the daemon runs. Without it the NIC keeps 1500 and learns nothing.
    pub dhcp: bool,
    /// Start the metadata server at once (else call [`Lab::start_metadata`]).
    pub metadata: bool,
    /// The tenant network's MTU: 1450 makes a VXLAN network (Neutron's default for
    /// tenant networks), 1442 a Geneve one (OVN's header size), 1500 a VLAN provider
    /// network; other values ask Neutron for that MTU on a VXLAN network.
    pub mtu: u16,
    /// Launch the appliance's port at once, from the recipe of the lab payload in
    /// this mode ([`payloads::config`]); `None` leaves it to [`Lab::launch`].
    pub launch: Option<Mode>,
    /// The appliance is a VM under qemu (scripts/image-smoke), not the `cloudpipe`
    /// namespace: its bridge port is a tap device in the switch namespace
    /// ([`APPLIANCE_TAP`]) for qemu to open, filtered like any port; the VM takes
    /// its port's MAC ([`Lab::appliance_mac`]) and configures itself.
    pub appliance_tap: bool,
    /// The lab network's subnet (default [`SUBNET`], a /24; a /21 holds a pool of
    /// 1,000 clients). The lab payload ([`payloads::config`]) is for the default.
    pub cidr: Option<Ipv4Network>,
}

/// The first network's appliance port when it is a tap ([`LabOptions::appliance_tap`]).
pub const APPLIANCE_TAP: &str = "vcp0";

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            dhcp: false,
            metadata: false,
            mtu: DEFAULT_MTU,
            launch: Some(Mode::ProxyArp),
            appliance_tap: false,
            cidr: None,
        }
    }
}

/// Another tenant network behind the lab's router ([`Lab::add_network`]).
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Its Neutron name (unique in the lab).
    pub name: String,
    /// Its subnet, not overlapping the others (one router joins them).
    pub cidr: Ipv4Network,
    pub mtu: u16,
    /// As [`LabOptions::dhcp`], for its appliance.
    pub dhcp: bool,
}

/// Exit the test early (returning `true`) when not root and CLOUDPIPE_SKIP_LAB=1;
/// fail with a clear message when not root otherwise.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    if std::env::var("CLOUDPIPE_SKIP_LAB").is_ok_and(|v| v == "1") {
        eprintln!("lab test skipped: not root and CLOUDPIPE_SKIP_LAB=1");
        return true;
    }
    panic!("the lab tests need root (network namespaces, veth, TUN); run as root or set CLOUDPIPE_SKIP_LAB=1 to skip them");
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One tenant network of the lab: its Neutron network and subnet, its bridge in the
/// switch namespace, its router interface, its appliance and tenant VM namespaces.
#[derive(Debug, Clone)]
pub struct TenantNet {
    pub index: usize,
    pub name: String,
    pub cidr: Ipv4Network,
    pub gateway: Ipv4Addr,
    /// Neutron's `mtu` for the network.
    pub mtu: u16,
    pub network_id: String,
    pub subnet_id: String,
    pub dhcp: bool,
    /// The appliance's bridge port is a tap for a VM under qemu.
    pub tap: bool,
    /// Namespaces.
    pub cloudpipe: String,
    pub tenant_vm: String,
    /// The appliance's Neutron port name and fixed IP, once launched.
    pub appliance_port: Option<String>,
    pub appliance_ip: Option<Ipv4Addr>,
    /// The tenant VM's fixed IP, once launched.
    pub tenant_vm_ip: Option<Ipv4Addr>,
}

impl TenantNet {
    fn bridge(&self) -> String {
        format!("br{}", self.index)
    }
    fn router_if(&self) -> String {
        format!("qr{}", self.index)
    }
    fn switch_port(&self, what: &str) -> String {
        format!("v{what}{}", self.index)
    }
}

/// A VM namespace wired to a Neutron port.
#[derive(Debug, Clone)]
struct Vm {
    ns: String,
    /// Its port on the bridge, in the switch namespace.
    switch_if: String,
    port_name: String,
    network: usize,
    /// Configure eth0 as DHCP would (else leave it to the guest).
    dhcp: bool,
}

/// The lab's place in Keystone and Neutron.
struct Cloud {
    admin: Session,
    tenant: Tenant,
    public_network_id: String,
    router_id: String,
    /// The router's address on the external network.
    router_ip: Ipv4Addr,
    vm_group_id: String,
    /// Allocated at once, for the first network's appliance.
    floating_ip: Ipv4Addr,
}

pub struct Lab {
    id: String,
    dir: PathBuf,
    pids: Mutex<Vec<u32>>,
    metadata_pid: Mutex<Option<u32>>,
    created: Mutex<Vec<String>>,
    keep: bool,
    cloud: Option<Cloud>,
    nets: Mutex<Vec<TenantNet>>,
    vms: Mutex<Vec<Vm>>,
}

impl Lab {
    /// Build the whole lab. On error everything built so far is torn down.
    pub fn new(opts: LabOptions) -> anyhow::Result<Lab> {
        let state = openstack::state()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("cloudpipe-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("metadata"))?;
        let mut lab = Lab {
            id,
            dir,
            pids: Mutex::new(Vec::new()),
            metadata_pid: Mutex::new(None),
            created: Mutex::new(Vec::new()),
            keep: false,
            cloud: None,
            nets: Mutex::new(Vec::new()),
            vms: Mutex::new(Vec::new()),
        };
        let t = Instant::now();
        lab.cloud = Some(lab.make_cloud(&state)?);
        lab.build()?;
        let cidr = match opts.cidr {
            Some(c) => c,
            None => SUBNET.parse()?,
        };
        lab.add_tenant_net(NETWORK, cidr, opts.mtu, opts.dhcp, true)?;
        if opts.appliance_tap {
            lab.nets.lock().unwrap()[0].tap = true;
            lab.use_tap()?;
        }
        if let Some(mode) = opts.launch {
            let config = payloads::config(mode);
            lab.launch(&lab.recipe_for(&config)?)?;
        }
        if opts.metadata {
            lab.start_metadata()?;
        }
        if std::env::var_os("CLOUDPIPE_LAB_TIMING").is_some() {
            eprintln!("lab {} built in {:?}", lab.id, t.elapsed());
        }
        Ok(lab)
    }

    /// This lab's id (`cp<pid>x<n>`), the prefix of its namespace names and the name
    /// of its project and member user.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A scratch directory, deleted with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ns(&self, role: Role) -> String {
        format!("{}-{}", self.id, role.suffix())
    }
    pub fn router(&self) -> String {
        self.ns(Role::Router)
    }
    pub fn switch(&self) -> String {
        self.ns(Role::Switch)
    }
    pub fn cloudpipe(&self) -> String {
        self.ns(Role::Cloudpipe)
    }
    pub fn tenant_vm(&self) -> String {
        self.ns(Role::TenantVm)
    }
    pub fn outside(&self) -> String {
        self.ns(Role::Outside)
    }

    fn cloud(&self) -> &Cloud {
        self.cloud.as_ref().expect("the cloud is made first")
    }

    /// The lab's project and its member user (python-openstackclient as the tenant).
    pub fn tenant(&self) -> &Tenant {
        &self.cloud().tenant
    }

    /// The admin of the lab's Keystone and Neutron.
    pub fn admin(&self) -> &Session {
        &self.cloud().admin
    }

    /// The floating IP the project holds for the first network's appliance.
    pub fn floating_ip(&self) -> Ipv4Addr {
        self.cloud().floating_ip
    }

    /// The floating IP attached to network `index`'s appliance port, as Neutron holds it.
    pub fn floating_ip_on(&self, index: usize) -> anyhow::Result<Ipv4Addr> {
        let net = self.network(index);
        let name = net
            .appliance_port
            .with_context(|| format!("network {} is not launched", net.name))?;
        let m = &self.cloud().tenant.member;
        let port = m.get(&format!(
            "/v2.0/ports?network_id={}&name={name}",
            net.network_id
        ))?;
        let fips = m.get(&format!(
            "/v2.0/floatingips?port_id={}",
            str_at(&port, "/ports/0/id")?
        ))?;
        Ok(str_at(&fips, "/floatingips/0/floating_ip_address")?.parse()?)
    }

    /// The router's address on the external network (the outside's gateway).
    pub fn router_ip(&self) -> Ipv4Addr {
        self.cloud().router_ip
    }

    /// Tenant network `index` (0: the lab's, `lab`).
    pub fn network(&self, index: usize) -> TenantNet {
        self.nets.lock().unwrap()[index].clone()
    }

    /// The first network's MTU, as Neutron gave it.
    pub fn mtu(&self) -> u16 {
        self.network(0).mtu
    }

    /// The tenant VM's address on the first network: Neutron's choice from the
    /// allocation pool. Panics before the network is launched.
    pub fn tenant_vm_ip(&self) -> Ipv4Addr {
        self.network(0)
            .tenant_vm_ip
            .expect("the lab network is not launched yet: Lab::launch")
    }

    fn make_cloud(&self, state: &openstack::State) -> anyhow::Result<Cloud> {
        let admin = Session::admin(state)?;
        let tenant = admin.create_tenant(&self.id)?;
        // Until Drop can purge the project (once this returns), a failure does.
        match self.make_project_resources(state, &tenant) {
            Ok(r) => Ok(Cloud {
                admin,
                tenant,
                public_network_id: r.0,
                router_id: r.1,
                router_ip: r.2,
                vm_group_id: r.3,
                floating_ip: r.4,
            }),
            Err(e) => {
                let _ = admin.purge_project(&tenant.member.project_id, &self.id);
                Err(e)
            }
        }
    }

    /// The project's router to `public`, the VMs' security group and the floating IP
    /// held for the first appliance.
    fn make_project_resources(
        &self,
        state: &openstack::State,
        tenant: &Tenant,
    ) -> anyhow::Result<(String, String, Ipv4Addr, String, Ipv4Addr)> {
        let m = &tenant.member;
        let public = m.get(&format!("/v2.0/networks?name={}", state.external_network))?;
        let public_network_id = str_at(&public, "/networks/0/id")
            .context("the external network of scripts/openstack-lab")?;
        let router = m.post(
            "/v2.0/routers",
            json!({"router": {"name": format!("{}-router", self.id),
                   "external_gateway_info": {"network_id": public_network_id}}}),
        )?;
        let router_id = str_at(&router, "/router/id")?;
        let router_ip = str_at(
            &router,
            "/router/external_gateway_info/external_fixed_ips/0/ip_address",
        )?
        .parse()?;
        let group = m.post(
            "/v2.0/security-groups",
            json!({"security_group": {"name": VM_GROUP,
                   "description": "the lab's tenant VMs: anything from the tenant networks"}}),
        )?;
        let vm_group_id = str_at(&group, "/security_group/id")?;
        let fip = m.post(
            "/v2.0/floatingips",
            json!({"floatingip": {"floating_network_id": public_network_id}}),
        )?;
        let floating_ip = str_at(&fip, "/floatingip/floating_ip_address")?.parse()?;
        Ok((
            public_network_id,
            router_id,
            router_ip,
            vm_group_id,
            floating_ip,
        ))
    }

    /// Namespaces shared by every tenant network: router, switch, outside.
    fn build(&self) -> anyhow::Result<()> {
        let (r, sw, o) = (self.router(), self.switch(), self.outside());
        for ns in [&r, &sw, &o] {
            self.add_ns(ns)?;
        }
        // Router: the metadata address, forwarding, its external leg.
        self.ip(&r, "addr add 169.254.169.254/32 dev lo")?;
        self.sysctl(&r, "net.ipv4.ip_forward", "1")?;
        // Switch: bridged IPv4 goes through the IP hooks, with conntrack (the port
        // filter's stateful half); no IPv6 of its own.
        self.sysctl(&sw, "net.bridge.bridge-nf-call-iptables", "1")?;
        self.sysctl(&sw, "net.ipv6.conf.all.disable_ipv6", "1")?;
        let router_ip = self.router_ip();
        self.ip(
            &r,
            &format!("link add {EXTERNAL_IF} type veth peer name {VM_IF} netns {o}"),
        )?;
        self.ip(&r, &format!("addr add {router_ip}/24 dev {EXTERNAL_IF}"))?;
        self.ip(&r, &format!("link set {EXTERNAL_IF} up"))?;
        self.ip(&o, &format!("addr add {OUTSIDE}/24 dev {VM_IF}"))?;
        self.ip(&o, &format!("link set {VM_IF} up"))?;
        self.ip(&o, &format!("route add default via {router_ip}"))?;
        Ok(())
    }

    fn add_ns(&self, ns: &str) -> anyhow::Result<()> {
        run(Command::new("ip").args(["netns", "add", ns]))?;
        self.created.lock().unwrap().push(ns.to_string());
        self.ip(ns, "link set lo up")?;
        Ok(())
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec(ns, &["sysctl", "-qw", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Another tenant network behind the lab's router, with an appliance and a tenant
    /// VM namespace of its own (`<id>-cloudpipe<k>`, `<id>-tenant-vm<k>`); launch its
    /// appliance with [`Lab::launch_on`]. Returns its index.
    pub fn add_network(&self, o: &NetworkOptions) -> anyhow::Result<usize> {
        self.add_tenant_net(&o.name, o.cidr, o.mtu, o.dhcp, false)
    }

    fn add_tenant_net(
        &self,
        name: &str,
        cidr: Ipv4Network,
        mtu: u16,
        dhcp: bool,
        first: bool,
    ) -> anyhow::Result<usize> {
        let index = self.nets.lock().unwrap().len();
        let c = self.cloud();
        let m = &c.tenant.member;
        // Neutron computes the MTU from the network type; a VXLAN network may ask for less.
        let body = match mtu {
            DEFAULT_MTU => json!({"network": {"name": name}}),
            1442 => json!({"network": {"name": name, "project_id": m.project_id,
                    "provider:network_type": "geneve"}}),
            1500 => json!({"network": {"name": name, "project_id": m.project_id,
                    "provider:network_type": "vlan", "provider:physical_network": "physnet1"}}),
            other => json!({"network": {"name": name, "mtu": other}}),
        };
        // Provider networks are an admin's to make, for the project.
        let creator = if matches!(mtu, 1442 | 1500) {
            &c.admin
        } else {
            m
        };
        let net = creator.post("/v2.0/networks", body)?;
        let network_id = str_at(&net, "/network/id")?;
        let neutron_mtu = net["network"]["mtu"]
            .as_u64()
            .context("network without mtu")? as u16;
        anyhow::ensure!(
            neutron_mtu == mtu,
            "asked Neutron for a network of MTU {mtu}, got {neutron_mtu}"
        );
        let subnet = m.post(
            "/v2.0/subnets",
            json!({"subnet": {"network_id": network_id, "name": format!("{name}-subnet"),
                   "ip_version": 4, "cidr": cidr.to_string()}}),
        )?;
        let subnet_id = str_at(&subnet, "/subnet/id")?;
        let gateway: Ipv4Addr = str_at(&subnet, "/subnet/gateway_ip")?.parse()?;
        let iface = m.put(
            &format!("/v2.0/routers/{}/add_router_interface", c.router_id),
            json!({"subnet_id": subnet_id}),
        )?;
        let router_port = m.get(&format!("/v2.0/ports/{}", str_at(&iface, "/port_id")?))?;
        let router_port = PortState::from_json(&router_port["port"])?;
        // The tenant VMs' group admits this network too.
        m.post(
            "/v2.0/security-group-rules",
            json!({"security_group_rule": {"security_group_id": c.vm_group_id,
                   "direction": "ingress", "ethertype": "IPv4",
                   "remote_ip_prefix": cidr.to_string()}}),
        )?;
        let suffix = if first {
            String::new()
        } else {
            index.to_string()
        };
        let net = TenantNet {
            index,
            name: name.to_string(),
            cidr,
            gateway,
            mtu,
            network_id,
            subnet_id,
            dhcp,
            tap: false,
            cloudpipe: format!("{}{suffix}", self.cloudpipe()),
            tenant_vm: format!("{}{suffix}", self.tenant_vm()),
            appliance_port: None,
            appliance_ip: None,
            tenant_vm_ip: None,
        };
        // Data plane: the bridge, the router's leg on it, the VMs' legs.
        let (r, sw) = (self.router(), self.switch());
        let br = net.bridge();
        self.ip(&sw, &format!("link add {br} type bridge"))?;
        self.ip(&sw, &format!("link set {br} mtu {mtu} up"))?;
        let qr = net.router_if();
        let vqr = net.switch_port("qr");
        self.ip(
            &r,
            &format!("link add {qr} type veth peer name {vqr} netns {sw}"),
        )?;
        self.ip(&sw, &format!("link set {vqr} master {br} mtu {mtu} up"))?;
        self.ip(
            &r,
            &format!("link set {qr} address {} mtu {mtu} up", router_port.mac),
        )?;
        self.ip(
            &r,
            &format!("addr add {gateway}/{} dev {qr}", cidr.prefix()),
        )?;
        for (ns, what) in [(&net.cloudpipe, "cp"), (&net.tenant_vm, "tv")] {
            self.add_ns(ns)?;
            self.add_vm_link(ns, &net.switch_port(what), &br, mtu)?;
        }
        self.nets.lock().unwrap().push(net);
        Ok(index)
    }

    /// The first network's appliance port becomes a tap device in the switch namespace
    /// (the veth to the `cloudpipe` namespace goes).
    fn use_tap(&self) -> anyhow::Result<()> {
        let net = self.network(0);
        let sw = self.switch();
        self.ip(&sw, &format!("link del {APPLIANCE_TAP}"))?;
        self.ip(&sw, &format!("tuntap add dev {APPLIANCE_TAP} mode tap"))?;
        self.ip(
            &sw,
            &format!(
                "link set {APPLIANCE_TAP} master {} mtu {} up",
                net.bridge(),
                net.mtu
            ),
        )?;
        Ok(())
    }

    /// Add `cidr` to the allowed address pairs of network `index`'s appliance port (what
    /// `openstack port set --allowed-address ip-address=CIDR PORT` does) and sync: a
    /// network routed to a client beyond the pool is sent from by the appliance.
    pub fn allow_address_pair(&self, index: usize, cidr: Ipv4Network) -> anyhow::Result<()> {
        let net = self.network(index);
        let name = net
            .appliance_port
            .context("the network is not launched yet")?;
        let m = &self.cloud().tenant.member;
        let found = m.get(&format!(
            "/v2.0/ports?network_id={}&name={name}",
            net.network_id
        ))?;
        let port = &found["ports"][0];
        let mut pairs = port["allowed_address_pairs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        pairs.push(json!({ "ip_address": cidr.to_string() }));
        m.put(
            &format!("/v2.0/ports/{}", str_at(port, "/id")?),
            json!({"port": {"allowed_address_pairs": pairs}}),
        )?;
        self.sync()
    }

    /// Admit everything from `remote` into the tenant VMs (an ingress rule, any
    /// protocol, on their security group, as `openstack security group rule create
    /// --remote-ip CIDR` does) and sync. The group admits only the tenant networks
    /// until then, as Neutron's default group admits only its own members.
    pub fn allow_vm_ingress(&self, remote: Ipv4Network) -> anyhow::Result<()> {
        let c = self.cloud();
        c.tenant.member.post(
            "/v2.0/security-group-rules",
            json!({"security_group_rule": {"security_group_id": c.vm_group_id,
                   "direction": "ingress", "ethertype": "IPv4",
                   "remote_ip_prefix": remote.to_string()}}),
        )?;
        self.sync()
    }

    /// Add an ingress rule to the project's security group `group` (as `openstack
    /// security group rule create` does) and sync.
    pub fn add_ingress_rule(
        &self,
        group: &str,
        protocol: &str,
        port: u16,
        remote: Ipv4Network,
    ) -> anyhow::Result<()> {
        let m = &self.cloud().tenant.member;
        let groups = m.get(&format!("/v2.0/security-groups?name={group}"))?;
        m.post(
            "/v2.0/security-group-rules",
            json!({"security_group_rule": {
                "security_group_id": str_at(&groups, "/security_groups/0/id")?,
                "direction": "ingress", "ethertype": "IPv4", "protocol": protocol,
                "port_range_min": port, "port_range_max": port,
                "remote_ip_prefix": remote.to_string()}}),
        )?;
        self.sync()
    }

    /// The MAC address of the first network's appliance port (Neutron's).
    pub fn appliance_mac(&self) -> anyhow::Result<String> {
        let net = self.network(0);
        let name = net
            .appliance_port
            .context("the lab network is not launched yet")?;
        let port = self.cloud().tenant.member.get(&format!(
            "/v2.0/ports?network_id={}&name={name}",
            net.network_id
        ))?;
        str_at(&port, "/ports/0/mac_address")
    }

    /// A veth from `ns`'s eth0 to the bridge; the switch side gets the network's MTU.
    fn add_vm_link(&self, ns: &str, switch_if: &str, br: &str, mtu: u16) -> anyhow::Result<()> {
        let sw = self.switch();
        self.ip(
            &sw,
            &format!("link add {switch_if} type veth peer name {VM_IF} netns {ns}"),
        )?;
        self.ip(
            &sw,
            &format!("link set {switch_if} master {br} mtu {mtu} up"),
        )?;
        // A VM does not talk IPv6 here: no router solicitations for the filter to drop.
        self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
        Ok(())
    }

    /// The recipe `cloudpipe openstack NETWORK --json` gives for `config` on the lab's
    /// first network, with the floating IP the project holds.
    pub fn recipe_for(&self, config: &cloudpipe_core::config::Config) -> anyhow::Result<Recipe> {
        self.recipe_on(0, config, Some(self.floating_ip()))
    }

    /// The recipe for `config` on network `index`: the floating IP the project holds
    /// at that address, or (`None`) one to allocate.
    pub fn recipe_on(
        &self,
        index: usize,
        config: &cloudpipe_core::config::Config,
        floating_ip: Option<Ipv4Addr>,
    ) -> anyhow::Result<Recipe> {
        let net = self.network(index);
        Ok(Recipe::new(
            config,
            &cloudpipe_core::neutron::RecipeOptions {
                network: net.name.clone(),
                external_network: "public".into(),
                image: "cloudpipe".into(),
                flavor: "m1.small".into(),
                mtu: net.mtu,
                floating_ip,
            },
        )?)
    }

    /// Apply a recipe to the first network: see [`Lab::launch_on`].
    pub fn launch(&self, recipe: &Recipe) -> anyhow::Result<()> {
        self.launch_on(0, recipe)
    }

    /// Apply `recipe` (as `cloudpipe openstack --json` prints it) to network `index`
    /// through Neutron's API, as the project's member, in the printed order: the
    /// subnet's allocation pools, the security group and its rules, the port, the
    /// floating IP. Then the tenant VM gets a port (Neutron picks its address from the
    /// pools) and the data plane follows Neutron ([`Lab::sync`]).
    pub fn launch_on(&self, index: usize, recipe: &Recipe) -> anyhow::Result<()> {
        let net = self.network(index);
        let c = self.cloud();
        let m = &c.tenant.member;
        anyhow::ensure!(
            recipe.network == net.name || recipe.network == net.network_id,
            "the recipe is for Neutron network {:?}, this is {:?}",
            recipe.network,
            net.name
        );
        anyhow::ensure!(
            recipe.subnet.cidr == net.cidr,
            "the recipe's subnet {} is not {}",
            recipe.subnet.cidr,
            net.cidr
        );
        m.put(
            &format!("/v2.0/subnets/{}", net.subnet_id),
            json!({"subnet": {"allocation_pools": recipe.subnet.allocation_pools}}),
        )?;
        let sg = &recipe.security_group;
        let group = m.post(
            "/v2.0/security-groups",
            json!({"security_group": {"name": sg.name, "description": sg.description}}),
        )?;
        let group_id = str_at(&group, "/security_group/id")?;
        for r in &sg.rules {
            let mut rule = serde_json::to_value(r)?;
            rule["security_group_id"] = json!(group_id);
            m.post(
                "/v2.0/security-group-rules",
                json!({ "security_group_rule": rule }),
            )?;
        }
        let p = &recipe.port;
        anyhow::ensure!(
            p.security_groups == vec![sg.name.clone()],
            "the recipe's port is in {:?}, not its own group {}",
            p.security_groups,
            sg.name
        );
        let fixed: Vec<Value> = p
            .fixed_ips
            .iter()
            .map(|f| json!({"subnet_id": net.subnet_id, "ip_address": f.ip_address}))
            .collect();
        let port = m.post(
            "/v2.0/ports",
            json!({"port": {"network_id": net.network_id, "name": p.name, "fixed_ips": fixed,
                   "allowed_address_pairs": p.allowed_address_pairs,
                   "security_groups": [group_id]}}),
        )?;
        let port_id = str_at(&port, "/port/id")?;
        let f = &recipe.floating_ip;
        anyhow::ensure!(f.port == p.name, "the floating IP is for port {}", f.port);
        let fip_id = match f.floating_ip_address {
            Some(a) => {
                let held = m.get(&format!("/v2.0/floatingips?floating_ip_address={a}"))?;
                str_at(&held, "/floatingips/0/id")
                    .with_context(|| format!("the project holds no floating IP {a}"))?
            }
            None => str_at(
                &m.post(
                    "/v2.0/floatingips",
                    json!({"floatingip": {"floating_network_id": c.public_network_id}}),
                )?,
                "/floatingip/id",
            )?,
        };
        m.put(
            &format!("/v2.0/floatingips/{fip_id}"),
            json!({"floatingip": {"port_id": port_id}}),
        )?;
        self.attach_appliance(index, &p.name)
    }

    /// Wire network `index`'s appliance namespace to its Neutron port `port` (made by
    /// [`Lab::launch_on`], or by python-openstackclient as a test applies the printed
    /// recipe), give the tenant VM a port from the pools, and sync.
    pub fn attach_appliance(&self, index: usize, port: &str) -> anyhow::Result<()> {
        let net = self.network(index);
        let found = self.cloud().tenant.member.get(&format!(
            "/v2.0/ports?network_id={}&name={port}",
            net.network_id
        ))?;
        let ip: Ipv4Addr = str_at(&found, "/ports/0/fixed_ips/0/ip_address")
            .with_context(|| format!("no port {port:?} on network {}", net.name))?
            .parse()?;
        {
            let mut nets = self.nets.lock().unwrap();
            nets[index].appliance_port = Some(port.to_string());
            nets[index].appliance_ip = Some(ip);
        }
        if net.tenant_vm_ip.is_none() {
            self.add_tenant_vm(index)?;
        }
        self.sync()
    }

    /// The tenant VM's port: no address asked for, so Neutron picks one from the pools.
    fn add_tenant_vm(&self, index: usize) -> anyhow::Result<()> {
        let net = self.network(index);
        let c = self.cloud();
        let port = c.tenant.member.post(
            "/v2.0/ports",
            json!({"port": {"network_id": net.network_id, "name": TENANT_VM_PORT,
                   "security_groups": [c.vm_group_id]}}),
        )?;
        let ip: Ipv4Addr = str_at(&port, "/port/fixed_ips/0/ip_address")?.parse()?;
        self.nets.lock().unwrap()[index].tenant_vm_ip = Some(ip);
        self.vms.lock().unwrap().push(Vm {
            ns: net.tenant_vm.clone(),
            switch_if: net.switch_port("tv"),
            port_name: TENANT_VM_PORT.into(),
            network: index,
            dhcp: true,
        });
        Ok(())
    }

    /// Another VM on network `index`: namespace `<id>-<suffix>`, a Neutron port named
    /// `suffix` in the lab's VM group with `fixed_ip` if given (Neutron checks it),
    /// configured as DHCP would. Returns the namespace and the port's address.
    pub fn add_vm(
        &self,
        index: usize,
        suffix: &str,
        fixed_ip: Option<Ipv4Addr>,
    ) -> anyhow::Result<(String, Ipv4Addr)> {
        let net = self.network(index);
        let c = self.cloud();
        let mut port = json!({"network_id": net.network_id, "name": suffix,
                              "security_groups": [c.vm_group_id]});
        if let Some(a) = fixed_ip {
            port["fixed_ips"] = json!([{"subnet_id": net.subnet_id, "ip_address": a}]);
        }
        let port = c
            .tenant
            .member
            .post("/v2.0/ports", json!({ "port": port }))?;
        let ip: Ipv4Addr = str_at(&port, "/port/fixed_ips/0/ip_address")?.parse()?;
        let ns = format!("{}-{suffix}", self.id);
        let n = self.vms.lock().unwrap().len();
        let switch_if = format!("vx{n}");
        self.add_ns(&ns)?;
        self.add_vm_link(&ns, &switch_if, &net.bridge(), net.mtu)?;
        self.vms.lock().unwrap().push(Vm {
            ns: ns.clone(),
            switch_if,
            port_name: suffix.to_string(),
            network: index,
            dhcp: true,
        });
        self.sync()?;
        Ok((ns, ip))
    }

    /// Do what Neutron's agents would: read every port, security group rule, network
    /// and floating IP of the project back from Neutron and make the namespaces follow
    /// them (MACs, addresses, MTUs, the port filter, the floating IPs' NAT, the
    /// appliances' network_data.json). Call it again after changing Neutron by other
    /// means (python-openstackclient).
    pub fn sync(&self) -> anyhow::Result<()> {
        let c = self.cloud();
        let m = &c.tenant.member;
        let q = format!("project_id={}", m.project_id);
        let list = |kind: &str, key: &str| -> anyhow::Result<Vec<Value>> {
            Ok(m.get(&format!("/v2.0/{kind}?{q}"))?[key]
                .as_array()
                .cloned()
                .unwrap_or_default())
        };
        let ports: Vec<PortState> = list("ports", "ports")?
            .iter()
            .map(PortState::from_json)
            .collect::<anyhow::Result<_>>()?;
        let rules: Vec<SgRule> = list("security-group-rules", "security_group_rules")?
            .iter()
            .map(SgRule::from_json)
            .collect::<anyhow::Result<_>>()?;
        let fips = list("floatingips", "floatingips")?;
        let nets = self.nets.lock().unwrap().clone();
        let find = |net: &TenantNet, name: &str| {
            ports
                .iter()
                .find(|p| p.network_id == net.network_id && p.name == name)
                .cloned()
                .with_context(|| format!("no port {name:?} on network {}", net.name))
        };
        let mut wired = Vec::new();
        let mut vms: Vec<(Vm, PortState)> = Vec::new();
        for net in &nets {
            if let Some(name) = &net.appliance_port {
                let vm = Vm {
                    ns: net.cloudpipe.clone(),
                    switch_if: net.switch_port("cp"),
                    port_name: name.clone(),
                    network: net.index,
                    dhcp: net.dhcp,
                };
                vms.push((vm, find(net, name)?));
            }
        }
        for vm in self.vms.lock().unwrap().iter() {
            vms.push((vm.clone(), find(&nets[vm.network], &vm.port_name)?));
        }
        for (vm, port) in &vms {
            let tap = nets[vm.network].tap && vm.switch_if == APPLIANCE_TAP;
            if !tap {
                self.wire(vm, port, &nets[vm.network])?;
            }
            wired.push(Wired {
                ifname: vm.switch_if.clone(),
                port: port.clone(),
            });
        }
        self.nft(
            &self.switch(),
            &neutron::port_filter(&wired, &ports, &rules),
        )?;
        self.apply_nat(&fips, &nets)?;
        for (vm, port) in &vms {
            if nets[vm.network].appliance_port.as_deref() == Some(&port.name) {
                self.write_network_data(&nets[vm.network], port)?;
            }
        }
        Ok(())
    }

    /// A VM's eth0 as the port says: its MAC; with DHCP also its address, the
    /// network's MTU and a default route via the gateway.
    fn wire(&self, vm: &Vm, port: &PortState, net: &TenantNet) -> anyhow::Result<()> {
        let ns = &vm.ns;
        let link = self.ip(ns, &format!("-o link show {VM_IF}"))?;
        if !link.contains(&port.mac) {
            self.ip(ns, &format!("link set {VM_IF} down"))?;
            self.ip(ns, &format!("link set {VM_IF} address {}", port.mac))?;
        }
        if vm.dhcp {
            let ip = port
                .fixed_ips
                .first()
                .with_context(|| format!("port {} has no fixed IP", port.name))?;
            self.ip(ns, &format!("link set {VM_IF} mtu {}", net.mtu))?;
            self.ip(
                ns,
                &format!("addr replace {ip}/{} dev {VM_IF}", net.cidr.prefix()),
            )?;
            self.ip(ns, &format!("link set {VM_IF} up"))?;
            self.ip(ns, &format!("route replace default via {}", net.gateway))?;
        } else if link.contains("state DOWN") || !link.contains(",UP") {
            // The guest configures its NIC itself; it only comes back up.
            self.ip(ns, &format!("link set {VM_IF} up"))?;
        }
        Ok(())
    }

    /// The router's NAT for the project's floating IPs (Neutron's L3 agent: 1:1 DNAT
    /// and SNAT, the address on the external leg) and SNAT of the tenant networks to
    /// the router's own external address.
    fn apply_nat(&self, fips: &[Value], nets: &[TenantNet]) -> anyhow::Result<()> {
        let r = self.router();
        let mut pre = String::new();
        let mut post = String::new();
        for f in fips {
            let (Some(fip), Some(fixed)) = (
                f["floating_ip_address"].as_str(),
                f["fixed_ip_address"].as_str(),
            ) else {
                continue;
            };
            self.ip(&r, &format!("addr replace {fip}/32 dev {EXTERNAL_IF}"))?;
            pre.push_str(&format!("\t\tip daddr {fip} dnat to {fixed}\n"));
            post.push_str(&format!(
                "\t\toifname != \"qr*\" ip saddr {fixed} snat to {fip}\n"
            ));
        }
        for n in nets {
            post.push_str(&format!(
                "\t\toifname != \"qr*\" ip saddr {} snat to {}\n",
                n.cidr,
                self.router_ip()
            ));
        }
        self.nft(
            &r,
            &format!(
                "table ip lab {{}}\ndelete table ip lab\ntable ip lab {{\n\
                 \tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{pre}\t}}\n\
                 \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{post}\t}}\n}}\n"
            ),
        )
    }

    /// `network_data.json` for an appliance, as Nova writes it from Neutron's port and
    /// network (links with MAC and MTU; a DHCP network).
    fn write_network_data(&self, net: &TenantNet, port: &PortState) -> anyhow::Result<()> {
        let link = format!("tap{}", &port.id[..port.id.len().min(11)]);
        let doc = json!({
            "links": [{"id": link, "vif_id": port.id, "type": "ovs", "mtu": net.mtu,
                       "ethernet_mac_address": port.mac}],
            "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": link,
                          "network_id": net.network_id}],
            "services": []
        });
        let dir = self.metadata_dir_for(net);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join("network_data.json"), doc.to_string().as_bytes())
    }

    /// `network_data.json` of the first network's appliance (for config drives).
    pub fn network_data(&self) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(
            self.metadata_dir_for(&self.network(0))
                .join("network_data.json"),
        )?)
    }

    /// `ip -n NS ARGS...` (ARGS split on spaces).
    pub fn ip(&self, ns: &str, args: &str) -> anyhow::Result<String> {
        run(Command::new("ip")
            .arg("-n")
            .arg(ns)
            .args(args.split_whitespace()))
    }

    /// Load an nftables script in `ns`.
    pub fn nft(&self, ns: &str, script: &str) -> anyhow::Result<()> {
        let path = self.dir.join(format!(
            "nft-{}.nft",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, script)?;
        self.exec(ns, &["nft", "-f", path.to_str().expect("utf-8 temp path")])
            .with_context(|| format!("loading {}:\n{script}", path.display()))?;
        Ok(())
    }

    /// Run `cmd` in `ns` to completion; its stdout, or an error with its stderr.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ip").args(["netns", "exec", ns]).args(cmd))
    }

    /// Run `cmd` in `ns` to completion, whatever its status.
    pub fn output(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Start `cmd` in `ns`; the lab kills it by PID when dropped. `ip netns exec`
    /// execs the command, so the child's PID is the command's.
    pub fn spawn(&self, ns: &str, cmd: &[&str]) -> anyhow::Result<Child> {
        self.spawn_with(ns, cmd, |_| {})
    }

    /// Like [`Lab::spawn`], with a hook to set environment, stdio and so on.
    pub fn spawn_with(
        &self,
        ns: &str,
        cmd: &[&str],
        f: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Child> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(cmd).stdin(Stdio::null());
        f(&mut c);
        let child = c
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {cmd:?} in {ns}: {e}"))?;
        self.track(child.id());
        Ok(child)
    }

    /// Have the lab kill `pid` when dropped.
    pub fn track(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid);
    }

    /// The directory the metadata server serves from: `user_data`, `meta_data.json`,
    /// `network_data.json` and `mode` are read on every request, so tests may rewrite
    /// them at any time. The first network's appliance reads these; another network's
    /// reads `metadata/<its address>/` (the server picks by source address, as
    /// Neutron's metadata proxy picks the instance by network and address).
    pub fn metadata_dir(&self) -> PathBuf {
        self.dir.join("metadata")
    }

    fn metadata_dir_for(&self, net: &TenantNet) -> PathBuf {
        if net.index == 0 {
            self.metadata_dir()
        } else {
            let ip = net
                .appliance_ip
                .unwrap_or(Ipv4Addr::from(u32::from(net.cidr.network()) + 2));
            self.metadata_dir().join(ip.to_string())
        }
    }

    pub fn set_user_data(&self, bytes: &[u8]) -> anyhow::Result<()> {
        write_atomic(&self.metadata_dir().join("user_data"), bytes)
    }

    /// User-data for the appliance of network `index`.
    pub fn set_user_data_on(&self, index: usize, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.metadata_dir_for(&self.network(index));
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join("user_data"), bytes)
    }

    pub fn remove_user_data(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.metadata_dir().join("user_data")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Write `meta_data.json` with this `meta` map (instance properties).
    pub fn set_meta<'a>(
        &self,
        meta: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<()> {
        self.set_meta_on(0, meta)
    }

    /// `meta_data.json` for the appliance of network `index`.
    pub fn set_meta_on<'a>(
        &self,
        index: usize,
        meta: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<()> {
        let meta: serde_json::Map<String, Value> = meta
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let doc = json!({
            "uuid": format!("00000000-0000-4000-8000-{:012}", std::process::id()),
            "hostname": "cloudpipe",
            "name": "cloudpipe",
            "project_id": self.cloud().tenant.member.project_id,
            "meta": meta,
        });
        let dir = self.metadata_dir_for(&self.network(index));
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join("meta_data.json"), doc.to_string().as_bytes())
    }

    /// How the metadata server answers user-data requests, see
    /// [`metadata_server::Mode`].
    pub fn set_metadata_mode(&self, mode: metadata_server::Mode) -> anyhow::Result<()> {
        write_atomic(&self.metadata_dir().join("mode"), mode.as_str().as_bytes())
    }

    /// How the metadata server answers `meta_data.json` requests (the daemon's
    /// polls), see [`metadata_server::Mode`].
    pub fn set_meta_mode(&self, mode: metadata_server::Mode) -> anyhow::Result<()> {
        write_atomic(
            &self.metadata_dir().join("meta_mode"),
            mode.as_str().as_bytes(),
        )
    }

    /// The requests the metadata server has answered so far (path, mode).
    pub fn metadata_requests(&self) -> Vec<(String, metadata_server::Mode)> {
        metadata_server::requests(&self.metadata_dir())
    }

    /// Start the metadata server in the router namespace on 169.254.169.254:80 and
    /// wait until it accepts connections.
    pub fn start_metadata(&self) -> anyhow::Result<()> {
        let bin = bin_path("cloudpipe-lab")?;
        let dir = self.metadata_dir();
        // What it says goes to a log in the lab's folder, not into a test's or the
        // demo's output.
        let log = std::fs::File::create(self.dir.join("metadata-server.log"))?;
        let child = self.spawn_with(
            &self.router(),
            &[
                bin.to_str().expect("utf-8 path"),
                "metadata-server",
                "--dir",
                dir.to_str().expect("utf-8 path"),
                "--listen",
                "169.254.169.254:80",
            ],
            |c| {
                c.stdout(Stdio::null()).stderr(log);
            },
        )?;
        *self.metadata_pid.lock().unwrap() = Some(child.id());
        let r = self.router();
        wait_for(Duration::from_secs(10), "metadata server listening", || {
            Ok(self
                .exec(&r, &["ss", "-Htln", "sport = :80"])?
                .contains("169.254.169.254:80"))
        })
    }

    /// Stop the metadata server (the appliance then sees connection refused).
    pub fn stop_metadata(&self) {
        if let Some(pid) = self.metadata_pid.lock().unwrap().take() {
            kill_child(pid);
        }
    }

    /// Leave namespaces, processes and Neutron resources in place when dropped
    /// (`cloudpipe-lab up --keep`; `cloudpipe-lab down` removes them).
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.id.clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for pid in self.pids.lock().unwrap().drain(..) {
            kill_child(pid);
        }
        for ns in self.created.lock().unwrap().drain(..).rev() {
            delete_namespace(&ns);
        }
        if let Some(c) = &self.cloud {
            if let Err(e) = c.admin.purge_project(&c.tenant.member.project_id, &self.id) {
                eprintln!("lab {}: cleaning up its Neutron project: {e:#}", self.id);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kill what runs in a namespace (nothing should: the lab killed its own) and delete it.
pub fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain syscall on a PID living in our namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Kill `pid` if it is still our child (unreaped or running), then reap it.
pub fn kill_child(pid: u32) {
    let ours = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces: fields start after the last ')'.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
        == Some(std::process::id());
    if ours {
        // SAFETY: plain syscalls on our own child's PID.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
}

/// Run a command to completion; stdout, or an error naming it with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                last_err
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A workspace binary: `$CLOUDPIPE_BIN_DIR/NAME`, else next to the running test or
/// tool (`target/<profile>/` for `target/<profile>/deps/<test>`), else
/// `$CARGO_TARGET_DIR/debug` or `<workspace>/target/debug`.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("CLOUDPIPE_BIN_DIR") {
        candidates.push(PathBuf::from(d).join(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(d).join("debug").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    );
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} not found (looked in {candidates:?}): run `cargo build -p cloudpiped -p cloudpipe-lab` first"
            )
        })
}

/// A process's memory and CPU use, read from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// CPU time in user and kernel mode (`utime` + `stime`).
    pub cpu: Duration,
    pub threads: u64,
}

/// Memory and CPU of process `pid` (`/proc/PID/status` and `/proc/PID/stat`).
pub fn proc_stats(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3,
    // utime and stime fields 14 and 15 (proc(5)).
    let rest: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> u64 { rest.get(i - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ProcStats {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        cpu: Duration::from_millis((ticks(14) + ticks(15)) * 1000 / hz),
        threads: field("Threads:")?,
    })
}

impl Lab {
    /// The lab network's subnet (as Neutron made it).
    pub fn subnet(&self) -> Ipv4Network {
        self.network(0).cidr
    }

    /// `count` extra source addresses for a load generator in `outside`:
    /// 198.18.0.1 onwards (RFC 2544's benchmarking range) on its loopback, routed
    /// back to it by the router. Returns the `FIRST+COUNT` form `cloudpipe-lab
    /// flood --sources` takes.
    pub fn add_flood_sources(&self, count: u32) -> anyhow::Result<String> {
        let first = u32::from(Ipv4Addr::new(198, 18, 0, 1));
        let batch: String = (0..count)
            .map(|i| format!("address add {}/32 dev lo\n", Ipv4Addr::from(first + i)))
            .collect();
        let path = self.dir.join(format!(
            "sources-{}.batch",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, batch)?;
        run(Command::new("ip")
            .args(["-n", &self.outside(), "-batch"])
            .arg(&path))?;
        self.ip(
            &self.router(),
            &format!("route replace 198.18.0.0/15 via {OUTSIDE}"),
        )?;
        Ok(format!("{}+{count}", Ipv4Addr::from(first)))
    }
}
