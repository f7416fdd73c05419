//! Where the credentials for a source registry come from, in order:
//! 1. `--creds USER[:PASS]` (the password is read from standard input when omitted, so it never
//!    appears in a process listing or shell history);
//! 2. `STATIC_REGISTRY_SRC_USERNAME` + `STATIC_REGISTRY_SRC_PASSWORD`;
//! 3. Docker's `config.json` (`--authfile FILE`, else `$DOCKER_CONFIG/config.json`, else
//!    `~/.docker/config.json`): `credHelpers[registry]`, else `credsStore`, else `auths[registry]`;
//!    helpers run as `docker-credential-<name> get` with the server URL on standard input.
//!
//! Credentials are used at staging time only: they live in memory in a [`Secret`] whose `Debug`
//! and `Display` print `***`, are never logged, never written to the store or a temporary file,
//! and never quoted in an error (errors name the registry, the user and where the credentials
//! came from).

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde::Deserialize;

use super::reference::{RemoteRef, DOCKER_HUB_AUTH_KEY};

/// Environment variable holding the source registry's user name.
pub const ENV_USERNAME: &str = "STATIC_REGISTRY_SRC_USERNAME";
/// Environment variable holding the source registry's password or token.
pub const ENV_PASSWORD: &str = "STATIC_REGISTRY_SRC_PASSWORD";

/// A password or token: usable, but never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for an `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The value of `--creds USER[:PASS]`. Parsed by clap, so it redacts itself too.
#[derive(Clone, PartialEq, Eq)]
pub struct CredsArg {
    pub username: String,
    /// `None`: read it from standard input.
    pub password: Option<Secret>,
}

impl fmt::Debug for CredsArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredsArg")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl FromStr for CredsArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, pass) = match s.split_once(':') {
            Some((u, p)) => (u, Some(Secret::new(p))),
            None => (s, None),
        };
        if user.is_empty() {
            return Err("expected USER[:PASS] with a non-empty user".into());
        }
        Ok(CredsArg {
            username: user.to_owned(),
            password: pass,
        })
    }
}

/// What to authenticate with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    /// A user name and password (or a personal access token used as one).
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken` in `config.json`, `<token>` from a helper).
    IdentityToken(Secret),
}

/// Credentials and where they came from, for messages ("--creds", "docker-credential-pass").
#[derive(Clone, Debug)]
pub struct Resolved {
    pub credentials: Credentials,
    pub origin: String,
}

impl Resolved {
    pub fn anonymous() -> Self {
        Resolved {
            credentials: Credentials::Anonymous,
            origin: "none (anonymous)".into(),
        }
    }

    /// "user 'alice'" or "an identity token", for messages.
    pub fn who(&self) -> String {
        match &self.credentials {
            Credentials::Anonymous => "anonymous".into(),
            Credentials::Basic { username, .. } => format!("user '{username}'"),
            Credentials::IdentityToken(_) => "an identity token".into(),
        }
    }

    /// How to fix refused credentials, by where they came from.
    pub fn hint(&self) -> String {
        match self.origin.as_str() {
            "--creds" => "check --creds".into(),
            o if o.starts_with("environment") => {
                format!("check {ENV_USERNAME} and {ENV_PASSWORD}")
            }
            o => format!("check the credentials from {o} (or pass --creds)"),
        }
    }
}

/// Where to look.
#[derive(Clone, Debug, Default)]
pub struct Lookup {
    pub creds: Option<CredsArg>,
    /// `--authfile`: a `config.json`-format file to use instead of Docker's.
    pub authfile: Option<PathBuf>,
}

/// Resolves credentials for `r` in the documented order. `env` reads environment variables (a
/// parameter so tests need not touch the process environment).
pub fn resolve(
    r: &RemoteRef,
    lookup: &Lookup,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Resolved> {
    if let Some(c) = &lookup.creds {
        let password = match &c.password {
            Some(p) => p.clone(),
            None => read_password_from_stdin(&r.registry, &c.username)?,
        };
        return Ok(Resolved {
            credentials: Credentials::Basic {
                username: c.username.clone(),
                password,
            },
            origin: "--creds".into(),
        });
    }
    match (env(ENV_USERNAME), env(ENV_PASSWORD)) {
        (Some(u), Some(p)) if !u.is_empty() => {
            return Ok(Resolved {
                credentials: Credentials::Basic {
                    username: u,
                    password: Secret::new(p),
                },
                origin: format!("environment ({ENV_USERNAME})"),
            })
        }
        (Some(_), None) | (None, Some(_)) => {
            bail!("set both {ENV_USERNAME} and {ENV_PASSWORD}, or neither")
        }
        _ => {}
    }
    let path = match &lookup.authfile {
        Some(p) => Some(p.clone()),
        None => docker_config_path(env),
    };
    if let Some(path) = path {
        if let Some(found) = from_docker_config(&path, r, lookup.authfile.is_some())? {
            return Ok(found);
        }
    }
    Ok(Resolved::anonymous())
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn docker_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("config.json"));
    }
    env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".docker/config.json"))
}

fn read_password_from_stdin(registry: &str, user: &str) -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        let mut err = std::io::stderr();
        let _ = write!(err, "Password for {user} at {registry}: ");
        let _ = err.flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        bail!("--creds {user}: no password on standard input (pass USER:PASS or pipe the password in)");
    }
    Ok(Secret::new(pw))
}

/// The parts of `config.json` that hold credentials.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The names a registry may be stored under: Docker Hub has several.
fn keys_for(r: &RemoteRef) -> Vec<String> {
    if r.is_docker_hub() {
        vec![
            DOCKER_HUB_AUTH_KEY.into(),
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![r.registry.clone()]
    }
}

/// `https://host:5000/v1/` -> `host:5000`, as Docker normalises `auths` keys.
fn normalize_key(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

fn from_docker_config(
    path: &Path,
    r: &RemoteRef,
    explicit: bool,
) -> anyhow::Result<Option<Resolved>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // The error names the file only: serde's message could quote part of a secret.
    let cfg: DockerConfig = serde_json::from_slice(&bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a valid Docker config.json", path.display()))?;
    let keys = keys_for(r);
    let helper = keys
        .iter()
        .find_map(|k| cfg.cred_helpers.get(k))
        .or(cfg.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        let server = if r.is_docker_hub() {
            DOCKER_HUB_AUTH_KEY.to_owned()
        } else {
            r.registry.clone()
        };
        return run_helper(helper, &server);
    }
    let entry = cfg.auths.iter().find_map(|(k, v)| {
        let nk = normalize_key(k);
        keys.iter()
            .any(|want| k == want || nk == normalize_key(want))
            .then_some(v)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    let origin = format!("{} (auths)", path.display());
    if let Some(tok) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Resolved {
            credentials: Credentials::IdentityToken(Secret::new(tok)),
            origin,
        }));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            bail!(
                "{}: the auth entry for {} is not base64 of USER:PASS",
                path.display(),
                r.registry
            );
        };
        return Ok(Some(Resolved {
            credentials: Credentials::Basic {
                username: u.to_owned(),
                password: Secret::new(p),
            },
            origin,
        }));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Resolved {
            credentials: Credentials::Basic {
                username: u.clone(),
                password: Secret::new(p.clone()),
            },
            origin,
        }));
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperOutput {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-<helper> get` (the credential-helper protocol: the server URL on
/// standard input, a JSON document on standard output).
fn run_helper(helper: &str, server: &str) -> anyhow::Result<Option<Resolved>> {
    if !helper
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!("invalid credential helper name {helper:?} in the Docker config");
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("the Docker config names credential helper {program}, which cannot be run")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .with_context(|| format!("cannot talk to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("credentials not found") {
            return Ok(None);
        }
        // Its output is not quoted: a helper might echo something sensitive.
        bail!("{program} get failed for {server} ({})", out.status);
    }
    let parsed: HelperOutput = serde_json::from_slice(&out.stdout)
        .map_err(|_| anyhow::anyhow!("{program} get printed something that is not its JSON"))?;
    if parsed.secret.is_empty() {
        return Ok(None);
    }
    let credentials = if parsed.username == "<token>" {
        Credentials::IdentityToken(Secret::new(parsed.secret))
    } else {
        Credentials::Basic {
            username: parsed.username,
            password: Secret::new(parsed.secret),
        }
    };
    Ok(Some(Resolved {
        credentials,
        origin: program,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> RemoteRef {
        RemoteRef::parse(s).unwrap()
    }

    fn env_of(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: Secret::new(p),
        }
    }

    #[test]
    fn secrets_never_print() {
        let c: CredsArg = "alice:s3cret".parse().unwrap();
        let r = Resolved {
            credentials: basic("alice", "s3cret"),
            origin: "--creds".into(),
        };
        for s in [
            format!("{c:?}"),
            format!("{r:?}"),
            format!("{}", Secret::new("s3cret")),
        ] {
            assert!(!s.contains("s3cret"), "{s}");
        }
        assert!("".parse::<CredsArg>().is_err());
        assert!(":x".parse::<CredsArg>().is_err());
        assert_eq!("bob".parse::<CredsArg>().unwrap().password, None);
        assert_eq!(
            "bob:a:b".parse::<CredsArg>().unwrap().password,
            Some(Secret::new("a:b"))
        );
    }

    #[test]
    fn order_flag_then_env_then_config() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("carol:fromfile");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths":{{"https://r.example:5000/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let r = remote("r.example:5000/a/b:1");
        let cfg_env = ("DOCKER_CONFIG", dir.path().display().to_string());
        let env_creds = [
            (ENV_USERNAME, "bob".to_owned()),
            (ENV_PASSWORD, "fromenv".to_owned()),
        ];
        let flag = Lookup {
            creds: Some("alice:fromflag".parse().unwrap()),
            authfile: None,
        };
        let all = env_of(&[cfg_env.clone(), env_creds[0].clone(), env_creds[1].clone()]);
        let got = resolve(&r, &flag, &all).unwrap();
        assert_eq!(got.credentials, basic("alice", "fromflag"));
        assert_eq!(got.hint(), "check --creds");
        let got = resolve(&r, &Lookup::default(), &all).unwrap();
        assert_eq!(got.credentials, basic("bob", "fromenv"));
        let got = resolve(
            &r,
            &Lookup::default(),
            &env_of(std::slice::from_ref(&cfg_env)),
        )
        .unwrap();
        assert_eq!(got.credentials, basic("carol", "fromfile"));
        assert!(
            got.origin.ends_with("config.json (auths)"),
            "{}",
            got.origin
        );
        // Another registry: nothing matches, anonymous.
        let other = remote("other.example/a:1");
        let got = resolve(&other, &Lookup::default(), &env_of(&[cfg_env])).unwrap();
        assert_eq!(got.credentials, Credentials::Anonymous);
        // Half the environment is an error, not a silent fallback.
        let half = env_of(&[(ENV_USERNAME, "x".to_owned())]);
        assert!(resolve(&r, &Lookup::default(), &half).is_err());
        // No config at all: anonymous.
        let got = resolve(&r, &Lookup::default(), &env_of(&[])).unwrap();
        assert_eq!(got.credentials, Credentials::Anonymous);
    }

    #[test]
    fn docker_hub_keys_and_identity_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"","identitytoken":"refresh-me"}}}"#,
        )
        .unwrap();
        let lookup = Lookup {
            creds: None,
            authfile: Some(path.clone()),
        };
        let got = resolve(&remote("alpine"), &lookup, &env_of(&[])).unwrap();
        assert_eq!(
            got.credentials,
            Credentials::IdentityToken(Secret::new("refresh-me"))
        );
        assert!(!format!("{got:?}").contains("refresh-me"));
        // An explicit --authfile that does not exist is an error.
        let missing = Lookup {
            creds: None,
            authfile: Some(dir.path().join("nope.json")),
        };
        assert!(resolve(&remote("alpine"), &missing, &env_of(&[])).is_err());
    }

    #[test]
    fn bad_config_errors_do_not_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"auths": "s3cret"#).unwrap();
        let env = env_of(&[("DOCKER_CONFIG", dir.path().display().to_string())]);
        let err = resolve(&remote("x.io/a:1"), &Lookup::default(), &env).unwrap_err();
        assert!(!format!("{err:#}").contains("s3cret"), "{err:#}");
    }

    #[test]
    fn helper_names_are_checked() {
        assert!(run_helper("../../bin/sh", "x").is_err());
    }
}
