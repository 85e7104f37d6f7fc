//! Where the payload comes from, and in which order sources are tried.
//!
//! Default order (the boot issue): a config drive labelled `config-2`, then the
//! metadata service's `openstack/latest/user_data`, then `latest/user-data`.
//! `--payload FILE` replaces them all. The metadata service may not be up yet at boot:
//! transient failures are retried with capped exponential backoff and jitter until
//! the boot budget runs out; a 404 on every user-data path means "no payload".

use crate::backoff::Backoff;
use crate::configdrive;
use crate::http::{self, HttpError, Limits, Url};
use cloudpipe_core::metadata;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// First retry delay: the metadata proxy usually comes up within a second or two.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest pause between tries: short enough to boot soon after the server appears.
const BACKOFF_CAP: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigDrive {
    /// Look for a block device labelled `config-2`.
    Auto,
    /// Never use a config drive.
    Off,
    /// A device, image file or mounted directory.
    Path(PathBuf),
}

impl std::str::FromStr for ConfigDrive {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => ConfigDrive::Auto,
            "none" | "off" => ConfigDrive::Off,
            "" => return Err("empty: use auto, none or a path".into()),
            p => ConfigDrive::Path(PathBuf::from(p)),
        })
    }
}

/// How to look for the payload.
#[derive(Debug, Clone)]
pub struct Sources {
    pub payload_file: Option<PathBuf>,
    pub config_drive: ConfigDrive,
    pub metadata_url: Url,
    /// Total time allowed for reaching the metadata service.
    pub boot_timeout: Duration,
    /// One HTTP request, body included.
    pub request_timeout: Duration,
    /// Where a vfat config drive is mounted while it is read.
    pub mount_dir: PathBuf,
}

/// Where a payload was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    ConfigDrive(PathBuf),
    Metadata(Url),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::ConfigDrive(p) => write!(f, "config drive {}", p.display()),
            Origin::Metadata(u) => write!(f, "{u}"),
        }
    }
}

/// A payload and where it came from.
#[derive(Debug)]
pub struct Fetched {
    pub source: Origin,
    pub user_data: Vec<u8>,
    /// `meta_data.json`, when the source has one.
    pub meta_data: Option<Vec<u8>>,
    /// `network_data.json` (links with their MTU), when the source has one.
    pub network_data: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no payload: {0}")]
    NoPayload(String),
    #[error("metadata service not usable within {budget:?} ({attempts} attempts): last error from {url}: {error}")]
    Unreachable {
        budget: Duration,
        attempts: u32,
        url: String,
        error: HttpError,
    },
    #[error("{0}")]
    Other(String),
}

pub fn user_data_limits(timeout: Duration) -> Limits {
    Limits {
        timeout,
        // What payload::decode would refuse anyway: no point downloading more.
        max_body: cloudpipe_core::payload::MAX_INPUT,
    }
}

pub fn meta_data_limits(timeout: Duration) -> Limits {
    Limits {
        timeout,
        max_body: metadata::MAX_META_DATA,
    }
}

/// Find the payload, trying each source in order.
pub async fn fetch(s: &Sources) -> Result<Fetched, SourceError> {
    if let Some(path) = &s.payload_file {
        let user_data = read_capped(path)?;
        return Ok(Fetched {
            source: Origin::File(path.clone()),
            user_data,
            meta_data: None,
            network_data: None,
        });
    }
    let drive = match &s.config_drive {
        ConfigDrive::Off => None,
        ConfigDrive::Path(p) => Some(p.clone()),
        ConfigDrive::Auto => configdrive::find_device().map(|(p, _)| p),
    };
    if let Some(dev) = drive {
        let source = Origin::ConfigDrive(dev.clone());
        tracing::info!(%source, "reading config drive");
        let c = configdrive::read(&dev, &s.mount_dir)
            .map_err(|e| SourceError::Other(format!("{source}: {e:#}")))?;
        let Some(user_data) = c.user_data else {
            return Err(SourceError::NoPayload(format!(
                "{source} has no {}",
                configdrive::USER_DATA
            )));
        };
        return Ok(Fetched {
            source,
            user_data,
            meta_data: c.meta_data,
            network_data: c.network_data,
        });
    }
    fetch_metadata(s).await
}

/// Read the payload again from where it was found, once (no retries): SIGHUP.
pub async fn reread(origin: &Origin, s: &Sources) -> Result<Vec<u8>, String> {
    match origin {
        Origin::File(p) => read_capped(p).map_err(|e| e.to_string()),
        Origin::ConfigDrive(p) => configdrive::read(p, &s.mount_dir)
            .map_err(|e| format!("{e:#}"))?
            .user_data
            .ok_or_else(|| format!("no {}", configdrive::USER_DATA)),
        Origin::Metadata(u) => http::get(u, user_data_limits(s.request_timeout))
            .await
            .map_err(|e| e.to_string()),
    }
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, SourceError> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| SourceError::Other(format!("payload file {}: {e}", path.display())))?;
    let mut v = Vec::new();
    f.take(cloudpipe_core::payload::MAX_INPUT as u64 + 1)
        .read_to_end(&mut v)
        .map_err(|e| SourceError::Other(format!("payload file {}: {e}", path.display())))?;
    Ok(v)
}

async fn fetch_metadata(s: &Sources) -> Result<Fetched, SourceError> {
    let start = Instant::now();
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP, crate::backoff::seed_from_env());
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut last: Option<(Url, HttpError)> = None;
        let mut not_found = Vec::new();
        for path in metadata::USER_DATA_PATHS {
            let url = s.metadata_url.join(path);
            match http::get(&url, user_data_limits(s.request_timeout)).await {
                Ok(user_data) => {
                    // Properties are optional at boot: one quick try, the poller retries.
                    let meta_url = s.metadata_url.join(metadata::META_DATA_PATH);
                    let meta_data = match http::get(&meta_url, meta_data_limits(s.request_timeout))
                        .await
                    {
                        Ok(b) => Some(b),
                        Err(e) => {
                            tracing::warn!(url = %meta_url, error = %e, "no meta_data.json at boot; starting with the payload's peers");
                            None
                        }
                    };
                    // The network's MTU: one quick try too; the NIC tells otherwise.
                    let net_url = s.metadata_url.join(metadata::NETWORK_DATA_PATH);
                    let network_data = match http::get(
                        &net_url,
                        meta_data_limits(s.request_timeout),
                    )
                    .await
                    {
                        Ok(b) => Some(b),
                        Err(e) => {
                            tracing::debug!(url = %net_url, error = %e, "no network_data.json at boot");
                            None
                        }
                    };
                    return Ok(Fetched {
                        source: Origin::Metadata(url),
                        user_data,
                        meta_data,
                        network_data,
                    });
                }
                Err(HttpError::NotFound) => not_found.push(url.to_string()),
                Err(e) if !e.is_transient() => {
                    return Err(SourceError::Other(format!("{url}: {e}")))
                }
                Err(e) => {
                    last = Some((url, e));
                    // The server is not answering properly: no point trying the next path now.
                    break;
                }
            }
        }
        if not_found.len() == metadata::USER_DATA_PATHS.len() {
            return Err(SourceError::NoPayload(format!(
                "the metadata service answered 404 for {}: this instance was launched without user-data",
                not_found.join(" and ")
            )));
        }
        let (url, error) = last.expect("some path failed transiently");
        let delay = backoff.next_delay();
        let elapsed = start.elapsed();
        if elapsed + delay >= s.boot_timeout {
            return Err(SourceError::Unreachable {
                budget: s.boot_timeout,
                attempts,
                url: url.to_string(),
                error,
            });
        }
        tracing::info!(%url, %error, attempt = attempts, retry_in_ms = delay.as_millis() as u64, "metadata service not ready");
        tokio::time::sleep(delay).await;
    }
}
