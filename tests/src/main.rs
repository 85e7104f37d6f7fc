//! `cloudpipe-lab`: the lab for people and scripts, and the lab's metadata server.
//!
//! ```text
//! cloudpipe-lab up [--keep] [--dhcp] [--metadata] [--payload] [--mtu N] [--appliance-tap]
//!                  [--allow CIDR]... [--vm-allow CIDR]...
//!                                                   build a lab, print its namespaces
//!                                                   and addresses (--appliance-tap: the
//!                                                   appliance is a VM on a tap, see
//!                                                   LabOptions::appliance_tap; --allow:
//!                                                   an address pair on the appliance's
//!                                                   port; --vm-allow: a source the
//!                                                   tenant VMs' security group admits)
//! cloudpipe-lab down [ID | --creator PID]          delete kept labs (all whose creator is
//!                                                   gone, or ID, or those PID made)
//! cloudpipe-lab exec ROLE CMD...                    run CMD in the last kept lab's ROLE
//! cloudpipe-lab payload [--masquerade] [--zip|--json] print the lab network's payload
//! cloudpipe-lab metadata-server --dir D --listen ADDR:PORT
//! cloudpipe-lab demo                                the whole mission, narrated, with a verdict
//! cloudpipe-lab flood --kind KIND --target ADDR:PORT [--server-key KEY]
//!     [--client-config FILE --ping ADDR] [--sources FIRST+COUNT|A,B,...]
//!     [--rate PER_SECOND] [--seconds S]             load on the appliance's UDP
//!                                                   port (see flood.rs); JSON report
//! ```

use cloudpipe_lab::{metadata_server, Lab, LabOptions, Role, NS_PREFIX};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const STATE: &str = "/run/cloudpipe-lab";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("metadata-server") => metadata(&args[1..]),
        Some("up") => up(&args[1..]),
        Some("down") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--creator"), Some(pid)) => match pid.parse::<i32>() {
                Ok(pid) => down(Select::Creator(pid)),
                Err(_) => Err(anyhow::anyhow!("--creator needs a process id, got {pid:?}")),
            },
            (Some("--creator"), None) => Err(anyhow::anyhow!("--creator needs a process id")),
            (Some(id), _) => down(Select::Id(id)),
            (None, _) => down(Select::Dead),
        },
        Some("exec") => exec(&args[1..]),
        Some("payload") => payload(&args[1..]),
        Some("demo") => {
            // `cloudpipe-lab demo | head` ends quietly when the reader goes away (the
            // lab is then left to `cloudpipe-lab down`, as scripts/demo's trap runs).
            // SAFETY: SIG_DFL installs no handler code, and no other thread exists yet.
            unsafe {
                let _ = nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGPIPE,
                    nix::sys::signal::SigHandler::SigDfl,
                );
            }
            return cloudpipe_lab::demo::run();
        }
        Some("flood") => flood(&args[1..]),
        _ => {
            eprintln!("usage: cloudpipe-lab up [--keep] [--dhcp] [--metadata] [--payload] [--mtu N] [--appliance-tap] [--allow CIDR]... [--vm-allow CIDR]... | down [ID] | exec ROLE CMD... | payload [--masquerade] [--zip|--json] | metadata-server --dir D --listen ADDR:PORT | demo | flood --kind initiation|garbage|unknown-index|replay|bad-mac --target ADDR:PORT ...");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cloudpipe-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn metadata(args: &[String]) -> anyhow::Result<ExitCode> {
    let dir = flag_value(args, "--dir").ok_or_else(|| anyhow::anyhow!("--dir is required"))?;
    let listen = flag_value(args, "--listen").unwrap_or_else(|| "169.254.169.254:80".into());
    metadata_server::serve(PathBuf::from(dir), &listen)?;
    Ok(ExitCode::SUCCESS)
}

fn flood(args: &[String]) -> anyhow::Result<ExitCode> {
    use cloudpipe_lab::flood::{self, Kind, Options};
    let kind = flag_value(args, "--kind")
        .and_then(|k| Kind::parse(&k))
        .ok_or_else(|| {
            anyhow::anyhow!("--kind is one of initiation, garbage, unknown-index, replay, bad-mac")
        })?;
    let target = flag_value(args, "--target")
        .ok_or_else(|| {
            anyhow::anyhow!("--target ADDR:PORT is required (the floating IP and UDP port)")
        })?
        .parse()
        .map_err(|e| anyhow::anyhow!("--target: {e}"))?;
    let client_config = flag_value(args, "--client-config")
        .map(|f| {
            std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("--client-config {f}: {e}"))
        })
        .transpose()?;
    let number = |name: &str, default: f64| -> anyhow::Result<f64> {
        flag_value(args, name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name}: {v:?} is not a number"))
        })
    };
    let opts = Options {
        kind,
        target,
        server_key: flag_value(args, "--server-key")
            .map(|k| k.parse())
            .transpose()
            .map_err(|e| anyhow::anyhow!("--server-key: {e}"))?,
        client_config,
        ping: flag_value(args, "--ping")
            .map(|a| a.parse())
            .transpose()
            .map_err(|e| anyhow::anyhow!("--ping: {e}"))?,
        sources: flag_value(args, "--sources")
            .map(|s| flood::parse_sources(&s))
            .transpose()?
            .unwrap_or_default(),
        rate: number("--rate", 0.0)? as u64,
        duration: std::time::Duration::from_secs_f64(number("--seconds", 5.0)?),
    };
    flood::stop_on_signals()?;
    let report = flood::run(&opts)?;
    println!("{}", report.to_json(kind));
    Ok(ExitCode::SUCCESS)
}

fn up(args: &[String]) -> anyhow::Result<ExitCode> {
    let keep = args.iter().any(|a| a == "--keep");
    let mtu = match flag_value(args, "--mtu") {
        Some(m) => m
            .parse()
            .map_err(|_| anyhow::anyhow!("--mtu {m:?}: not a number"))?,
        None => cloudpipe_lab::DEFAULT_MTU,
    };
    let lab = Lab::new(LabOptions {
        dhcp: args.iter().any(|a| a == "--dhcp"),
        metadata: args.iter().any(|a| a == "--metadata"),
        mtu,
        appliance_tap: args.iter().any(|a| a == "--appliance-tap"),
        ..LabOptions::default()
    })?;
    // More allowed address pairs on the appliance's port (networks it sends from).
    for (i, a) in args.iter().enumerate() {
        if a == "--allow" {
            let cidr = args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("--allow needs a CIDR"))?;
            let cidr = cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("--allow {cidr}: {e}"))?;
            lab.allow_address_pair(0, cidr)?;
        }
        // More sources the tenant VMs admit (the bench's OpenVPN network and its
        // path with no VPN at all).
        if a == "--vm-allow" {
            let cidr = args
                .get(i + 1)
                .ok_or_else(|| anyhow::anyhow!("--vm-allow needs a CIDR"))?;
            let cidr = cidr
                .parse()
                .map_err(|e| anyhow::anyhow!("--vm-allow {cidr}: {e}"))?;
            lab.allow_vm_ingress(cidr)?;
        }
    }
    if args.iter().any(|a| a == "--payload") {
        let config = cloudpipe_lab::payloads::config(cloudpipe_core::config::Mode::ProxyArp);
        lab.set_user_data(&cloudpipe_lab::payloads::guest(&config))?;
    }
    for role in Role::ALL {
        println!("{:<12} {}", role.suffix(), lab.ns(role));
    }
    println!("{:<12} {}", "metadata", lab.metadata_dir().display());
    println!("{:<12} {}", "project", lab.id());
    println!("{:<12} {}", "mtu", lab.mtu());
    println!("{:<12} {}", "floating-ip", lab.floating_ip());
    println!("{:<12} {}", "tenant-vm-ip", lab.tenant_vm_ip());
    println!("{:<12} {}", "appliance-ip", cloudpipe_lab::APPLIANCE);
    println!("{:<12} {}", "appliance-mac", lab.appliance_mac()?);
    if args.iter().any(|a| a == "--appliance-tap") {
        println!("{:<12} {}", "appliance-tap", cloudpipe_lab::APPLIANCE_TAP);
    }
    if keep {
        std::fs::create_dir_all(STATE)?;
        std::fs::write(format!("{STATE}/current"), lab.id())?;
        let id = lab.keep();
        println!("kept: `cloudpipe-lab exec ROLE CMD...`, `cloudpipe-lab down {id}`");
        return Ok(ExitCode::SUCCESS);
    }
    println!("press Enter to tear the lab down");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(ExitCode::SUCCESS)
}

fn payload(args: &[String]) -> anyhow::Result<ExitCode> {
    use cloudpipe_core::config::Mode;
    use std::io::Write;
    let mode = if args.iter().any(|a| a == "--masquerade") {
        Mode::Masquerade
    } else {
        Mode::ProxyArp
    };
    let config = cloudpipe_lab::payloads::config(mode);
    let bytes = if args.iter().any(|a| a == "--json") {
        let mut v = serde_json::to_vec_pretty(&config.to_file())?;
        v.push(b'\n');
        v
    } else if args.iter().any(|a| a == "--zip") {
        cloudpipe_lab::payloads::zip(&config)
    } else {
        cloudpipe_lab::payloads::guest(&config)
    };
    std::io::stdout().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

fn current() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(format!("{STATE}/current"))
        .map_err(|_| anyhow::anyhow!("no kept lab: run `cloudpipe-lab up --keep`"))?
        .trim()
        .to_string())
}

fn exec(args: &[String]) -> anyhow::Result<ExitCode> {
    let role = args
        .first()
        .and_then(|r| Role::parse(r))
        .ok_or_else(|| anyhow::anyhow!("ROLE is one of router, cloudpipe, tenant-vm, outside"))?;
    anyhow::ensure!(args.len() > 1, "no command given");
    let ns = format!("{}-{}", current()?, role.suffix());
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(&args[1..])
        .status()?;
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

/// A lab id's creator PID, from `cp<pid>x<n>`.
fn creator(id: &str) -> Option<i32> {
    let (pid, n) = id.strip_prefix(NS_PREFIX)?.split_once('x')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Which labs `down` deletes.
enum Select<'a> {
    /// Every lab whose creating process is gone (kept labs included: their
    /// creator, `cloudpipe-lab up --keep`, has exited).
    Dead,
    /// The lab with this id.
    Id(&'a str),
    /// The labs this process made (what a script's trap cleans up, leaving other
    /// people's kept labs alone).
    Creator(i32),
}

fn down(only: Select) -> anyhow::Result<ExitCode> {
    let selected = |id: &str| match (&only, creator(id)) {
        (Select::Id(o), _) => *o == id,
        (Select::Creator(c), Some(pid)) => *c == pid,
        // SAFETY: kill with signal 0 only checks for existence.
        (Select::Dead, Some(pid)) => (unsafe { libc::kill(pid, 0) }) != 0,
        (_, None) => false,
    };
    let list = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    let mut removed = 0;
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        // Every lab namespace is `<id>-<something>`, the id being `cp<pid>x<n>`.
        let Some((id, _)) = ns.split_once('-') else {
            continue;
        };
        if creator(id).is_none() || !selected(id) {
            continue;
        }
        cloudpipe_lab::delete_namespace(ns);
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("cloudpipe-lab-{id}")));
        println!("deleted {ns}");
        removed += 1;
    }
    if removed == 0 {
        println!("no lab namespaces to delete");
    }
    // Their projects in the lab's Keystone and Neutron.
    match cloudpipe_lab::openstack::state()
        .and_then(|s| cloudpipe_lab::openstack::Session::admin(&s))
    {
        Ok(admin) => {
            let projects = admin.get("keystone:/projects")?;
            for p in projects["projects"].as_array().into_iter().flatten() {
                let (Some(name), Some(pid)) = (p["name"].as_str(), p["id"].as_str()) else {
                    continue;
                };
                if creator(name).is_some() && selected(name) {
                    admin.purge_project(pid, name)?;
                    println!("deleted project {name}");
                }
            }
        }
        Err(e) => eprintln!("cloudpipe-lab: Neutron projects left as they are: {e:#}"),
    }
    let _ = std::fs::remove_file(format!("{STATE}/current"));
    Ok(ExitCode::SUCCESS)
}
