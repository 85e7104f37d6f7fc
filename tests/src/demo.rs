//! `cloudpipe-lab demo`: the mission told as a story for a new user. Each step is
//! the command a user types and its real output (secrets masked); the lab plays
//! Neutron and Nova. The last line is the verdict, `PASS` or `FAIL` with what
//! failed, and the exit status follows it. The README's first command
//! (`scripts/demo`) runs it.

use crate::mission::{Mission, NETWORK, READY_WITHIN};
use crate::wg_client::WgClient;
use crate::{bin_path, wait_for, Lab, LabOptions, SUBNET, WG_PORT};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The route the network pushes besides its subnet (a DMZ behind the router).
const ROUTE: &str = "192.168.50.0/24";
/// How long the revocation may take to reach the appliance: the lab's daemon polls
/// instance properties every second; a loaded machine gets a wide margin.
const REVOKED_WITHIN: Duration = Duration::from_secs(15);
/// A handshake on a loaded 2-core machine.
const CONNECT_WITHIN: Duration = Duration::from_secs(20);

/// Run the story; print the verdict last.
pub fn run() -> ExitCode {
    let mut story = Story::new();
    // Steps report failures as values; a panic in a helper is a failure too, told
    // in one line rather than as a Rust panic message.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tell(&mut story)));
    let _ = std::panic::take_hook();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => story.check(&format!("{e:#}"), false),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the demo stopped".into());
            story.check(text.lines().next().unwrap_or_default(), false);
        }
    }
    story.verdict()
}

fn tell(story: &mut Story) -> anyhow::Result<()> {
    story.chapter("A tenant network of a real Neutron, wired in network namespaces");
    if crate::skip_unless_root() {
        anyhow::bail!("the demo needs root (network namespaces)");
    }
    // The network is launched below, from the recipe the CLI prints.
    let lab = Lab::new(LabOptions {
        dhcp: true,
        metadata: true,
        launch: None,
        ..LabOptions::default()
    })?;
    story.dir = lab.dir().join("demo");
    for who in ["alice", "bob"] {
        std::fs::create_dir_all(story.dir.join(who))?;
    }
    let endpoint = format!("{}:{WG_PORT}", lab.floating_ip());
    story.say(&format!(
        "A project in a real Keystone and Neutron on loopback ({id}) with the tenant \
         network {NETWORK} ({SUBNET}, MTU {mtu}) behind a router (gateway {gw}, the \
         metadata service 169.254.169.254) and the floating IP {fip} it holds; the lab \
         wires a tenant VM, the cloudpipe VM and two users outside, alice and bob, the \
         way Neutron's agents would. The commands below run in {dir}.",
        id = lab.id(),
        mtu = lab.mtu(),
        gw = crate::GATEWAY,
        fip = lab.floating_ip(),
        dir = story.dir.display()
    ));
    let home = lab.add_external_host("home", "ext1", 100)?;
    let mut m = Mission {
        state: lab.dir().join("state"),
        lab,
        daemon: None,
    };
    story.state = m.state.clone();

    story.chapter("The operator creates the network's cloudpipe and launches it");
    story.say(
        "Keys, a pool of 5 client addresses below broadcast (Nova's rule), a pushed \
         route; the endpoint is the project's floating IP, the MTU the network's.",
    );
    let mtu = m.lab.mtu().to_string();
    story.cloudpipe(&[
        "network",
        "create",
        NETWORK,
        "--cidr",
        SUBNET,
        "--clients",
        "5",
        "--endpoint",
        &endpoint,
        "--mtu",
        &mtu,
        "--route",
        ROUTE,
    ])?;
    story.say(
        "What the operator runs in OpenStack, as a project member. The lab applies the \
         same recipe (`cloudpipe openstack lab --json`) through Neutron's API: allocation \
         pools, security group, the appliance's port and the floating IP.",
    );
    story.cloudpipe(&["openstack", NETWORK])?;
    let recipe =
        serde_json::from_str(&story.quiet_cloudpipe(&["openstack", NETWORK, "--json"])?)?;
    m.lab.launch(&recipe)?;
    let vm = m.lab.tenant_vm_ip().to_string();
    story.say(&format!(
        "Launched: Neutron gave the tenant VM {vm} from the allocation pool."
    ));

    story.chapter("Two clients");
    story.say("alice gets a config with keys made by the CLI:");
    story.cloudpipe(&[
        "client",
        "add",
        NETWORK,
        "alice",
        "--output",
        "alice/lab.conf",
    ])?;
    story.shell("cat alice/lab.conf", "the operator", None)?;
    story.say(
        "bob makes his key pair on his own machine, as the WireGuard apps do, and gives \
         the operator only the public key:",
    );
    let bob_public = story
        .shell(
            "umask 077; wg genkey | tee bob/private.key | wg pubkey",
            "bob",
            None,
        )?
        .trim()
        .to_string();
    story.cloudpipe(&[
        "client",
        "add",
        NETWORK,
        "bob",
        "--public-key",
        &bob_public,
        "--output",
        "bob/lab.conf",
    ])?;
    story.say("bob puts his private key where the placeholder is:");
    story.shell(
        "sed -i \"s|^PrivateKey = <.*>$|PrivateKey = $(cat bob/private.key)|\" bob/lab.conf",
        "bob",
        None,
    )?;
    let bob_private = std::fs::read_to_string(story.dir.join("bob/private.key"))?;
    let bob_conf = std::fs::read_to_string(story.dir.join("bob/lab.conf"))?;
    anyhow::ensure!(
        bob_conf.contains(&format!("PrivateKey = {}\n", bob_private.trim())),
        "bob's config did not take his key:\n{bob_conf}"
    );
    let leaked = files_under(&m.state)
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(bob_private.trim())));
    story.check(
        "bob's private key never reached the operator's CLI",
        !leaked,
    );
    story.cloudpipe(&["client", "list", NETWORK])?;

    story.chapter("The cloudpipe VM boots");
    story.cloudpipe(&[
        "payload",
        NETWORK,
        "--encoding",
        "guest",
        "--output",
        "user-data",
    ])?;
    story.say(
        "The lab's metadata service serves user-data as Nova would, and cloudpiped \
         starts in the cloudpipe VM:",
    );
    m.lab
        .set_user_data(&std::fs::read(story.dir.join("user-data"))?)?;
    m.lab.set_meta([])?;
    let mut daemon = m.lab.start_daemon(&[])?;
    let ready = daemon.wait_ready(READY_WITHIN);
    story.check(
        "cloudpiped booted from the payload and said READY",
        ready.is_ok(),
    );
    let took = ready?;
    m.daemon = Some(daemon);
    story.say(&format!(
        "READY after {} ms: it took the tenant address .2, created cloudpipe0 and listens on UDP 1194.",
        took.as_millis()
    ));
    let appliance = m.lab.cloudpipe();
    story.shell(
        "ip -4 -br addr show dev eth0",
        "the cloudpipe VM",
        Some(&appliance),
    )?;
    story.shell("ip neigh show proxy", "the cloudpipe VM", Some(&appliance))?;

    story.chapter("alice and bob connect");
    story.say(
        "Each brings the tunnel up from the config (what `wg-quick up lab.conf` does: \
         wireguard-go, `wg setconf`, the address and the routes).",
    );
    let outside = m.lab.outside();
    let alice = connect(&m, story, &outside, "alice")?;
    let _bob = connect(&m, story, &home, "bob")?;
    story.shell(
        &format!("wg show {}", alice.iface()),
        "alice",
        Some(&outside),
    )?;

    story.chapter("The external users are neighbours on the tenant network");
    let vm_ns = m.lab.tenant_vm();
    let ok = story.ping(&outside, "alice", &vm)?;
    story.check("alice reaches the tenant VM", ok);
    let ok = story.ping(&vm_ns, "the tenant VM", "10.77.0.250")?;
    story.check("the tenant VM reaches alice", ok);
    let ok = story.ping(&vm_ns, "the tenant VM", "10.77.0.251")?;
    story.check("the tenant VM reaches bob", ok);
    story.cloudpipe(&["client", "show", NETWORK, "alice"])?;

    story.chapter("alice leaves: the operator revokes her");
    story.say(
        "User data cannot change after boot: the change goes to the running appliance \
         as instance properties.",
    );
    story.cloudpipe(&["client", "revoke", NETWORK, "alice"])?;
    story.say(
        "The lab plays Nova: it sets those properties on the instance (its metadata \
         service's meta_data.json), and cloudpiped picks them up.",
    );
    publish(&m, story)?;
    story.cloudpipe(&["publish", NETWORK, "--done"])?;
    let cut = wait_for(REVOKED_WITHIN, "alice cut off", || {
        Ok(!crate::mission::ping(&m.lab, &outside, &vm, None))
    });
    let alice_fails = !story.ping(&outside, "alice, revoked", &vm)?;
    story.check(
        "alice is cut off after the revocation",
        cut.is_ok() && alice_fails,
    );
    let ok = story.ping(&home, "bob", &vm)?;
    story.check(
        "bob still reaches the tenant VM after alice's revocation",
        ok,
    );

    story.chapter("Tearing the lab down");
    Ok(())
}

/// Bring `who`'s tunnel up from `<who>/lab.conf` in namespace `ns`, and wait until
/// it reaches the tenant VM.
fn connect(m: &Mission, story: &mut Story, ns: &str, who: &str) -> anyhow::Result<WgClient> {
    let conf = std::fs::read_to_string(story.dir.join(who).join("lab.conf"))?;
    let iface = format!("{}{}", m.lab.id(), &who[..1]);
    let c = WgClient::up(ns, &iface, &conf, &m.lab.dir().join("clients"))
        .map_err(|e| anyhow::anyhow!("{who}'s tunnel: {e}"))?;
    let up = wait_for(CONNECT_WITHIN, &format!("{who}'s handshake"), || {
        Ok(crate::mission::ping(
            &m.lab,
            ns,
            &m.lab.tenant_vm_ip().to_string(),
            None,
        ))
    });
    story.check(&format!("{who}'s tunnel comes up"), up.is_ok());
    up?;
    Ok(c)
}

/// What Nova does with `openstack server set --property`: the properties `cloudpipe
/// publish --json` says the instance should have go into meta_data.json.
fn publish(m: &Mission, story: &Story) -> anyhow::Result<()> {
    let out = story.quiet_cloudpipe(&["publish", NETWORK, "--json"])?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&out)?;
    m.lab.set_meta(
        map.iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())),
    )?;
    Ok(())
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The narrator: prints steps, runs commands showing their real output, and keeps
/// the checks for the verdict.
struct Story {
    started: Instant,
    /// Where the users' files live; commands run here.
    dir: PathBuf,
    /// The CLI's state directory (its secrets are masked in what is shown).
    state: PathBuf,
    chapters: usize,
    checks: Vec<(String, bool)>,
}

impl Story {
    fn new() -> Story {
        Story {
            started: Instant::now(),
            dir: std::env::temp_dir(),
            state: PathBuf::new(),
            chapters: 0,
            checks: Vec::new(),
        }
    }

    fn chapter(&mut self, title: &str) {
        self.chapters += 1;
        println!("\n== {}. {title}", self.chapters);
    }

    fn say(&self, text: &str) {
        println!("\n{text}");
    }

    fn check(&mut self, what: &str, ok: bool) {
        println!("   [{}] {what}", if ok { "ok" } else { "FAILED" });
        self.checks.push((what.to_string(), ok));
    }

    /// `PASS: ...` or `FAIL: ...` as the last line; the exit status follows it.
    fn verdict(&self) -> ExitCode {
        let took = self.started.elapsed().as_secs();
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(w, _)| w.as_str())
            .collect();
        println!();
        if failed.is_empty() && !self.checks.is_empty() {
            println!(
                "PASS: all {} checks passed: external users reach the tenant network through \
                 the cloudpipe, and a revoked one is cut off while the other stays ({took} s)",
                self.checks.len()
            );
            ExitCode::SUCCESS
        } else {
            println!(
                "FAIL: {} of {} checks failed: {} ({took} s)",
                failed.len(),
                self.checks.len(),
                failed.join("; ")
            );
            ExitCode::FAILURE
        }
    }

    /// The secrets that may show up in output: the CLI's keys (server, clients'
    /// private and preshared keys) and bob's own private key.
    fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut files = files_under(&self.state);
        files.push(self.dir.join("bob/private.key"));
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            if f.ends_with("server.key") || f.ends_with("private.key") {
                out.push(text.trim().to_string());
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                for k in ["private_key", "preshared_key"] {
                    if let Some(s) = v[k].as_str() {
                        out.push(s.to_string());
                    }
                }
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    fn show(&self, output: &str) {
        let mut text = output.to_string();
        for s in self.secrets() {
            text = text.replace(&s, "(secret, hidden in this demo)");
        }
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
    }

    /// Run `cmd` with standard output and error into one file, as a terminal shows
    /// them, in order; the text and whether it succeeded.
    fn capture(&self, cmd: &mut Command) -> anyhow::Result<(String, bool)> {
        let path = self.dir.join(".output");
        let file = std::fs::File::create(&path)?;
        let status = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .status()?;
        let mut text = String::new();
        std::fs::File::open(&path)?.read_to_string(&mut text)?;
        let _ = std::fs::remove_file(path);
        Ok((text, status.success()))
    }

    fn cli(&self) -> anyhow::Result<Command> {
        let mut c = Command::new(bin_path("cloudpipe")?);
        c.env("CLOUDPIPE_STATE_DIR", &self.state);
        Ok(c)
    }

    /// `$ cloudpipe ARGS` and its real output. A failing command fails the story.
    fn cloudpipe(&self, args: &[&str]) -> anyhow::Result<()> {
        println!("\n$ cloudpipe {}", shell_words(args));
        let (text, ok) = self.capture(self.cli()?.args(args))?;
        self.show(&text);
        anyhow::ensure!(ok, "cloudpipe {} failed", args.join(" "));
        Ok(())
    }

    /// Run the CLI without showing it (what the lab does in Nova's place); its
    /// standard output.
    fn quiet_cloudpipe(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self
            .cli()?
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "cloudpipe {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
        Ok(String::from_utf8(o.stdout)?)
    }

    /// `$ CMD    # WHO` (a shell command, in namespace `ns` if given) and its output,
    /// which it returns. A failing command fails the story.
    fn shell(&self, cmd: &str, who: &str, ns: Option<&str>) -> anyhow::Result<String> {
        println!("\n$ {cmd}    # {who}");
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c
            }
            None => Command::new("env"),
        };
        c.args(["sh", "-c", cmd]);
        let (text, ok) = self.capture(&mut c)?;
        self.show(&text);
        anyhow::ensure!(ok, "`{cmd}` failed");
        Ok(text)
    }

    /// `$ ping -c 3 DST    # from WHO` and its real output; whether every ping was
    /// answered.
    fn ping(&self, ns: &str, who: &str, dst: &str) -> anyhow::Result<bool> {
        println!("\n$ ping -c 3 -W 1 {dst}    # {who}");
        let (text, ok) = self.capture(Command::new("ip").args([
            "netns", "exec", ns, "ping", "-n", "-c", "3", "-i", "0.3", "-W", "1", dst,
        ]))?;
        self.show(&text);
        Ok(ok)
    }
}

/// Arguments as one would type them: quoted when they hold anything but plain
/// characters.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
