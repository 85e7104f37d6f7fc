//! `cloudpipe up` as a lab client: the project's own client mode in a namespace,
//! brought up from a wg-quick file and taken down with `cloudpipe down`.

use crate::{bin_path, wait_for, Lab};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

pub struct UpClient {
    pub ns: String,
    pub iface: String,
    pub conf: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl UpClient {
    /// Run `cloudpipe up` on `conf` in `ns`; the interface is `iface` (the file is
    /// written as `iface.conf`, mode 0600). `extra` are more `up` flags. Returns once
    /// the interface exists.
    pub fn start(
        lab: &Lab,
        ns: &str,
        iface: &str,
        conf: &str,
        extra: &[&str],
    ) -> anyhow::Result<UpClient> {
        let dir = lab.dir().join("up");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{iface}.conf"));
        std::fs::write(&path, conf)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let log = dir.join(format!("{iface}.log"));
        let bin = bin_path("cloudpipe")?;
        let mut cmd = vec![
            bin.to_str().expect("utf-8 path"),
            "up",
            path.to_str().expect("utf-8 path"),
        ];
        cmd.extend_from_slice(extra);
        let out = std::fs::File::create(&log)?;
        let child = lab.spawn_with(ns, &cmd, |c| {
            c.stdout(Stdio::from(out.try_clone().expect("log file")))
                .stderr(Stdio::from(out));
        })?;
        let client = UpClient {
            ns: ns.to_string(),
            iface: iface.to_string(),
            conf: path,
            log,
            child,
        };
        wait_for(Duration::from_secs(10), &format!("{iface} up"), || {
            Ok(lab
                .output(ns, &["ip", "link", "show", iface])?
                .status
                .success())
        })
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", client.log()))?;
        Ok(client)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `cloudpipe down` on the same file; returns its output and the exit status of
    /// the `up` process.
    pub fn down(mut self, lab: &Lab) -> anyhow::Result<(String, std::process::ExitStatus)> {
        let bin = bin_path("cloudpipe")?;
        let out = lab.output(
            &self.ns,
            &[bin.to_str().unwrap(), "down", self.conf.to_str().unwrap()],
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::ensure!(
            out.status.success(),
            "cloudpipe down failed: {text}\n{}",
            self.log()
        );
        let status = self.child.wait()?;
        Ok((text, status))
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
}
