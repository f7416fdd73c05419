//! Building the federation from the configuration file: origins (signer + store), routes, regions.
//!
//! Without any `[[origins]]`, the store itself is the one origin: a local directory is served by
//! the embedded origin, an `s3://` bucket by SigV4-presigned URLs on that bucket.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::serve::cache::CacheConfig;
use crate::serve::origin::EmbeddedOrigin;
use crate::sign::cloudfront::{CloudFrontConfig, CloudFrontSigner};
use crate::sign::hmac_token::{HmacTokenConfig, HmacTokenSigner};
use crate::sign::public::{PublicConfig, PublicSigner};
use crate::sign::secure_link::{SecureLinkConfig, SecureLinkSigner};
use crate::sign::sigv4::{SigV4Config, SigV4Signer};
use crate::sign::{EmbeddedSigner, Signer};
use crate::store::{self, LocalStore, S3Settings, S3Store, Store};

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
    pub s3: &'a S3Settings,
    pub origins: &'a [OriginConfig],
    pub routes: &'a [RouteConfig],
    pub regions: &'a RegionSettings,
    pub embedded: &'a EmbeddedConfig,
    pub cache: CacheConfig,
}

/// Stores opened once per location, shared by origins that name the same one.
#[derive(Default)]
struct Stores {
    local: HashMap<String, Arc<LocalStore>>,
    s3: HashMap<String, Arc<S3Store>>,
}

enum Opened {
    Local(Arc<LocalStore>),
    S3(Arc<S3Store>),
}

impl Opened {
    fn as_store(&self) -> Arc<dyn Store> {
        match self {
            Opened::Local(s) => s.clone(),
            Opened::S3(s) => s.clone(),
        }
    }
}

impl Stores {
    fn open(&mut self, location: &str, s3: &S3Settings) -> anyhow::Result<Opened> {
        if location.starts_with("s3://") {
            if let Some(s) = self.s3.get(location) {
                return Ok(Opened::S3(s.clone()));
            }
            let s = Arc::new(S3Store::open(location, s3)?);
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
            .context("only local and s3:// stores are supported")?;
        let s = Arc::new(LocalStore::open(root)?);
        self.local.insert(location.to_owned(), s.clone());
        Ok(Opened::Local(s))
    }
}

fn embedded_signer(cfg: &EmbeddedConfig) -> anyhow::Result<EmbeddedSigner> {
    let url = cfg.url.as_deref();
    let Some(path) = &cfg.secret_file else {
        return Ok(EmbeddedSigner::random(url));
    };
    let secret = std::fs::read(path)
        .with_context(|| format!("cannot read origin secret file {}", path.display()))?;
    let secret = secret.trim_ascii();
    anyhow::ensure!(
        secret.len() >= 16,
        "origin secret in {} is shorter than 16 bytes; generate one with `head -c 32 /dev/urandom | base64`",
        path.display()
    );
    Ok(EmbeddedSigner::new(secret, url))
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

/// Builds the federation. Stores are opened once per location.
pub async fn build(input: FederationInput<'_>) -> anyhow::Result<Built> {
    let mut stores = Stores::default();
    let mut embedded: Option<EmbeddedOrigin> = None;
    let default_origin;
    let origin_cfgs: &[OriginConfig] = if input.origins.is_empty() {
        let location = input.default_store.context(
            "no store given: pass --store DIR (or file:///path, s3://bucket/prefix), set STATIC_REGISTRY_STORE, or configure [[origins]]",
        )?;
        let signer = if location.starts_with("s3://") {
            SignerConfig::S3(S3SignerConfig::default())
        } else {
            SignerConfig::Embedded
        };
        default_origin = [OriginConfig {
            name: "default".into(),
            store: Some(location.to_owned()),
            regions: vec![],
            signer,
        }];
        &default_origin
    } else {
        input.origins
    };

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
        let opened = stores.open(location, input.s3)?;
        let store = opened.as_store();
        let signer: Arc<dyn Signer> = match (&oc.signer, &opened) {
            (SignerConfig::Embedded, Opened::Local(local)) => {
                anyhow::ensure!(
                    embedded.is_none(),
                    "only one origin can use the embedded signer"
                );
                let signer = embedded_signer(input.embedded)?;
                embedded = Some(EmbeddedOrigin {
                    files: (**local).clone(),
                    signer: signer.clone(),
                });
                Arc::new(signer)
            }
            (SignerConfig::Embedded, Opened::S3(_)) => anyhow::bail!(
                "origin {:?}: the embedded signer serves local stores only; use kind = \"s3\" for {location}",
                oc.name
            ),
            (SignerConfig::S3(c), Opened::S3(s3)) => sigv4_for(s3, input.s3, c).await?,
            (SignerConfig::S3(_), Opened::Local(_)) => anyhow::bail!(
                "origin {:?}: kind = \"s3\" needs an s3:// store, not {location}",
                oc.name
            ),
            (SignerConfig::Cloudfront(c), _) => Arc::new(CloudFrontSigner::from_config(c)?),
            (SignerConfig::SecureLink(c), _) => Arc::new(SecureLinkSigner::from_config(c)?),
            (SignerConfig::HmacToken(c), _) => Arc::new(HmacTokenSigner::from_config(c)?),
            (SignerConfig::Public(c), _) => Arc::new(PublicSigner::from_config(c)?),
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
