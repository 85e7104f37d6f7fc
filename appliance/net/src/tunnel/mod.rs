//! The tunnel's workers: for each queue, one thread moves datagrams from UDP to the
//! TUN device and one moves packets from the TUN device to UDP; a timer thread runs
//! the peers' timers. All of them share one [`Device`].
//!
//! Per batch, not per packet: a thread reads a batch (a GRO receive, a TSO
//! super-packet split into segments), runs every packet through its [`Worker`] into
//! output queues that it owns (no allocation once grown, no lock but the peer's),
//! then writes each queue with as few syscalls as the offloads allow.

use crate::io::{TunIo, UdpIo};
use crate::stop::Stop;
use cloudpipe_core::wg::{Device, Transmits, TunBatch, Worker};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// boringtun wants its timers run every 100-250 ms.
pub const TIMER_TICK: Duration = Duration::from_millis(100);
/// Handshake rate limiter and ICMP budget period.
pub const RATE_LIMIT_PERIOD: Duration = Duration::from_secs(1);
/// Starting room of a UDP output queue (grows if a batch needs more).
const TX_BYTES: usize = 256 * 1024;

#[derive(Debug, Default)]
struct IoStats {
    tun_write_errors: AtomicU64,
}

/// What the I/O sides counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// TUN writes the kernel refused (each lost one packet, or one coalesced run).
    pub tun_write_errors: u64,
}

/// Why the tunnel stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("the TUN device failed: {0}")]
    Tun(String),
    #[error("the UDP socket failed: {0}")]
    Udp(String),
    #[error("a worker thread panicked: {0}")]
    Panic(String),
}

impl TunnelError {
    /// The TUN side's error, saying so when the device is gone.
    fn tun(e: &io::Error) -> TunnelError {
        TunnelError::Tun(match e.raw_os_error() {
            // A queue whose device was deleted (drivers/net/tun.c).
            Some(libc::EBADFD) => format!("the device was deleted ({e})"),
            _ => e.to_string(),
        })
    }
}

#[derive(Default)]
struct Exit {
    error: Mutex<Option<TunnelError>>,
    changed: Condvar,
}

impl Exit {
    fn fail(&self, e: TunnelError, stop: &Stop) {
        let mut err = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if err.is_none() {
            // Whoever runs the tunnel decides whether this is the end (the
            // daemon recreates a deleted TUN device).
            tracing::warn!(error = %e, "tunnel stopping");
            *err = Some(e);
        }
        stop.raise();
        self.changed.notify_all();
    }
}

/// A running tunnel. Dropping it stops the threads and waits for them.
pub struct Tunnel {
    device: Arc<Device>,
    io: Arc<IoStats>,
    stop: Arc<Stop>,
    exit: Arc<Exit>,
    threads: Vec<JoinHandle<()>>,
}

impl Tunnel {
    /// Start the workers over `device`: queue `i` pairs `udp[i]` with
    /// `tun[i % tun.len()]`. Both lists must be non-empty.
    pub fn start<U: UdpIo, T: TunIo>(
        device: Arc<Device>,
        udp: Vec<U>,
        tun: Vec<T>,
    ) -> io::Result<Tunnel> {
        if udp.is_empty() || tun.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a tunnel needs a UDP and a TUN queue",
            ));
        }
        let stop = Arc::new(Stop::new()?);
        let exit = Arc::new(Exit::default());
        let udp: Vec<Arc<U>> = udp.into_iter().map(Arc::new).collect();
        let tun: Vec<Arc<T>> = tun.into_iter().map(Arc::new).collect();
        let mut tunnel = Tunnel {
            device: device.clone(),
            io: Arc::new(IoStats::default()),
            stop: stop.clone(),
            exit: exit.clone(),
            threads: Vec::new(),
        };
        for (i, u) in udp.iter().enumerate() {
            let t = &tun[i % tun.len()];
            let ctx = Ctx {
                worker: device.worker(),
                io: tunnel.io.clone(),
                udp: u.clone(),
                tun: t.clone(),
                stop: stop.clone(),
                exit: exit.clone(),
            };
            tunnel.spawn(format!("cp-rx-{i}"), move || ctx.udp_to_tun())?;
            let ctx = Ctx {
                worker: device.worker(),
                io: tunnel.io.clone(),
                udp: u.clone(),
                tun: t.clone(),
                stop: stop.clone(),
                exit: exit.clone(),
            };
            tunnel.spawn(format!("cp-tx-{i}"), move || ctx.tun_to_udp())?;
        }
        let (u, s, d) = (udp[0].clone(), stop.clone(), device);
        tunnel.spawn("cp-timers".into(), move || timers(&d, &*u, &s))?;
        Ok(tunnel)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let (exit, stop) = (self.exit.clone(), self.stop.clone());
        let h = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    exit.fail(TunnelError::Panic(format!("{name}: {msg}")), &stop);
                }
            })?;
        self.threads.push(h);
        Ok(())
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// Counters of the I/O sides (what the device's own counters cannot see).
    pub fn io_stats(&self) -> IoCounters {
        IoCounters {
            tun_write_errors: self.io.tun_write_errors.load(Ordering::Relaxed),
        }
    }

    /// Number of worker threads (two per queue) and the timer thread.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The failure that stopped the tunnel, if one has.
    pub fn failure(&self) -> Option<TunnelError> {
        self.exit
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Block until a worker fails (returns why) or [`Tunnel::stop`] is called
    /// (returns `None`) from another thread through [`Tunnel::stopper`].
    pub fn wait(&self) -> Option<TunnelError> {
        let mut err = self.exit.error.lock().unwrap_or_else(|e| e.into_inner());
        while err.is_none() && !self.stop.is_raised() {
            err = self
                .exit
                .changed
                .wait_timeout(err, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        err.clone()
    }

    /// The signal that stops this tunnel, for another thread.
    pub fn stopper(&self) -> Arc<Stop> {
        self.stop.clone()
    }

    /// Stop every thread and wait for them; returns a failure that happened before.
    pub fn stop(mut self) -> Option<TunnelError> {
        self.shutdown();
        self.failure()
    }

    fn shutdown(&mut self) {
        self.stop.raise();
        self.exit.changed.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Ctx<U, T> {
    worker: Worker,
    io: Arc<IoStats>,
    udp: Arc<U>,
    tun: Arc<T>,
    stop: Arc<Stop>,
    exit: Arc<Exit>,
}

impl<U: UdpIo, T: TunIo> Ctx<U, T> {
    /// Datagrams in, decrypted packets to the TUN device.
    fn udp_to_tun(mut self) {
        let mut batch = self.udp.batch();
        let mut net = Transmits::new(TX_BYTES, self.udp.max_segments());
        let mut tun = self.tun.batch();
        loop {
            match self.udp.recv(&mut batch, &self.stop) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.exit.fail(TunnelError::Udp(e.to_string()), &self.stop),
            }
            net.set_max_segments(self.udp.max_segments());
            let now = Instant::now();
            for (src, d) in batch.datagrams() {
                self.worker.handle_datagram(now, src, d, &mut net, &mut tun);
            }
            if let Err(e) = self.flush(&mut net, &mut tun) {
                return self.exit.fail(e, &self.stop);
            }
        }
    }

    /// Packets from the TUN device in, datagrams out.
    fn tun_to_udp(mut self) {
        let mut packets = self.tun.packets();
        let mut net = Transmits::new(TX_BYTES, self.udp.max_segments());
        let mut tun = self.tun.batch();
        loop {
            match self.tun.recv(&mut packets, &self.stop) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.exit.fail(TunnelError::tun(&e), &self.stop),
            }
            net.set_max_segments(self.udp.max_segments());
            let now = Instant::now();
            for p in packets.iter() {
                self.worker.handle_tun_packet(now, p, &mut net, &mut tun);
            }
            if let Err(e) = self.flush(&mut net, &mut tun) {
                return self.exit.fail(e, &self.stop);
            }
        }
    }

    fn flush(&self, net: &mut Transmits, tun: &mut TunBatch) -> Result<(), TunnelError> {
        let r = match self.tun.send(tun) {
            Ok(refused) => {
                if refused > 0 {
                    self.io
                        .tun_write_errors
                        .fetch_add(refused as u64, Ordering::Relaxed);
                }
                self.udp
                    .send(net, &self.stop)
                    .map_err(|e| TunnelError::Udp(e.to_string()))
            }
            Err(e) => Err(TunnelError::tun(&e)),
        };
        tun.clear();
        net.clear();
        r
    }
}

fn timers<U: UdpIo>(device: &Device, udp: &U, stop: &Stop) {
    let mut net = Transmits::new(16 * 1024, 1);
    let mut last_reset = Instant::now();
    while !stop.sleep(TIMER_TICK) {
        let now = Instant::now();
        device.update_timers(now, &mut net);
        // Errors here are the UDP threads' to report.
        let _ = udp.send(&net, stop);
        net.clear();
        if now.duration_since(last_reset) >= RATE_LIMIT_PERIOD {
            device.reset_rate_limits();
            last_reset = now;
        }
    }
}

#[cfg(test)]
mod tests;
