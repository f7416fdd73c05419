//! AWS-style credentials, shared by the S3 store (which writes) and the SigV4 signer (which
//! presigns). One type so both always use the same identity, and one trait so credentials that
//! rotate (instance or container metadata) are refreshed in one place.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use async_trait::async_trait;

/// An access key pair, with a session token for temporary credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret and token never reach logs or error messages.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where current credentials come from; implementations cache and refresh as they need.
#[async_trait]
pub trait CredentialSource: Send + Sync + fmt::Debug {
    async fn credentials(&self) -> anyhow::Result<Arc<Credentials>>;
}

/// Fixed credentials (tests, and keys given in the environment or a profile file).
#[derive(Debug, Clone)]
pub struct StaticCredentials(pub Arc<Credentials>);

#[async_trait]
impl CredentialSource for StaticCredentials {
    async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
        Ok(self.0.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// The first two links of the standard AWS credential chain: environment, then shared profile
// files. The remaining links (web identity, ECS/EKS container endpoint, EC2 IMDSv2) rotate and
// need HTTP, so the S3 store hands them to object_store's providers and wraps the result.
// ---------------------------------------------------------------------------------------------

/// Looks up an environment variable. A parameter rather than `std::env::var` so the chain can be
/// tested without mutating the process environment (which races with other tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment; empty values count as unset, as in the AWS SDKs.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Static keys from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`.
///
/// Half a key pair is an error rather than a fall-through: silently using some other identity
/// (a profile, the instance role) would be much harder to diagnose.
pub fn env_credentials(env: Env<'_>) -> anyhow::Result<Option<Credentials>> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
            session_token: env("AWS_SESSION_TOKEN"),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        (None, Some(_)) => bail!("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"),
    }
}

/// One parsed INI file: section name -> key -> value. Keys are lower-cased.
pub type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// Parses the subset of INI the AWS CLI and SDKs accept in `~/.aws/credentials` and
/// `~/.aws/config`: `[section]` headers, `key = value` lines, `#`/`;` comment lines, and inline
/// comments after whitespace. Indented lines are sub-properties (`s3 =` followed by indented
/// settings) and are skipped, as are lines before the first section. Never fails: a malformed line
/// is ignored, like the SDKs do, so one odd setting cannot lock out every profile.
pub fn parse_ini(text: &str) -> Ini {
    let mut out = Ini::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let inner = strip_inline_comment(inner);
            current = inner.strip_suffix(']').map(|name| {
                // `[profile   x]` and `[ x ]` name the same profile as `[profile x]` and `[x]`.
                let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
                out.entry(name.clone()).or_default();
                name
            });
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            continue;
        }
        let value = strip_inline_comment(value.trim()).to_owned();
        out.entry(section.clone()).or_default().insert(key, value);
    }
    out
}

/// `value # comment` -> `value`. A `#` or `;` only starts a comment after whitespace, so values
/// such as URLs with fragments survive.
fn strip_inline_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    for i in 1..bytes.len() {
        if (bytes[i] == b'#' || bytes[i] == b';') && bytes[i - 1].is_ascii_whitespace() {
            return s[..i].trim_end();
        }
    }
    s.trim_end()
}

/// Profile keys that describe credentials this tool cannot produce itself (roles, SSO, external
/// processes). Selecting such a profile is an error, not a silent fall-through to another identity.
const UNSUPPORTED_PROFILE_KEYS: &[&str] = &[
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
    "login_session",
];

/// The shared credentials and config files, parsed.
#[derive(Default)]
pub struct ProfileFiles {
    credentials: Ini,
    config: Ini,
    /// For error messages: where the files were looked for.
    credentials_path: Option<PathBuf>,
    config_path: Option<PathBuf>,
}

// Hand-written so the parsed secrets can never be printed.
impl fmt::Debug for ProfileFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileFiles")
            .field("credentials_path", &self.credentials_path)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl ProfileFiles {
    /// Reads `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`) and `AWS_CONFIG_FILE`
    /// (default `~/.aws/config`). Missing files are fine (most servers have none); unreadable ones
    /// are an error, since they were clearly meant to be used.
    pub fn load(env: Env<'_>) -> anyhow::Result<ProfileFiles> {
        let home = env("HOME").map(PathBuf::from);
        let path = |var: &str, default: &str| {
            env(var)
                .map(|p| expand_home(&p, home.as_deref()))
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let credentials_path = path("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_path = path("AWS_CONFIG_FILE", "config");
        let read = |p: &Option<PathBuf>| -> anyhow::Result<String> {
            let Some(p) = p else { return Ok(String::new()) };
            match std::fs::read_to_string(p) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
            }
        };
        Ok(ProfileFiles {
            credentials: parse_ini(&read(&credentials_path)?),
            config: parse_ini(&read(&config_path)?),
            credentials_path,
            config_path,
        })
    }

    /// From file contents (tests).
    #[cfg(test)]
    pub fn from_texts(credentials: &str, config: &str) -> ProfileFiles {
        ProfileFiles {
            credentials: parse_ini(credentials),
            config: parse_ini(config),
            ..Default::default()
        }
    }

    /// The merged settings of one profile, or `None` when neither file defines it. The credentials
    /// file names sections `[name]`; the config file `[profile name]` (and `[default]`). Values in
    /// the credentials file win, as in the AWS CLI.
    pub fn profile(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let from_config = if name == "default" {
            // `[profile default]` is accepted too; `[default]` wins if both exist.
            let a = self.config.get("profile default");
            let b = self.config.get("default");
            match (a, b) {
                (None, None) => None,
                (a, b) => {
                    let mut m = a.cloned().unwrap_or_default();
                    m.extend(b.cloned().unwrap_or_default());
                    Some(m)
                }
            }
        } else {
            self.config.get(&format!("profile {name}")).cloned()
        };
        let from_credentials = self.credentials.get(name).cloned();
        match (from_config, from_credentials) {
            (None, None) => None,
            (a, b) => {
                let mut m = a.unwrap_or_default();
                m.extend(b.unwrap_or_default());
                Some(m)
            }
        }
    }

    /// Static keys from a profile. `Ok(None)` when the profile has none (say, only a `region`).
    pub fn credentials(&self, name: &str) -> anyhow::Result<Option<Credentials>> {
        let Some(p) = self.profile(name) else {
            return Ok(None);
        };
        let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("aws_session_token"),
            })),
            (None, None) => {
                if let Some(k) = UNSUPPORTED_PROFILE_KEYS
                    .iter()
                    .find(|k| p.contains_key(**k))
                {
                    bail!(
                        "AWS profile {name:?} uses {k}, which is not supported: only static keys \
                         (aws_access_key_id, aws_secret_access_key, aws_session_token) are read \
                         from profiles; export temporary keys into the environment instead"
                    );
                }
                Ok(None)
            }
            (Some(_), None) => {
                bail!("AWS profile {name:?} has aws_access_key_id but no aws_secret_access_key")
            }
            (None, Some(_)) => {
                bail!("AWS profile {name:?} has aws_secret_access_key but no aws_access_key_id")
            }
        }
    }

    /// The profile's `region`, if it sets one.
    pub fn region(&self, name: &str) -> Option<String> {
        self.profile(name)?
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
    }

    fn locations(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no HOME)".into())
        };
        format!(
            "{} or {}",
            show(&self.credentials_path),
            show(&self.config_path)
        )
    }
}

fn expand_home(p: &str, home: Option<&std::path::Path>) -> PathBuf {
    match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(p),
    }
}

/// Which profile applies: the configured one, else `AWS_PROFILE`, else `default`; and whether it
/// was asked for by name (then it must exist).
pub fn selected_profile(explicit: Option<&str>, env: Env<'_>) -> (String, bool) {
    match explicit.map(str::to_owned).or_else(|| env("AWS_PROFILE")) {
        Some(p) => (p, true),
        None => ("default".to_owned(), false),
    }
}

/// Static credentials and a description of where they came from (`"environment"`,
/// `"profile default"`), for logs. Never includes the secret.
#[derive(Debug, Clone)]
pub struct FoundCredentials {
    pub credentials: Credentials,
    pub origin: String,
}

/// Walks the static part of the chain: environment, then the shared profile files.
///
/// An explicitly configured profile (`[s3] profile = ...`) is consulted *before* the environment,
/// like the AWS CLI's `--profile`: a setting written into this tool's own configuration is the more
/// specific intent. `AWS_PROFILE` only selects which profile the second link reads.
///
/// `Ok(None)` means "no static keys anywhere": the caller continues with web identity, container
/// and instance metadata.
pub fn static_chain(
    explicit_profile: Option<&str>,
    env: Env<'_>,
    files: &ProfileFiles,
) -> anyhow::Result<Option<FoundCredentials>> {
    let (profile, named) = selected_profile(explicit_profile, env);
    let from_profile = || -> anyhow::Result<Option<FoundCredentials>> {
        if named && files.profile(&profile).is_none() {
            bail!("AWS profile {profile:?} not found in {}", files.locations());
        }
        Ok(files
            .credentials(&profile)?
            .map(|credentials| FoundCredentials {
                credentials,
                origin: format!("profile {profile}"),
            }))
    };
    if explicit_profile.is_some() {
        return from_profile();
    }
    if let Some(credentials) = env_credentials(env)? {
        return Ok(Some(FoundCredentials {
            credentials,
            origin: "environment".into(),
        }));
    }
    from_profile()
}

/// The region: the explicit setting, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else the
/// selected profile's `region`, else `us-east-1` (which S3 redirects from for any bucket).
pub fn resolve_region(
    explicit: Option<&str>,
    explicit_profile: Option<&str>,
    env: Env<'_>,
    files: &ProfileFiles,
) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| files.region(&selected_profile(explicit_profile, env).0))
        .unwrap_or_else(|| "us-east-1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("tok123".into()),
        };
        let s = format!("{c:?}");
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("wJalrXUtnFEMI") && !s.contains("tok123"));
    }
    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    const CREDS: &str = "\
# comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secretdefault

; another comment
[ci]
aws_access_key_id=AKIDCI
aws_secret_access_key=secret/ci+x
aws_session_token = tok # inline comment
";

    const CONFIG: &str = "\
[default]
region = eu-west-1
s3 =
  max_concurrent_requests = 10
[profile ci]
region = us-west-2   ; trailing
aws_access_key_id = AKIDFROMCONFIG
[profile role]
role_arn = arn:aws:iam::123:role/x
source_profile = default
[profile regiononly]
region = ap-south-1
[sso-session corp]
sso_start_url = https://example.awsapps.com/start#x
";

    #[test]
    fn ini_parser() {
        let ini = parse_ini(CONFIG);
        assert_eq!(ini["default"]["region"], "eu-west-1");
        // Indented sub-properties are not top-level keys.
        assert!(!ini["default"].contains_key("max_concurrent_requests"));
        assert_eq!(ini["default"]["s3"], "");
        assert_eq!(ini["profile ci"]["region"], "us-west-2");
        // '#' without whitespace before it is part of the value.
        assert_eq!(
            ini["sso-session corp"]["sso_start_url"],
            "https://example.awsapps.com/start#x"
        );
        let ini = parse_ini("key=before\n[ a  b ]\nK = v\n[broken\nx=y\n");
        assert!(!ini.values().any(|s| s.contains_key("key")));
        assert_eq!(ini["a b"]["k"], "v");
        assert_eq!(ini.len(), 1, "{ini:?}");
        let ini = parse_ini("[p]\r\naws_access_key_id = A\r\n");
        assert_eq!(ini["p"]["aws_access_key_id"], "A");
    }

    #[test]
    fn profiles() {
        let f = ProfileFiles::from_texts(CREDS, CONFIG);
        let c = f.credentials("default").unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKIDDEFAULT");
        assert_eq!(c.session_token, None);
        // The credentials file wins over the config file for the same key.
        let c = f.credentials("ci").unwrap().unwrap();
        assert_eq!(c.access_key_id, "AKIDCI");
        assert_eq!(c.secret_access_key, "secret/ci+x");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(f.region("ci").as_deref(), Some("us-west-2"));
        assert!(f.credentials("regiononly").unwrap().is_none());
        assert!(f.credentials("missing").unwrap().is_none());
        let e = f.credentials("role").unwrap_err().to_string();
        assert!(e.contains("role_arn"), "{e}");
        // `[profile default]` is the default profile too.
        let f = ProfileFiles::from_texts("", "[profile default]\nregion = x\n");
        assert_eq!(f.region("default").as_deref(), Some("x"));
    }

    #[test]
    fn chain_order() {
        let files = ProfileFiles::from_texts(CREDS, CONFIG);
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        // Environment first...
        let f = static_chain(None, &env, &files).unwrap().unwrap();
        assert_eq!(
            (f.credentials.access_key_id.as_str(), f.origin.as_str()),
            ("AKIDENV", "environment")
        );
        // ...unless a profile is configured explicitly.
        let f = static_chain(Some("ci"), &env, &files).unwrap().unwrap();
        assert_eq!(f.credentials.access_key_id, "AKIDCI");
        assert_eq!(f.origin, "profile ci");
        // AWS_PROFILE selects the profile of the second link.
        let env = env_of(&[("AWS_PROFILE", "ci")]);
        let f = static_chain(None, &env, &files).unwrap().unwrap();
        assert_eq!(f.credentials.access_key_id, "AKIDCI");
        // No environment keys: the default profile.
        let f = static_chain(None, &env_of(&[]), &files).unwrap().unwrap();
        assert_eq!(f.credentials.access_key_id, "AKIDDEFAULT");
        // Nothing static anywhere: fall through to metadata.
        let none = ProfileFiles::from_texts("", CONFIG);
        assert!(static_chain(None, &env_of(&[]), &none).unwrap().is_none());
        // A named profile that does not exist is an error, not a fall-through.
        let e = static_chain(Some("nope"), &env_of(&[]), &files).unwrap_err();
        assert!(e.to_string().contains("\"nope\" not found"), "{e}");
        // Half a key pair in the environment is an error, and never echoes the value.
        let e = static_chain(None, &env_of(&[("AWS_SECRET_ACCESS_KEY", "hush")]), &files)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && !e.contains("hush"),
            "{e}"
        );
    }

    #[test]
    fn region_order() {
        let files = ProfileFiles::from_texts(CREDS, CONFIG);
        let r = |explicit, profile, vars: &[(&str, &str)]| {
            resolve_region(explicit, profile, &env_of(vars), &files)
        };
        assert_eq!(r(Some("x-1"), None, &[("AWS_REGION", "y")]), "x-1");
        assert_eq!(
            r(
                None,
                None,
                &[("AWS_REGION", "y"), ("AWS_DEFAULT_REGION", "z")]
            ),
            "y"
        );
        assert_eq!(r(None, None, &[("AWS_DEFAULT_REGION", "z")]), "z");
        assert_eq!(r(None, None, &[]), "eu-west-1");
        assert_eq!(r(None, Some("ci"), &[]), "us-west-2");
        assert_eq!(r(None, Some("role"), &[]), "us-east-1");
    }

    #[test]
    fn profile_files_debug_hides_secrets() {
        let f = ProfileFiles::from_texts(CREDS, CONFIG);
        assert!(!format!("{f:?}").contains("secretdefault"));
    }

    #[test]
    fn load_reads_the_files_named_by_env() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("c");
        std::fs::write(&creds, CREDS).unwrap();
        let c = creds.to_str().unwrap().to_owned();
        let env = move |k: &str| (k == "AWS_SHARED_CREDENTIALS_FILE").then(|| c.clone());
        let f = ProfileFiles::load(&env).unwrap();
        assert!(f.credentials("ci").unwrap().is_some());
        // No HOME and no config file: nothing, and no error.
        assert!(ProfileFiles::load(&|_: &str| None)
            .unwrap()
            .profile("default")
            .is_none());
    }
}
