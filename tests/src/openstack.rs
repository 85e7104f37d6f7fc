//! The lab's real Keystone and Neutron (`scripts/openstack-lab start`): where they
//! are, a blocking REST client for them, and a project per lab with a member user.
//!
//! The lab sets itself up through the REST APIs directly (one call is about 50 ms;
//! one `openstack` command about 3.5 s of client start-up); `Tenant::openstack`
//! runs python-openstackclient as the member where a test applies the printed recipe.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Environment variable naming the state file, when not at [`DEFAULT_STATE`].
pub const STATE_ENV: &str = "CLOUDPIPE_OPENSTACK";
/// Where `scripts/openstack-lab start` writes its state file.
pub const DEFAULT_STATE: &str = "/var/lib/cloudpipe-openstack-lab/run/lab.json";
/// A Neutron call that takes longer than this is a hung server, not a slow one.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What `scripts/openstack-lab` wrote: endpoints and the admin's credentials.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    pub keystone: String,
    pub neutron: String,
    pub region: String,
    pub admin: Credentials,
    /// The external network floating IPs and router gateways come from.
    pub external_network: String,
    /// python-openstackclient's `openstack`.
    pub openstack: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub project: String,
    pub domain: String,
}

/// A failed API call, with what the server said (tests match Neutron's messages).
#[derive(Debug)]
pub struct ApiError {
    pub method: &'static str,
    pub url: String,
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: HTTP {}: {}",
            self.method, self.url, self.status, self.body
        )
    }
}
impl std::error::Error for ApiError {}

fn not_running(why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "the lab needs a real Keystone + Neutron and cannot use one ({why}): start it with \
         `scripts/openstack-lab start` (scripts/test and scripts/demo do), or point \
         {STATE_ENV} at the lab.json of one that runs"
    )
}

/// The running Keystone + Neutron, or an error naming the command that starts them.
pub fn state() -> Result<State> {
    let path = std::env::var_os(STATE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE));
    state_from(&path)
}

/// The Keystone + Neutron that the state file at `path` describes, if they answer.
pub fn state_from(path: &std::path::Path) -> Result<State> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| not_running(format!("{}: {e}", path.display())))?;
    let state: State =
        serde_json::from_str(&text).map_err(|e| not_running(format!("{}: {e}", path.display())))?;
    let agent = agent();
    agent
        .get(format!("{}/", state.neutron))
        .call()
        .map_err(|e| not_running(format!("Neutron at {}: {e}", state.neutron)))?;
    Ok(state)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
        .into()
}

/// A token-holding session: the admin's, or a project member's.
pub struct Session {
    pub state: State,
    agent: ureq::Agent,
    token: String,
    pub project_id: String,
    pub user_id: String,
}

impl Session {
    /// Authenticate with a password, scoped to `project` (both in `domain`).
    pub fn login(state: &State, c: &Credentials) -> Result<Session> {
        let agent = agent();
        let url = format!("{}/auth/tokens", state.keystone);
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.domain}, "password": c.password}}},
            "scope": {"project": {"name": c.project, "domain": {"name": c.domain}}}}});
        let resp = agent
            .post(&url)
            .send_json(&body)
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status().as_u16();
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.into_body().read_to_string()?;
        let (200..=299, Some(token)) = (status, token) else {
            bail!(ApiError {
                method: "POST",
                url,
                status,
                body: text
            });
        };
        let v: Value = serde_json::from_str(&text)?;
        Ok(Session {
            state: state.clone(),
            agent,
            token,
            project_id: str_at(&v, "/token/project/id")?,
            user_id: str_at(&v, "/token/user/id")?,
        })
    }

    /// The admin of `scripts/openstack-lab`.
    pub fn admin(state: &State) -> Result<Session> {
        Session::login(state, &state.admin)
    }

    fn url(&self, path: &str) -> String {
        match path.strip_prefix("keystone:") {
            Some(p) => format!("{}{p}", self.state.keystone),
            None => format!("{}{path}", self.state.neutron),
        }
    }

    fn call(&self, method: &'static str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = self.url(path);
        let r = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("X-Auth-Token", &self.token)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("X-Auth-Token", &self.token)
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("X-Auth-Token", &self.token)
                .send_json(b),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("X-Auth-Token", &self.token)
                .send_json(b),
            ("PUT", None) => self
                .agent
                .put(&url)
                .header("X-Auth-Token", &self.token)
                .send_empty(),
            _ => bail!("{method} {url}: no body given"),
        }
        .with_context(|| format!("{method} {url}"))?;
        let status = r.status().as_u16();
        let text = r.into_body().read_to_string()?;
        if !(200..=299).contains(&status) {
            bail!(ApiError {
                method,
                url,
                status,
                body: text
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: {text}"))
    }

    /// GET a Neutron path (or `keystone:PATH`).
    pub fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call("POST", path, Some(&body))
    }
    pub fn put(&self, path: &str, body: Value) -> Result<Value> {
        self.call("PUT", path, Some(&body))
    }
    pub fn put_empty(&self, path: &str) -> Result<Value> {
        self.call("PUT", path, None)
    }
    /// DELETE; a resource already gone (404) is fine.
    pub fn delete(&self, path: &str) -> Result<()> {
        match self.call("DELETE", path, None) {
            Err(e)
                if e.downcast_ref::<ApiError>()
                    .is_some_and(|a| a.status == 404) =>
            {
                Ok(())
            }
            r => r.map(|_| ()),
        }
    }

    /// A new project with a user holding only the `member` role in it.
    pub fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let project = self.post(
            "keystone:/projects",
            json!({"project": {"name": name, "domain_id": "default",
                   "description": "a cloudpipe lab (tests/src/openstack.rs)"}}),
        )?;
        let project_id = str_at(&project, "/project/id")?;
        let password = format!("{name}-{}", std::process::id());
        let user = self.post(
            "keystone:/users",
            json!({"user": {"name": name, "password": password, "domain_id": "default",
                   "default_project_id": project_id}}),
        )?;
        let user_id = str_at(&user, "/user/id")?;
        let roles = self.get("keystone:/roles?name=member")?;
        let role = str_at(&roles, "/roles/0/id")?;
        self.put_empty(&format!(
            "keystone:/projects/{project_id}/users/{user_id}/roles/{role}"
        ))?;
        let credentials = Credentials {
            username: name.to_string(),
            password,
            project: name.to_string(),
            domain: "Default".into(),
        };
        let member = Session::login(&self.state, &credentials)?;
        Ok(Tenant {
            credentials,
            member,
        })
    }

    /// Delete everything a project holds in Neutron, then the project and its user
    /// (named like the project, as [`Session::create_tenant`] makes them) in Keystone.
    /// Best effort: every step is tried; the first error is returned.
    pub fn purge_project(&self, project_id: &str, user: &str) -> Result<()> {
        let mut first_err: Option<anyhow::Error> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        let q = format!("project_id={project_id}");
        let list = |kind: &str| -> Vec<Value> {
            self.get(&format!("/v2.0/{kind}?{q}"))
                .ok()
                .and_then(|v| v[kind].as_array().cloned())
                .unwrap_or_default()
        };
        for f in list("floatingips") {
            note(self.delete(&format!(
                "/v2.0/floatingips/{}",
                f["id"].as_str().unwrap_or("")
            )));
        }
        for r in list("routers") {
            let id = r["id"].as_str().unwrap_or("").to_string();
            let ports = self
                .get(&format!(
                    "/v2.0/ports?device_id={id}&device_owner=network:router_interface"
                ))
                .ok()
                .and_then(|v| v["ports"].as_array().cloned())
                .unwrap_or_default();
            for p in ports {
                note(
                    self.put(
                        &format!("/v2.0/routers/{id}/remove_router_interface"),
                        json!({"port_id": p["id"]}),
                    )
                    .map(|_| ()),
                );
            }
            note(self.delete(&format!("/v2.0/routers/{id}")));
        }
        for p in list("ports") {
            note(self.delete(&format!("/v2.0/ports/{}", p["id"].as_str().unwrap_or(""))));
        }
        for kind in ["subnets", "networks", "security-groups"] {
            let key = kind.replace('-', "_");
            let items = self
                .get(&format!("/v2.0/{kind}?{q}"))
                .ok()
                .and_then(|v| v[&key].as_array().cloned())
                .unwrap_or_default();
            for i in items {
                note(self.delete(&format!("/v2.0/{kind}/{}", i["id"].as_str().unwrap_or(""))));
            }
        }
        let users = self
            .get(&format!("keystone:/users?name={user}"))
            .ok()
            .and_then(|v| v["users"].as_array().cloned())
            .unwrap_or_default();
        for u in users {
            note(self.delete(&format!(
                "keystone:/users/{}",
                u["id"].as_str().unwrap_or("")
            )));
        }
        note(self.delete(&format!("keystone:/projects/{project_id}")));
        first_err.map_or(Ok(()), Err)
    }
}

/// A project with its member: what a tenant of the cloud can do, under Neutron's
/// default policy.
pub struct Tenant {
    pub credentials: Credentials,
    /// The member's session.
    pub member: Session,
}

impl Tenant {
    /// python-openstackclient as this member: `OS_*` set, nothing else inherited
    /// from the test's environment that could change its behaviour.
    pub fn openstack_env(&self) -> Vec<(String, String)> {
        let s = &self.member.state;
        let c = &self.credentials;
        [
            ("OS_AUTH_URL", s.keystone.as_str()),
            ("OS_IDENTITY_API_VERSION", "3"),
            ("OS_USERNAME", &c.username),
            ("OS_PASSWORD", &c.password),
            ("OS_PROJECT_NAME", &c.project),
            ("OS_USER_DOMAIN_NAME", &c.domain),
            ("OS_PROJECT_DOMAIN_NAME", &c.domain),
            ("OS_REGION_NAME", &s.region),
            ("PYTHONWARNINGS", "ignore"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `openstack ARGS...` as this member.
    pub fn openstack(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.member.state.openstack);
        c.args(args).envs(self.openstack_env());
        c
    }
}

/// The string at a JSON pointer, or an error showing the document.
pub fn str_at(v: &Value, pointer: &str) -> Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("no string at {pointer} in {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_running_neutron_the_error_names_the_command_that_starts_it() {
        let e = state_from(std::path::Path::new("/nonexistent/lab.json")).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("scripts/openstack-lab start") && text.contains(STATE_ENV),
            "{text}"
        );
        // A state file whose Neutron does not answer: the same advice.
        let dir = std::env::temp_dir().join(format!("cp-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab.json");
        std::fs::write(
            &path,
            r#"{"keystone": "http://127.0.0.1:9/v3", "neutron": "http://127.0.0.1:9",
                "region": "RegionOne", "external_network": "public", "openstack": "/x",
                "admin": {"username": "a", "password": "p", "project": "a", "domain": "Default"}}"#,
        )
        .unwrap();
        let e = state_from(&path).unwrap_err();
        assert!(
            format!("{e:#}").contains("scripts/openstack-lab start"),
            "{e:#}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
