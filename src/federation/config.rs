//! Building the federation from the configuration file: origins (signer + store), routes, regions.
//!
//! Without any `[[origins]]`, the store itself is the one origin: a local directory is served by
//! the embedded origin, an `s3://` bucket by SigV4-presigned URLs on that bucket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::federation::cache::CacheConfig;
use crate::federation::origin::EmbeddedOrigin;
use crate::layout;
use crate::sign::azure_sas::{AzureSasConfig, AzureSasSigner};
use crate::sign::cloudfront::{CloudFrontConfig, CloudFrontSigner, PolicyMode};
use crate::sign::gcs_v4::{GcsConfig, GcsSigner};
use crate::sign::hmac_token::{HmacTokenConfig, HmacTokenSigner, TokenScope};
use crate::sign::public::{PublicConfig, PublicSigner};
use crate::sign::secure_link::{SecureLinkConfig, SecureLinkSigner};
use crate::sign::sigv4::{SigV4Config, SigV4Signer};
use crate::sign::{EmbeddedSigner, Signer};
use crate::store::{
    self, AzureLocation, CloudSettings, CloudStore, LocalStore, S3Settings, S3Store, Store,
};

use super::region::{RegionResolver, RegionSettings};
use super::{Federation, Origin};

/// The embedded origin's settings (`[embedded]`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// A file holding the shared URL-signing secret (replicas sharing a store need the same one).
    pub secret_file: Option<PathBuf>,
    /// External base URL for origin redirects; by default they are relative to the endpoint.
    pub url: Option<String>,
}

/// The SigV4 signer over an origin's own `s3://` store.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SignerConfig {
    /// Presign for another endpoint than the one the store talks to (e.g. a public hostname).
    pub endpoint: Option<String>,
}

/// How an origin's URLs are made.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SignerConfig {
    Embedded,
    S3(S3SignerConfig),
    Cloudfront(CloudFrontConfig),
    SecureLink(SecureLinkConfig),
    HmacToken(HmacTokenConfig),
    Public(PublicConfig),
    Gcs(GcsConfig),
    AzureSas(AzureSasConfig),
}

impl SignerConfig {
    /// Why one URL of this signer opens more than the object it was made for (None: it opens
    /// exactly one). Such URLs must not carry private repositories' content.
    pub fn shared_urls(&self) -> Option<&'static str> {
        match self {
            SignerConfig::Public(_) => {
                Some("kind = \"public\": URLs are unsigned, anyone can fetch every object")
            }
            SignerConfig::Cloudfront(c) if c.policy == PolicyMode::Wildcard => Some(
                "policy = \"wildcard\": one URL opens every object under the distribution's prefix",
            ),
            SignerConfig::HmacToken(c) if c.scope == TokenScope::AclPrefix => {
                Some("scope = \"acl-prefix\": one URL's token opens every object under the prefix")
            }
            // embedded, s3, secure-link (its template must hash $uri), canned, acl, url.
            _ => None,
        }
    }
}

/// One `[[origins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    pub name: String,
    /// Where this origin's index files are read (default: the top-level `store`).
    pub store: Option<String>,
    /// Regions this origin is close to, for region routing.
    #[serde(default)]
    pub regions: Vec<String>,
    pub signer: SignerConfig,
    /// The operator accepts that this origin's URLs open more than one object although it can
    /// serve private repositories (see [`SignerConfig::shared_urls`]). Default: false, and such
    /// a configuration is refused at startup.
    #[serde(default)]
    pub accept_shared_urls: bool,
}

/// One `[[routes]]` entry: repositories whose name starts with `prefix` go to `origins`, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    pub origins: Vec<String>,
}

/// What `serve` runs: the federation, and the embedded origin when one is configured.
pub struct Built {
    pub federation: Arc<Federation>,
    pub embedded: Option<EmbeddedOrigin>,
}

/// Everything [`build`] reads.
pub struct FederationInput<'a> {
    pub default_store: Option<&'a str>,
    pub clouds: &'a CloudSettings,
    pub origins: &'a [OriginConfig],
    pub routes: &'a [RouteConfig],
    pub regions: &'a RegionSettings,
    pub embedded: &'a EmbeddedConfig,
    pub cache: CacheConfig,
    /// The `[auth]` rules' prefixes: repositories under them are private.
    pub private_prefixes: &'a [&'a str],
}

/// Stores opened once per location, shared by origins that name the same one.
#[derive(Default)]
struct Stores {
    local: HashMap<String, Arc<LocalStore>>,
    s3: HashMap<String, Arc<S3Store>>,
    /// `azure://` and `gs://` stores.
    cloud: HashMap<String, Arc<CloudStore>>,
}

enum Opened {
    Local(Arc<LocalStore>),
    S3(Arc<S3Store>),
    Cloud(Arc<CloudStore>),
}

impl Opened {
    fn as_store(&self) -> Arc<dyn Store> {
        match self {
            Opened::Local(s) => s.clone(),
            Opened::S3(s) => s.clone(),
            Opened::Cloud(s) => s.clone(),
        }
    }
}

impl Stores {
    fn open(&mut self, location: &str, clouds: &CloudSettings) -> anyhow::Result<Opened> {
        let azure = location.starts_with("azure://");
        if azure || location.starts_with("gs://") {
            if let Some(s) = self.cloud.get(location) {
                return Ok(Opened::Cloud(s.clone()));
            }
            let s = Arc::new(if azure {
                store::azure::open(location, &clouds.azure)?
            } else {
                store::gcs::open(location, &clouds.gcs)?
            });
            tracing::info!(store = %s.describe(), "cloud store opened");
            self.cloud.insert(location.to_owned(), s.clone());
            return Ok(Opened::Cloud(s));
        }
        if location.starts_with("s3://") {
            if let Some(s) = self.s3.get(location) {
                return Ok(Opened::S3(s.clone()));
            }
            let s = Arc::new(S3Store::open(location, &clouds.s3)?);
            // Which identity, never the keys themselves.
            tracing::info!(store = %s.describe(), credentials = s.credentials_origin(), "S3 store opened");
            self.s3.insert(location.to_owned(), s.clone());
            return Ok(Opened::S3(s));
        }
        if let Some(s) = self.local.get(location) {
            return Ok(Opened::Local(s.clone()));
        }
        let store = store::open(location)?;
        let root = store
            .local_root()
            .with_context(|| format!("unsupported store {location:?}: use {}", store::LOCATIONS))?;
        let s = Arc::new(LocalStore::open(root)?);
        self.local.insert(location.to_owned(), s.clone());
        Ok(Opened::Local(s))
    }
}

/// The embedded origin's signer. Its secret comes from `secret_file`, else from
/// [`layout::LOCAL_ORIGIN_SECRET`] in the store directory, created on first start, so replicas
/// sharing a store share it with no ceremony. The first line signs; further lines are also
/// accepted (a rotation: docs/operations.md).
fn embedded_signer(cfg: &EmbeddedConfig, store_root: &Path) -> anyhow::Result<EmbeddedSigner> {
    let url = cfg.url.as_deref();
    let path = match &cfg.secret_file {
        Some(p) => p.clone(),
        None => ensure_store_secret(store_root)?,
    };
    let text = std::fs::read(&path)
        .with_context(|| format!("cannot read origin secret file {}", path.display()))?;
    let secrets: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .collect();
    anyhow::ensure!(
        !secrets.is_empty(),
        "origin secret file {} is empty",
        path.display()
    );
    for s in &secrets {
        anyhow::ensure!(
            s.len() >= 16,
            "a secret in {} is shorter than 16 bytes; generate one with `head -c 32 /dev/urandom | base64`",
            path.display()
        );
    }
    Ok(EmbeddedSigner::rotating(secrets[0], &secrets[1..], url))
}

/// The store's own origin secret file, created (owner-only, 32 random bytes in base64) if it does
/// not exist. Created beside and then linked into place, so a replica starting at the same moment
/// either creates it or reads the whole of the one that won.
fn ensure_store_secret(root: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = root.join(layout::LOCAL_ORIGIN_SECRET);
    if path.exists() {
        return Ok(path);
    }
    let tmp = root.join(format!(
        "{}.{}-{:016x}.tmp",
        layout::LOCAL_ORIGIN_SECRET,
        std::process::id(),
        rand::random::<u64>()
    ));
    let secret: [u8; 32] = rand::random();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    writeln!(
        f,
        "{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, secret)
    )?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the embedded origin's URL-signing secret (shared by every replica of this store)");
            Ok(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(path),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

async fn sigv4_for(
    store: &S3Store,
    s3: &S3Settings,
    cfg: &S3SignerConfig,
) -> anyhow::Result<Arc<SigV4Signer>> {
    let endpoint = match cfg.endpoint.as_deref().or(s3.endpoint.as_deref()) {
        Some(e) => e.to_owned(),
        None => format!("https://s3.{}.amazonaws.com", store.region()),
    };
    let sig = SigV4Config {
        endpoint: url::Url::parse(&endpoint)
            .with_context(|| format!("invalid S3 endpoint {endpoint:?}"))?,
        bucket: store.location().bucket.clone(),
        prefix: store.location().prefix.clone(),
        region: store.region().to_owned(),
        path_style: s3.path_style,
        service: "s3".into(),
    };
    let signer = Arc::new(SigV4Signer::new(sig, store.credential_source()).await?);
    // Credentials from instance or container metadata rotate; keep the signer's copy fresh.
    signer.spawn_refresher(Duration::from_secs(300));
    Ok(signer)
}

/// How a store is served when no `[[origins]]` are configured: the embedded origin for a local
/// directory, and the store's own cloud's signed URLs otherwise, with the same identity the
/// store writes with.
fn default_signer(location: &str, clouds: &CloudSettings) -> anyhow::Result<SignerConfig> {
    if location.starts_with("s3://") {
        return Ok(SignerConfig::S3(S3SignerConfig::default()));
    }
    if location.starts_with("azure://") {
        let loc = AzureLocation::parse(location)?;
        return Ok(SignerConfig::AzureSas(AzureSasConfig {
            endpoint: clouds.azure.endpoint.clone(),
            account: loc.account,
            container: loc.container,
            prefix: loc.prefix,
            account_key_file: None,
            account_key_env: None,
            user_delegation: None,
        }));
    }
    if location.starts_with("gs://") {
        let loc = store::GcsLocation::parse(location)?;
        let key = clouds.gcs.service_account_file.clone().context(
            "a gs:// store signs URLs with a service-account key: set gcs.service_account_file, \
             or configure [[origins]] with kind = \"gcs\" (HMAC keys too; docs/gcs.md)",
        )?;
        return Ok(SignerConfig::Gcs(GcsConfig {
            endpoint: clouds
                .gcs
                .endpoint
                .clone()
                .unwrap_or_else(|| "https://storage.googleapis.com".into()),
            bucket: loc.bucket,
            prefix: loc.prefix,
            url_style: Default::default(),
            service_account_file: Some(key),
            service_account_env: None,
            hmac_access_id: None,
            hmac_secret_file: None,
            hmac_secret_env: None,
        }));
    }
    Ok(SignerConfig::Embedded)
}

/// Builds the federation. Stores are opened once per location.
pub async fn build(input: FederationInput<'_>) -> anyhow::Result<Built> {
    let mut stores = Stores::default();
    let mut embedded: Option<EmbeddedOrigin> = None;
    let default_origin;
    let origin_cfgs: &[OriginConfig] = if input.origins.is_empty() {
        let location = input.default_store.context(
            "no store given: pass --store DIR (or file:///path, s3://bucket/prefix), set STATIC_REGISTRY_STORE, or configure [[origins]]",
        )?;
        let signer = default_signer(location, input.clouds)?;
        default_origin = [OriginConfig {
            name: "default".into(),
            store: Some(location.to_owned()),
            regions: vec![],
            signer,
            accept_shared_urls: false,
        }];
        &default_origin
    } else {
        input.origins
    };
    check_shared_urls(
        origin_cfgs,
        input.routes,
        input.default_store,
        input.private_prefixes,
    )?;

    let mut origins = Vec::new();
    let mut by_name = HashMap::new();
    for oc in origin_cfgs {
        anyhow::ensure!(
            by_name.insert(oc.name.clone(), origins.len()).is_none(),
            "origin {:?} is configured twice",
            oc.name
        );
        let location = oc
            .store
            .as_deref()
            .or(input.default_store)
            .with_context(|| {
                format!(
                    "origin {:?} has no store and there is no top-level store",
                    oc.name
                )
            })?;
        let opened = stores.open(location, input.clouds)?;
        let store = opened.as_store();
        let signer: Arc<dyn Signer> = match (&oc.signer, &opened) {
            (SignerConfig::Embedded, Opened::Local(local)) => {
                anyhow::ensure!(
                    embedded.is_none(),
                    "only one origin can use the embedded signer"
                );
                let root = local
                    .local_root()
                    .context("the embedded origin needs a local store")?;
                let signer = embedded_signer(input.embedded, root)?;
                embedded = Some(EmbeddedOrigin {
                    files: (**local).clone(),
                    signer: signer.clone(),
                });
                Arc::new(signer)
            }
            (SignerConfig::Embedded, Opened::S3(_) | Opened::Cloud(_)) => anyhow::bail!(
                "origin {:?}: the embedded signer serves local stores only; use kind = \"s3\" for {location}",
                oc.name
            ),
            (SignerConfig::S3(c), Opened::S3(s3)) => sigv4_for(s3, &input.clouds.s3, c).await?,
            (SignerConfig::S3(_), Opened::Local(_) | Opened::Cloud(_)) => anyhow::bail!(
                "origin {:?}: kind = \"s3\" needs an s3:// store, not {location}",
                oc.name
            ),
            (SignerConfig::Cloudfront(c), _) => Arc::new(CloudFrontSigner::from_config(c)?),
            (SignerConfig::SecureLink(c), _) => Arc::new(SecureLinkSigner::from_config(c)?),
            (SignerConfig::HmacToken(c), _) => Arc::new(HmacTokenSigner::from_config(c)?),
            (SignerConfig::Public(c), _) => Arc::new(PublicSigner::from_config(c)?),
            (SignerConfig::Gcs(c), _) => Arc::new(GcsSigner::from_config(c)?),
            (SignerConfig::AzureSas(c), _) => AzureSasSigner::from_config(c).await?,
        };
        origins.push(Arc::new(Origin::new(
            oc.name.clone(),
            signer,
            store,
            oc.regions.clone(),
            input.cache,
        )));
    }

    let mut routes = Vec::new();
    for rc in input.routes {
        let list =
            rc.origins
                .iter()
                .map(|n| {
                    by_name.get(n).copied().with_context(|| {
                        format!("route {:?} names unknown origin {n:?}", rc.prefix)
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
        routes.push((rc.prefix.clone(), list));
    }
    let regions = RegionResolver::new(input.regions)?;
    Ok(Built {
        federation: Arc::new(Federation::new(origins, routes, regions)?),
        embedded,
    })
}

/// Names of the origins that can serve a repository under one of `private` prefixes: those of
/// the routes such a repository can take (the longest route that is a prefix of the private
/// prefix, and every route inside it), plus every origin reading the same store as one of them
/// (a CDN over that store most likely fronts the private objects too).
fn origins_serving_private<'a>(
    origins: &'a [OriginConfig],
    routes: &[RouteConfig],
    default_store: Option<&str>,
    private: &[&str],
) -> Vec<&'a str> {
    let all: Vec<&str> = origins.iter().map(|o| o.name.as_str()).collect();
    let mut table: Vec<(&str, Vec<&str>)> = routes
        .iter()
        .map(|r| {
            let names = r.origins.iter().map(String::as_str).collect();
            (r.prefix.as_str(), names)
        })
        .collect();
    if !table.iter().any(|(p, _)| p.is_empty()) {
        // The default route, as Federation::new adds it.
        table.push(("", all.clone()));
    }
    let mut serving: Vec<&str> = Vec::new();
    for p in private {
        let covering = table
            .iter()
            .filter(|(r, _)| p.starts_with(r))
            .max_by_key(|(r, _)| r.len());
        let inside = table.iter().filter(|(r, _)| r.starts_with(p));
        for (_, names) in covering.into_iter().chain(inside) {
            serving.extend(names.iter().copied());
        }
    }
    let store_of = |name: &str| {
        origins
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.store.as_deref().or(default_store))
    };
    let private_stores: Vec<&str> = serving.iter().filter_map(|n| store_of(n)).collect();
    all.into_iter()
        .filter(|n| serving.contains(n) || store_of(n).is_some_and(|s| private_stores.contains(&s)))
        .collect()
}

/// Refuses origins whose URLs open more than one object (see [`SignerConfig::shared_urls`]) when
/// they can serve private repositories, unless `accept_shared_urls = true` says the operator
/// accepts it (then a warning is logged).
pub fn check_shared_urls(
    origins: &[OriginConfig],
    routes: &[RouteConfig],
    default_store: Option<&str>,
    private: &[&str],
) -> anyhow::Result<()> {
    if private.is_empty() {
        return Ok(());
    }
    let serving = origins_serving_private(origins, routes, default_store, private);
    let mut refused = Vec::new();
    for o in origins
        .iter()
        .filter(|o| serving.contains(&o.name.as_str()))
    {
        let Some(why) = o.signer.shared_urls() else {
            continue;
        };
        if o.accept_shared_urls {
            tracing::warn!(
                origin = %o.name,
                reason = why,
                "origin can serve private repositories but one of its URLs opens more than one object; accepted by accept_shared_urls = true"
            );
        } else {
            refused.push(format!("origin {:?} ({why})", o.name));
        }
    }
    anyhow::ensure!(
        refused.is_empty(),
        "[auth] rules make repositories private, but these origins can serve them with URLs \
         that open more than the one object they were issued for: {}; route private prefixes to \
         origins with per-object URLs (embedded, s3, secure-link, cloudfront policy = \"canned\", \
         hmac-token scope = \"acl\" or \"url\") over a store of their own, or set \
         accept_shared_urls = true on such an [[origins]] entry to accept it",
        refused.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_secret_is_created_once_owner_only_and_shared() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // Replicas starting together: one creates it, all read the same secret.
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| ensure_store_secret(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let path = dir.path().join(layout::LOCAL_ORIGIN_SECRET);
        assert!(paths.iter().all(|p| *p == path));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.trim().len() >= 40, "{text:?}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left beside it.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [layout::LOCAL_ORIGIN_SECRET]);
        // A second start keeps it; two signers from it agree.
        ensure_store_secret(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let cfg = EmbeddedConfig::default();
        let (a, b) = (
            embedded_signer(&cfg, dir.path()).unwrap(),
            embedded_signer(&cfg, dir.path()).unwrap(),
        );
        let req = crate::sign::SignRequest {
            method: crate::sign::Method::Get,
            key: "blobs/sha256/ab",
            content_type: "application/octet-stream",
            ttl: Duration::from_secs(60),
        };
        let now = std::time::SystemTime::now();
        assert_eq!(a.sign(&req, now), b.sign(&req, now));
        // An explicit file wins; a short secret is refused.
        let explicit = dir.path().join("mine");
        std::fs::write(&explicit, "short\n").unwrap();
        let cfg = EmbeddedConfig {
            secret_file: Some(explicit),
            url: None,
        };
        assert!(embedded_signer(&cfg, dir.path()).is_err());
    }

    fn origins(toml_text: &str) -> (Vec<OriginConfig>, Vec<RouteConfig>) {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            origins: Vec<OriginConfig>,
            #[serde(default)]
            routes: Vec<RouteConfig>,
        }
        let d: Doc = toml::from_str(toml_text).unwrap();
        (d.origins, d.routes)
    }

    const MIXED: &str = r#"
        [[origins]]
        name = "local"
        store = "/srv/private"
        signer = { kind = "embedded" }

        [[origins]]
        name = "cdn"
        store = "/srv/public"
        signer = { kind = "public", base_url = "https://cdn.example.net" }

        [[routes]]
        prefix = ""
        origins = ["cdn"]

        [[routes]]
        prefix = "team/"
        origins = ["local"]
    "#;

    #[test]
    fn which_signers_share_urls() {
        let (o, _) = origins(
            r#"
            [[origins]]
            name = "a"
            signer = { kind = "cloudfront", base_url = "https://d.cloudfront.net", key_pair_id = "K1" }
            [[origins]]
            name = "b"
            signer = { kind = "cloudfront", base_url = "https://d.cloudfront.net", key_pair_id = "K1", policy = "canned" }
            [[origins]]
            name = "c"
            signer = { kind = "hmac-token", base_url = "https://c.example.net", scope = "acl-prefix" }
            [[origins]]
            name = "d"
            signer = { kind = "hmac-token", base_url = "https://c.example.net" }
            [[origins]]
            name = "e"
            signer = { kind = "public", base_url = "https://c.example.net" }
            [[origins]]
            name = "f"
            signer = { kind = "embedded" }
            "#,
        );
        let shared: Vec<bool> = o.iter().map(|o| o.signer.shared_urls().is_some()).collect();
        assert_eq!(shared, [true, false, true, false, true, false]);
    }

    #[test]
    fn only_origins_that_can_serve_private_repositories_count() {
        let (o, r) = origins(MIXED);
        // team/ goes to the embedded origin only; the public CDN has its own store.
        assert!(check_shared_urls(&o, &r, None, &["team/"]).is_ok());
        assert_eq!(
            origins_serving_private(&o, &r, None, &["team/a"]),
            ["local"]
        );
        // A private prefix outside team/ falls to the catch-all route: the public CDN.
        let e = check_shared_urls(&o, &r, None, &["other/"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"cdn\"") && e.contains("accept_shared_urls"),
            "{e}"
        );
        // A private prefix wider than team/ reaches both.
        assert_eq!(
            origins_serving_private(&o, &r, None, &["te"]),
            ["local", "cdn"]
        );
        // No rules: nothing is private.
        assert!(check_shared_urls(&o, &r, None, &[]).is_ok());
    }

    #[test]
    fn same_store_counts_and_the_setting_accepts() {
        // Both origins read the top-level store: the CDN fronts the private objects too.
        let text = MIXED
            .replace("store = \"/srv/private\"\n", "")
            .replace("store = \"/srv/public\"\n", "");
        let (mut o, r) = origins(&text);
        assert!(check_shared_urls(&o, &r, Some("/srv/store"), &["team/"]).is_err());
        o[1].accept_shared_urls = true;
        assert!(check_shared_urls(&o, &r, Some("/srv/store"), &["team/"]).is_ok());
        // Without routes, the default route sends everything everywhere.
        let (o, _) = origins(MIXED);
        assert!(check_shared_urls(&o, &[], None, &["team/"]).is_err());
    }
}
