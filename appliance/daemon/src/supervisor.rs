//! The serving phase: the only place where sources, the reconciler, the tunnel and
//! the host meet while the appliance runs.
//!
//! Every change to the peer set goes through the one [`Reconciler`]: a metadata
//! reading (polled every `--poll-interval`, or at once on SIGHUP) or a `set` from
//! the control socket becomes a [`Diff`], applied to the device (one transaction)
//! and to the host (proxy entries, routes), then published to the control
//! surfaces as a new [`View`]. Reads of the metadata service run in their own
//! task, so the loop answers the control socket and signals meanwhile.
//!
//! Stopping (SIGTERM, SIGINT): stop accepting on the control socket and the status
//! listener, stop the tunnel's workers, then (in [`crate::run`]) remove the
//! kernel objects; the socket file goes when its guard drops. Within 2 s.

use crate::control::{socket, web, Command, PollCounters, Shared, View};
use crate::notify::Notifier;
use crate::plumbing::Host;
use crate::run::{exit, payload_field, Booted, Settings};
use crate::source::{self, Origin};
use crate::tunnel::{self, TunnelHandle, TunnelTask};
use cloudpipe_core::config::{Config, Peer};
use cloudpipe_core::metadata;
use cloudpipe_core::overlay::Overlay;
use cloudpipe_core::payload::{self, Payload};
use cloudpipe_core::reconcile::{Diff, Reconciler, Source};
use cloudpipe_core::uapi::{errno, SetRequest, UapiError};
use cloudpipe_net::netconf::{self, LinkEvent};
use cloudpipe_net::TunnelError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Time the tunnel's workers get to stop after their handle is dropped; with the
/// cleanup that follows, a stop stays within 2 s.
const TUNNEL_STOP_GRACE: Duration = Duration::from_millis(1200);
/// Control-socket changes waiting for the loop.
const COMMAND_QUEUE: usize = 16;
/// A deleted TUN device is created again at most this many times within
/// [`RECOVERY_WINDOW`]; beyond, the daemon exits and systemd's restart limits
/// take over (the unit's StartLimitBurst).
const MAX_RECOVERIES: usize = 3;
const RECOVERY_WINDOW: Duration = Duration::from_secs(60);
/// How soon a restore that failed (a link not quite ready) is tried again.
const RESTORE_RETRY: Duration = Duration::from_secs(1);

/// Why the metadata watcher read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Poll,
    Sighup,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Poll => "poll",
            Trigger::Sighup => "SIGHUP",
        }
    }
}

/// One reading of the instance properties.
struct Reading {
    trigger: Trigger,
    meta: anyhow::Result<BTreeMap<String, String>>,
}

/// Tasks that end with the serving phase.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Serve until SIGTERM/SIGINT (0) or a failure (its exit status).
pub async fn serve(booted: Booted, settings: &Settings, notifier: &Notifier) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let Booted {
        config,
        source,
        user_data,
        tenant,
        tun_index,
        tun_mtu,
        queues,
        peers,
        meta,
        mut control,
        status_listener,
    } = booted;
    let (mut term, mut int, mut hup, mut usr1) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            tracing::error!("cannot install signal handlers");
            return exit::FAILURE;
        }
    };
    let host = match Host::new(tenant, tun_index, tun_mtu) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "netlink");
            return exit::FAILURE;
        }
    };
    let (reconciler, boot) = Reconciler::new(&config, peers);
    if let Err(errors) = host.apply(&boot.host).await {
        tracing::error!(errors = ?errors, "cannot configure the peers' proxy entries");
        return exit::FAILURE;
    }
    let public_key = config.private_key.public_key();
    let view = View::new(&config, &reconciler, public_key);
    let (handle, mut task) = match tunnel::spawn(&config, &boot, view.names(), queues) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start the data path");
            return exit::FAILURE;
        }
    };
    let shared = Arc::new(Shared::new(handle.device().clone(), view));
    let (commands_tx, mut commands) = mpsc::channel(COMMAND_QUEUE);
    let mut tasks = Tasks(Vec::new());
    match control.take_listener() {
        Ok(l) => tasks
            .0
            .push(tokio::spawn(socket::serve(l, shared.clone(), commands_tx))),
        Err(e) => {
            tracing::error!(error = %e, "control socket");
            return exit::FAILURE;
        }
    }
    tracing::info!(path = %control.path().display(), "control socket ready (wg show, wg set)");
    if let Some(l) = status_listener {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "status listener ready (/status, /metrics)");
        }
        tasks.0.push(tokio::spawn(web::serve(l, shared.clone())));
    }
    let (trigger_tx, trigger_rx) = mpsc::channel(1);
    let (readings_tx, mut readings) = mpsc::channel(1);
    tasks.0.push(tokio::spawn(watch(
        settings.clone(),
        source.clone(),
        user_data,
        config.clone(),
        trigger_rx,
        readings_tx,
    )));

    // Link changes: a tenant NIC that went down and up again, or a TUN device set
    // down, lost routes and proxy entries the appliance puts back. Without the
    // notifications (none here is fatal) the appliance still serves.
    let mut links = netconf::watch_links().unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "cannot watch link changes: a NIC that goes down and up will not be restored");
        mpsc::unbounded_channel().1
    });
    let mut retry = tokio::time::interval(RESTORE_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut sup = Supervisor {
        config,
        settings,
        reconciler,
        host,
        handle,
        shared,
        notifier,
        meta,
        poll_failing: false,
        tenant_up: true,
        restore_pending: false,
        recoveries: Vec::new(),
    };
    notifier.send(&format!("READY=1\nSTATUS={}", sup.status_line()));
    tracing::info!(source = %source, interface = %sup.host.tenant().name, address = %sup.config.address, port = sup.config.listen_port, peers = sup.reconciler.peers().count(), "ready");

    let mut task_done = false;
    let code = loop {
        tokio::select! {
            _ = term.recv() => break 0,
            _ = int.recv() => break 0,
            r = &mut task => {
                let e = match r {
                    Ok(Ok(())) => TunnelError::Panic("the tunnel stopped by itself".into()),
                    Ok(Err(e)) => e,
                    Err(e) => TunnelError::Panic(format!("the tunnel's task: {e}")),
                };
                match sup.recover(&e).await {
                    Some(restarted) => task = restarted,
                    None => {
                        task_done = true;
                        break exit::FAILURE;
                    }
                }
            }
            Some(ev) = links.recv() => {
                if let Some(code) = sup.link(ev).await {
                    break code;
                }
            }
            _ = retry.tick(), if sup.restore_pending => sup.restore().await,
            _ = usr1.recv() => log_status(&sup.handle),
            _ = hup.recv() => {
                // A reading already under way will be followed by this one.
                let _ = trigger_tx.try_send(());
            }
            Some(r) = readings.recv() => sup.reading(r).await,
            Some(c) = commands.recv() => sup.command(c).await,
        }
    };
    if code == 0 {
        tracing::info!("stopping");
    }
    // Stop reading: no more requests, polls or signals acted upon.
    drop(tasks);
    commands.close();
    let Supervisor { handle, .. } = sup;
    drop(handle);
    if !task_done {
        let _ = tokio::time::timeout(TUNNEL_STOP_GRACE, task).await;
    }
    drop(control);
    code
}

struct Supervisor<'a> {
    config: Config,
    settings: &'a Settings,
    reconciler: Reconciler,
    host: Host,
    handle: TunnelHandle,
    shared: Arc<Shared>,
    notifier: &'a Notifier,
    /// The latest instance properties read.
    meta: Option<BTreeMap<String, String>>,
    poll_failing: bool,
    /// The tenant link's state as last seen (for one line per change).
    tenant_up: bool,
    /// A restore failed (the link may not have been ready): retry.
    restore_pending: bool,
    /// When the TUN device was recreated, within the last [`RECOVERY_WINDOW`].
    recoveries: Vec<Instant>,
}

impl Supervisor<'_> {
    /// The data path stopped with `e`. A deleted TUN device is created again and
    /// the workers restart on it with the same sessions (at most
    /// [`MAX_RECOVERIES`] times within [`RECOVERY_WINDOW`]); anything else ends
    /// the daemon, for systemd to restart (`None`).
    async fn recover(&mut self, e: &TunnelError) -> Option<TunnelTask> {
        let tun = self.settings.tun_name.as_str();
        if !matches!(e, TunnelError::Tun(_)) {
            tracing::error!(error = %e, "the data path failed; exiting for systemd to restart");
            return None;
        }
        match self.host.tun_exists(tun).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::error!(%tun, error = %e, "the TUN device failed; exiting for systemd to restart");
                return None;
            }
            Err(err) => {
                tracing::error!(%tun, error = %e, netlink = %format!("{err:#}"), "the TUN device failed and netlink cannot say why; exiting for systemd to restart");
                return None;
            }
        }
        self.recoveries.retain(|t| t.elapsed() < RECOVERY_WINDOW);
        if self.recoveries.len() >= MAX_RECOVERIES {
            tracing::error!(%tun, times = self.recoveries.len(), window_s = RECOVERY_WINDOW.as_secs(), "the TUN device keeps being deleted; exiting for systemd to restart");
            return None;
        }
        self.recoveries.push(Instant::now());
        tracing::warn!(%tun, "the TUN device was deleted; creating it again (sessions are kept)");
        let entries = self.reconciler.host_entries();
        let queues = match self
            .host
            .recreate_tun(self.settings, &self.config, &entries)
            .await
        {
            Ok(q) => q,
            Err(err) => {
                tracing::error!(%tun, error = %format!("{err:#}"), "cannot create the TUN device again; exiting for systemd to restart");
                return None;
            }
        };
        match self.handle.restart(queues) {
            Ok(task) => {
                tracing::info!(%tun, "TUN device created again; the tunnel runs on it");
                Some(task)
            }
            Err(err) => {
                tracing::error!(%tun, error = %format!("{err:#}"), "cannot restart the tunnel; exiting for systemd to restart");
                None
            }
        }
    }

    /// A link changed. When the tenant link or the TUN device is up, what the
    /// kernel dropped while it was down is put back; a tenant link that vanished
    /// ends the daemon (its exit status).
    async fn link(&mut self, ev: LinkEvent) -> Option<u8> {
        let l = &ev.link;
        if l.index == self.host.tenant().index {
            if ev.removed {
                tracing::error!(interface = %l.name, "the tenant interface was removed; exiting for systemd to restart");
                return Some(exit::FAILURE);
            }
            if l.up != self.tenant_up {
                self.tenant_up = l.up;
                if l.up {
                    tracing::info!(interface = %l.name, "the tenant interface is up again");
                } else {
                    tracing::warn!(interface = %l.name, "the tenant interface went down: clients cannot reach the tenant network until it is up again");
                    return None;
                }
            }
        } else if l.index != self.host.tun_index() || ev.removed {
            // A deleted TUN device comes back when the data path notices.
            return None;
        }
        self.restore().await;
        None
    }

    /// Put back routes, proxy entries, address and default route the kernel
    /// dropped; on failure, try again shortly.
    async fn restore(&mut self) {
        let entries = self.reconciler.host_entries();
        match self.host.restore(&self.config, &entries).await {
            Ok(done) => {
                self.restore_pending = false;
                if !done.is_empty() {
                    tracing::info!(restored = %done.join(", "), "network restored");
                }
            }
            Err(e) => {
                if !self.restore_pending {
                    tracing::warn!(error = %format!("{e:#}"), "cannot restore the network yet; retrying");
                }
                self.restore_pending = true;
            }
        }
    }

    fn status_line(&self) -> String {
        let conflicts = match crate::dad::conflicts() {
            0 => String::new(),
            n => format!("; {n} address conflicts on the tenant network (see the log)"),
        };
        format!(
            "serving {} peers on UDP port {}{conflicts}",
            self.reconciler.peers().count(),
            self.config.listen_port
        )
    }

    /// A metadata reading: the overlay's peers go to the reconciler.
    async fn reading(&mut self, r: Reading) {
        let polls = &self.shared.polls;
        let fresh = match r.meta {
            Ok(m) => {
                if self.poll_failing {
                    tracing::info!("metadata service reachable again");
                    self.poll_failing = false;
                }
                m
            }
            Err(e) => {
                PollCounters::count(&polls.failed);
                // One line when it starts failing, not one per poll.
                if !self.poll_failing || r.trigger == Trigger::Sighup {
                    tracing::warn!(error = %e, trigger = %r.trigger.as_str(), "cannot read metadata; keeping current peers");
                }
                self.poll_failing = true;
                return;
            }
        };
        if self.meta.as_ref() == Some(&fresh) && r.trigger == Trigger::Poll {
            PollCounters::count(&polls.unchanged);
            return;
        }
        tracing::info!(
            trigger = %r.trigger.as_str(),
            properties = fresh.len(),
            "instance properties read"
        );
        let peers = peers_from_meta(&self.config, &fresh, "meta_data.json");
        self.meta = Some(fresh);
        let Some(peers) = peers else {
            PollCounters::count(&polls.rejected);
            return;
        };
        PollCounters::count(&polls.changed);
        let diff = self.reconciler.metadata(peers);
        if let Err(errors) = self.apply(diff, Source::Metadata).await {
            tracing::error!(errors = ?errors, "host changes failed");
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Set { request, reply } => {
                let r = self.set(request).await;
                let _ = reply.send(r);
            }
        }
    }

    /// A `set=1` from the control socket. The device keys are checked before
    /// anything changes: the listen port and the key's presence are the payload's.
    async fn set(&mut self, req: SetRequest) -> Result<(), UapiError> {
        let device = self.handle.device().clone();
        if let Some(port) = req.listen_port {
            if port != device.listen_port() {
                return Err(UapiError::new(
                    errno::EADDRINUSE,
                    format!(
                        "listen_port {port}: the appliance listens on UDP {} (the payload's listen_port, which the floating IP and security group name); a new port needs a new payload",
                        device.listen_port()
                    ),
                ));
            }
        }
        if req.private_key == Some(None) {
            return Err(UapiError::new(
                errno::EINVAL,
                "private_key: an all-zero key would remove the appliance's identity; give a key",
            ));
        }
        if let Some(mark) = req.fwmark {
            if mark != device.fwmark() {
                self.handle
                    .set_fwmark(mark)
                    .map_err(|e| UapiError::new(errno::EIO, format!("fwmark {mark}: {e}")))?;
                tracing::info!(fwmark = mark, "fwmark set through the control socket");
            }
        }
        if let Some(Some(key)) = &req.private_key {
            let public = key.public_key();
            if public != device.public_key() {
                device.edit(|e| e.set_private_key(key.clone()));
                tracing::warn!(public_key = %public, "private key changed through the control socket: every session restarts; a restart returns to the payload's key");
                let diff = self.reconciler.set_own_key(public);
                self.apply(diff, Source::Control)
                    .await
                    .map_err(|e| UapiError::new(errno::EIO, e.join("; ")))?;
            }
        }
        let diff = self.reconciler.control(&req);
        for (key, net) in self.reconciler.unrouted() {
            if req
                .peers
                .iter()
                .any(|p| p.public_key == key && p.allowed_ips.contains(&net))
            {
                tracing::warn!(peer = %tunnel::short_key(&key), allowed_ip = %net, "allowed IP gets no host route: inside the tenant subnet but outside the pool, IPv6, or a default route");
            }
        }
        self.apply(diff, Source::Control)
            .await
            .map_err(|e| UapiError::new(errno::EIO, e.join("; ")))
    }

    /// Apply a diff to the device and the host, and publish the new view.
    async fn apply(&mut self, diff: Diff, source: Source) -> Result<(), Vec<String>> {
        let public_key = self.handle.device().public_key();
        let view = View::new(&self.config, &self.reconciler, public_key);
        if diff.is_empty() {
            self.shared.set_view(view);
            return Ok(());
        }
        for c in &diff.conflicts {
            tracing::warn!(allowed_ip = %c.net, from = %tunnel::short_key(&c.from), to = %tunnel::short_key(&c.to), "allowed IP moved to another peer (address conflict)");
        }
        let names = view.names();
        self.shared.set_view(view);
        let changes = self.handle.apply(&diff, names);
        let host = self.host.apply(&diff.host).await;
        if let Err(errors) = &host {
            for e in errors {
                tracing::error!(source = source.as_str(), "host: {e}");
            }
        }
        tracing::info!(
            source = source.as_str(),
            peers = self.reconciler.peers().count(),
            added = changes.added.len(),
            removed = changes.removed.len(),
            updated = changes.updated.len(),
            "peers updated"
        );
        self.notifier.status(&self.status_line());
        host
    }
}

/// The peers an overlay gives, or `None` (logged) if the overlay is bad.
pub fn peers_from_meta(
    config: &Config,
    meta: &BTreeMap<String, String>,
    src: &str,
) -> Option<Vec<Peer>> {
    let overlay = match Overlay::from_properties(meta.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(source = %src, "metadata overlay rejected, keeping the last good peers: {e}");
            return None;
        }
    };
    match overlay.apply(config) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(source = %src, field = %e.field, "metadata overlay rejected, keeping the last good peers: {e}");
            None
        }
    }
}

/// SIGUSR1: one journal line per peer (no addresses or endpoints above DEBUG).
fn log_status(handle: &TunnelHandle) {
    for p in handle.status() {
        let age = p.since_last_handshake.map(|d| d.as_secs());
        tracing::info!(peer = %p.name, handshake_age_s = ?age, rx_bytes = p.rx_bytes, tx_bytes = p.tx_bytes, "peer status");
        tracing::debug!(peer = %p.name, endpoint = ?p.endpoint, "peer endpoint");
    }
}

/// The metadata watcher: reads the instance properties every poll interval and
/// when triggered (SIGHUP, which also re-reads the payload), and hands the
/// readings to the loop.
async fn watch(
    settings: Settings,
    origin: Origin,
    user_data: Vec<u8>,
    config: Config,
    mut trigger: mpsc::Receiver<()>,
    readings: mpsc::Sender<Reading>,
) {
    let polling = !settings.poll_interval.is_zero();
    let mut ticker = tokio::time::interval(if polling {
        settings.poll_interval
    } else {
        Duration::from_secs(3600)
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let t = tokio::select! {
            _ = ticker.tick(), if polling => Trigger::Poll,
            r = trigger.recv() => match r {
                Some(()) => Trigger::Sighup,
                None => return,
            },
        };
        if t == Trigger::Sighup {
            check_payload(&origin, &user_data, &config, &settings).await;
        }
        let meta = read_meta(&settings, &origin).await;
        if readings.send(Reading { trigger: t, meta }).await.is_err() {
            return;
        }
    }
}

/// SIGHUP: read the payload again. It cannot change on a real cloud (user-data is
/// fixed at launch) but a `--payload` file can; a changed configuration is reported,
/// not applied: the pool, keys and addresses of a running appliance stay put.
async fn check_payload(origin: &Origin, booted: &[u8], config: &Config, settings: &Settings) {
    match source::reread(origin, &settings.sources).await {
        Ok(bytes) if bytes == booted => {}
        Ok(bytes) => match payload::decode(&bytes) {
            Ok(Payload::Cloudpipe(c)) if *c == *config => {}
            Ok(_) => {
                tracing::warn!(source = %origin, "the payload changed; restart cloudpiped to apply it (instance properties are applied live)")
            }
            Err(e) => {
                tracing::warn!(source = %origin, field = %payload_field(&e), "the payload changed and would be rejected: {e}")
            }
        },
        Err(e) => tracing::warn!(source = %origin, error = %e, "cannot read the payload again"),
    }
}

/// Instance properties, from the metadata service or (when booted from one) a config
/// drive that can be read without mounting.
async fn read_meta(
    settings: &Settings,
    source: &Origin,
) -> anyhow::Result<BTreeMap<String, String>> {
    let s = &settings.sources;
    let url = s.metadata_url.join(metadata::META_DATA_PATH);
    let http_err = match crate::http::get(&url, source::meta_data_limits(s.request_timeout)).await {
        Ok(doc) => return metadata::parse_meta(&doc).map_err(anyhow::Error::msg),
        Err(e) => anyhow::anyhow!("{url}: {e}"),
    };
    if let Origin::ConfigDrive(p) = source {
        if let Ok(c) = crate::configdrive::read(p, &s.mount_dir) {
            if let Some(doc) = c.meta_data {
                return metadata::parse_meta(&doc).map_err(anyhow::Error::msg);
            }
        }
    }
    Err(http_err)
}
