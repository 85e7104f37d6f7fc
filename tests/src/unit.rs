//! The systemd unit's restart policy as systemd applies it (systemd.service(5),
//! `Restart=`, `RestartSec=`, `RestartPreventExitStatus=`), read from the unit the
//! image ships (configs/cloudpiped.service). The lab has no systemd as PID 1, so a
//! fault test plays systemd's part: it restarts the daemon exactly when, and as
//! late as, the unit says systemd would.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// The unit the image installs.
pub const SHIPPED_UNIT: &str = include_str!("../../configs/cloudpiped.service");

/// Signals systemd counts as a clean exit (systemd.service(5), `SuccessExitStatus=`).
const CLEAN_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// `no`, `always`, `on-success`, `on-failure`, `on-abnormal`, `on-abort`,
    /// `on-watchdog`.
    pub restart: String,
    pub restart_sec: Duration,
    /// Exit codes that never lead to a restart.
    pub prevent_codes: Vec<i32>,
}

impl RestartPolicy {
    /// The policy of a unit file's `[Service]` section (systemd's defaults for what
    /// it does not say: `Restart=no`, `RestartSec=100ms`).
    pub fn of_unit(text: &str) -> anyhow::Result<RestartPolicy> {
        let mut p = RestartPolicy {
            restart: "no".into(),
            restart_sec: Duration::from_millis(100),
            prevent_codes: Vec::new(),
        };
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "Restart" => p.restart = value.trim().to_string(),
                "RestartSec" => p.restart_sec = parse_timespan(value.trim())?,
                "RestartPreventExitStatus" => {
                    for w in value.split_whitespace() {
                        p.prevent_codes.push(w.parse().map_err(|_| {
                            anyhow::anyhow!(
                                "RestartPreventExitStatus: {w:?} (only codes are read here)"
                            )
                        })?);
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// The shipped unit's policy.
    pub fn shipped() -> RestartPolicy {
        RestartPolicy::of_unit(SHIPPED_UNIT).expect("the shipped unit parses")
    }

    /// Whether systemd restarts the service after its main process ended with
    /// `status` (no timeouts or watchdog here).
    pub fn restarts(&self, status: ExitStatus) -> bool {
        if let Some(code) = status.code() {
            if self.prevent_codes.contains(&code) {
                return false;
            }
        }
        let clean = match (status.code(), status.signal()) {
            (Some(code), _) => code == 0,
            (None, Some(sig)) => CLEAN_SIGNALS.contains(&sig),
            _ => false,
        };
        let unclean_signal = status.signal().is_some_and(|s| !CLEAN_SIGNALS.contains(&s));
        match self.restart.as_str() {
            "always" => true,
            "on-success" => clean,
            "on-failure" => !clean,
            "on-abnormal" | "on-abort" => unclean_signal,
            _ => false,
        }
    }
}

/// A systemd time span as units use it: `5`, `5s`, `500ms`, `1min`.
fn parse_timespan(s: &str) -> anyhow::Result<Duration> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| anyhow::anyhow!("time span {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => n,
        "ms" | "msec" => n / 1000.0,
        "m" | "min" => n * 60.0,
        _ => anyhow::bail!("time span {s:?}: unit not read here"),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }
    fn killed(sig: i32) -> ExitStatus {
        ExitStatus::from_raw(sig)
    }

    #[test]
    fn the_shipped_unit_restarts_failures_but_not_bad_payloads() {
        let p = RestartPolicy::shipped();
        assert_eq!(p.restart, "on-failure");
        assert_eq!(p.restart_sec, Duration::from_secs(5));
        assert!(p.restarts(killed(libc::SIGKILL)), "SIGKILL is unclean");
        assert!(p.restarts(exited(1)));
        assert!(!p.restarts(exited(0)));
        assert!(
            !p.restarts(killed(libc::SIGTERM)),
            "SIGTERM is a clean stop"
        );
        assert!(!p.restarts(exited(2)), "a rejected payload stays down");
        assert!(!p.restarts(exited(3)));
    }

    #[test]
    fn other_policies_and_spans() {
        let p =
            RestartPolicy::of_unit("[Service]\nRestart=on-abnormal\nRestartSec=250ms\n").unwrap();
        assert!(p.restarts(killed(libc::SIGSEGV)));
        assert!(!p.restarts(exited(1)));
        assert_eq!(p.restart_sec, Duration::from_millis(250));
        let none = RestartPolicy::of_unit("[Service]\n").unwrap();
        assert!(!none.restarts(killed(libc::SIGKILL)));
        assert!(RestartPolicy::of_unit("RestartSec=5weeks").is_err());
    }
}
