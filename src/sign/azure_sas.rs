//! Azure Blob Storage service SAS URLs (`kind = "azure-sas"`): one HMAC-SHA256 with the storage
//! account key over the string-to-sign of SAS version 2020-12-06 and later
//! (<https://learn.microsoft.com/rest/api/storageservices/create-service-sas>).
//!
//! Each URL grants read (`sp=r`) on one blob (`sr=b`) until `se`; no start time, so a replica's
//! clock running ahead never makes a fresh URL "not yet valid". `rsct` makes Azure answer with the
//! manifest's media type. A SAS is not bound to a method, so the same URL answers the HEAD
//! clients send before a manifest GET. `spr=https` whenever the endpoint is https, so the URL
//! cannot be replayed over plain http.
//!
//! With an Azure AD identity instead of the account key (`user_delegation`), URLs are
//! user-delegation SAS signed with a delegation key the service hands that identity
//! (`delegation.rs`); a URL never outlives its key.

mod delegation;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::encode::{push, QUERY_VALUE};
use super::object_urls::{load_secret, ObjectUrls};
use super::{unix_secs, SignRequest, Signer};
use delegation::DelegationKey;

/// The SAS version signed (`sv`): supported by Azure and Azurite 3.x alike.
pub const SAS_VERSION: &str = "2022-11-02";

/// The environment variables `object_store` reads an account key from, in order; the signer
/// reads the same ones when none is configured, so store and signer share one identity.
pub const ACCOUNT_KEY_ENVS: [&str; 2] = ["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY"];

/// `[origins.signer] kind = "azure-sas"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSasConfig {
    pub account: String,
    pub container: String,
    /// Key prefix inside the container (the store root); may be empty.
    #[serde(default)]
    pub prefix: String,
    /// The Blob service URL clients are sent to. Default `https://ACCOUNT.blob.core.windows.net`;
    /// Azurite's is `http://127.0.0.1:10000/devstoreaccount1`; a custom domain or a CDN in front
    /// of the account works too (the SAS is checked by Azure either way).
    pub endpoint: Option<String>,
    /// The account key (base64, as the portal shows it) in a file or an environment variable;
    /// default: `AZURE_STORAGE_ACCOUNT_KEY`, then `AZURE_STORAGE_ACCESS_KEY`.
    pub account_key_file: Option<PathBuf>,
    pub account_key_env: Option<String>,
    /// Sign user-delegation SAS with the store's Azure AD identity instead of the account key.
    /// Default: the account key when one is configured or in the environment, else delegation.
    pub user_delegation: Option<bool>,
}

/// What URLs are signed with.
enum Key {
    /// HMAC-SHA256 already keyed with the account key: each URL clones it instead of re-deriving
    /// the padded key blocks.
    Account(Hmac<Sha256>),
    /// The current user delegation key (replaced by the refresher), keyed likewise.
    Delegation(Arc<RwLock<(DelegationKey, Hmac<Sha256>)>>),
}

/// Signs read-only, one-blob SAS URLs with the account key or a user delegation key.
pub struct AzureSasSigner {
    account: String,
    /// `/blob/ACCOUNT/CONTAINER/`: the canonicalized resource without the blob name.
    resource_prefix: String,
    /// The blob name prefix inside the container (`prefix/`, or empty).
    blob_prefix: String,
    urls: ObjectUrls,
    https: bool,
    key: Key,
}

impl fmt::Debug for AzureSasSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSasSigner")
            .field("account", &self.account)
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl AzureSasSigner {
    /// The signer `cfg` describes: with the account key, or (`user_delegation`) with a delegation
    /// key fetched now with the identity `object_store` finds in the environment and refreshed in
    /// the background.
    pub async fn from_config(cfg: &AzureSasConfig) -> anyhow::Result<Arc<Self>> {
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", cfg.account));
        let configured = cfg.account_key_file.is_some() || cfg.account_key_env.is_some();
        let from_env = ACCOUNT_KEY_ENVS
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|k| !k.is_empty()));
        let delegate = cfg
            .user_delegation
            .unwrap_or(!configured && from_env.is_none());
        if delegate {
            return Self::delegated(cfg, &endpoint).await;
        }
        let key = match (configured, from_env) {
            (false, Some(k)) => k,
            (false, None) => bail!(
                "the azure-sas signer needs the storage account key ({} or \
                 account_key_file/account_key_env), or user_delegation = true",
                ACCOUNT_KEY_ENVS[0]
            ),
            (true, _) => load_secret(
                cfg.account_key_file.as_deref(),
                cfg.account_key_env.as_deref(),
                "Azure account key",
            )?,
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .context("the Azure account key is not base64")?;
        Ok(Arc::new(Self::new(
            &cfg.account,
            &cfg.container,
            &cfg.prefix,
            &endpoint,
            key,
        )?))
    }

    /// User-delegation SAS: a key fetched with the environment's Azure AD identity (service
    /// principal, workload or managed identity, `AZURE_STORAGE_TOKEN`), then kept fresh.
    async fn delegated(cfg: &AzureSasConfig, endpoint: &str) -> anyhow::Result<Arc<Self>> {
        use object_store::azure::{AzureCredential, MicrosoftAzureBuilder};
        let (_, allow_http) = crate::store::bucket::checked_endpoint(endpoint, "azure-sas", false)?;
        let client = MicrosoftAzureBuilder::from_env()
            .with_account(&cfg.account)
            .with_container_name(&cfg.container)
            .with_endpoint(endpoint.to_owned())
            .with_allow_http(allow_http)
            .build()
            .context("cannot configure the Azure identity for user-delegation SAS")?;
        let credentials = client.credentials().clone();
        let http = delegation::http_client()?;
        let service = endpoint.to_owned();
        let fetch = move || {
            let (credentials, http, service) = (credentials.clone(), http.clone(), service.clone());
            async move {
                let token = match credentials.get_credential().await?.as_ref() {
                    AzureCredential::BearerToken(t) => t.clone(),
                    _ => bail!(
                        "user-delegation SAS needs an Azure AD identity (service principal, \
                         workload or managed identity); the environment gives a key or a SAS"
                    ),
                };
                let now = super::unix_secs(SystemTime::now());
                delegation::fetch(&http, &service, &token, now).await
            }
        };
        let first = fetch().await?;
        let mac = keyed(&first.value);
        let current = Arc::new(RwLock::new((first, mac)));
        let mut signer = Self::new(
            &cfg.account,
            &cfg.container,
            &cfg.prefix,
            endpoint,
            vec![0; 32],
        )?;
        signer.key = Key::Delegation(current.clone());
        let weak = Arc::downgrade(&current);
        tokio::spawn(async move {
            loop {
                let Some(current) = weak.upgrade() else { break };
                let expires_at = current.read().expect("delegation key lock").0.expires_at;
                drop(current);
                let now = super::unix_secs(SystemTime::now());
                let due = expires_at.saturating_sub(delegation::REFRESH_BEFORE.as_secs());
                tokio::time::sleep(Duration::from_secs(due.saturating_sub(now).max(60))).await;
                match fetch().await {
                    Ok(k) => {
                        let Some(current) = weak.upgrade() else { break };
                        let mac = keyed(&k.value);
                        *current.write().expect("delegation key lock") = (k, mac);
                        tracing::info!("renewed the Azure user delegation key");
                    }
                    Err(e) => tracing::warn!(
                        error = %format!("{e:#}"),
                        "cannot renew the Azure user delegation key; retrying in a minute"
                    ),
                }
            }
        });
        Ok(Arc::new(signer))
    }

    pub fn new(
        account: &str,
        container: &str,
        prefix: &str,
        endpoint: &str,
        key: Vec<u8>,
    ) -> anyhow::Result<Self> {
        if account.is_empty() || container.is_empty() {
            bail!("azure-sas: account and container are required");
        }
        if key.len() < 16 {
            bail!("azure-sas: the account key is too short");
        }
        let base = format!("{}/{container}", endpoint.trim_end_matches('/'));
        let urls = ObjectUrls::new(&base, prefix)?;
        let prefix = prefix.trim_matches('/');
        Ok(AzureSasSigner {
            account: account.to_owned(),
            resource_prefix: format!("/blob/{account}/{container}/"),
            blob_prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            https: urls.origin().starts_with("https:"),
            urls,
            key: Key::Account(keyed(&key)),
        })
    }

    /// The string-to-sign of a read-only blob service SAS (SAS version 2020-12-06 and later).
    fn string_to_sign(&self, key: &str, expiry: &str, content_type: &str) -> String {
        let protocol = if self.https { "https" } else { "" };
        // Fields: sp, st, se, canonicalizedResource, si, sip, spr, sv, sr, snapshot time,
        // encryption scope, rscc, rscd, rsce, rscl, rsct.
        format!(
            "r\n\n{expiry}\n{}{}{key}\n\n\n{protocol}\n{SAS_VERSION}\nb\n\n\n\n\n\n\n{content_type}",
            self.resource_prefix, self.blob_prefix
        )
    }

    /// The string-to-sign of a read-only blob user-delegation SAS (2020-12-06 and later).
    fn delegated_string_to_sign(
        &self,
        k: &DelegationKey,
        key: &str,
        expiry: &str,
        content_type: &str,
    ) -> String {
        let protocol = if self.https { "https" } else { "" };
        // Fields: sp, st, se, canonicalizedResource, skoid, sktid, skt, ske, sks, skv, saoid,
        // suoid, scid, sip, spr, sv, sr, snapshot time, encryption scope, rscc, rscd, rsce,
        // rscl, rsct.
        format!(
            "r\n\n{expiry}\n{}{}{key}\n{}\n{}\n{}\n{}\n{}\n{}\n\n\n\n\n{protocol}\n{SAS_VERSION}\nb\n\n\n\n\n\n\n{content_type}",
            self.resource_prefix, self.blob_prefix, k.oid, k.tid, k.start, k.expiry, k.service, k.version
        )
    }
}

fn keyed(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn signature(mac: &Hmac<Sha256>, string_to_sign: &str) -> String {
    let mut mac = mac.clone();
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `2026-12-06T10:00:00Z`: the ISO 8601 form SAS times take.
fn sas_time(unix: u64) -> String {
    jiff::Timestamp::from_second(unix as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "9999-12-31T23:59:59Z".into())
}

impl Signer for AzureSasSigner {
    fn kind(&self) -> &'static str {
        "azure-sas"
    }

    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String {
        let until = unix_secs(now) + req.ttl.as_secs().max(1);
        let mut url = String::with_capacity(self.urls.url_len(req.key) + 400);
        self.urls.push_url(&mut url, req.key);
        url.push_str("?sv=");
        url.push_str(SAS_VERSION);
        let (expiry, sig) = match &self.key {
            Key::Account(mac) => {
                let expiry = sas_time(until);
                let sts = self.string_to_sign(req.key, &expiry, req.content_type);
                (expiry, signature(mac, &sts))
            }
            Key::Delegation(current) => {
                let current = current.read().expect("delegation key lock");
                let (k, mac) = &*current;
                // Never beyond the key's own expiry: the service would refuse the URL.
                let expiry = sas_time(until.min(k.expires_at));
                let sts = self.delegated_string_to_sign(k, req.key, &expiry, req.content_type);
                for (name, value) in [
                    ("skoid", &k.oid),
                    ("sktid", &k.tid),
                    ("skt", &k.start),
                    ("ske", &k.expiry),
                    ("sks", &k.service),
                    ("skv", &k.version),
                ] {
                    url.push('&');
                    url.push_str(name);
                    url.push('=');
                    push(&mut url, value, QUERY_VALUE);
                }
                (expiry, signature(mac, &sts))
            }
        };
        if self.https {
            url.push_str("&spr=https");
        }
        url.push_str("&se=");
        push(&mut url, &expiry, QUERY_VALUE);
        url.push_str("&sr=b&sp=r");
        if !req.content_type.is_empty() {
            url.push_str("&rsct=");
            push(&mut url, req.content_type, QUERY_VALUE);
        }
        url.push_str("&sig=");
        push(&mut url, &sig, QUERY_VALUE);
        url
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sign::Method;

    /// Azurite's published development key (not a secret).
    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn signer(endpoint: &str, prefix: &str) -> AzureSasSigner {
        let key = base64::engine::general_purpose::STANDARD
            .decode(DEV_KEY)
            .unwrap();
        AzureSasSigner::new("devstoreaccount1", "images", prefix, endpoint, key).unwrap()
    }

    fn req<'a>(key: &'a str, ct: &'a str) -> SignRequest<'a> {
        SignRequest {
            method: Method::Get,
            key,
            content_type: ct,
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn string_to_sign_layout() {
        let s = signer("https://devstoreaccount1.blob.core.windows.net", "reg");
        let sts = s.string_to_sign("blobs/sha256/ab", "2026-12-06T10:10:00Z", "text/plain");
        let fields: Vec<&str> = sts.split('\n').collect();
        assert_eq!(fields.len(), 16, "{sts:?}");
        assert_eq!(fields[0], "r");
        assert_eq!(fields[2], "2026-12-06T10:10:00Z");
        assert_eq!(
            fields[3],
            "/blob/devstoreaccount1/images/reg/blobs/sha256/ab"
        );
        assert_eq!(fields[6], "https");
        assert_eq!(fields[7], SAS_VERSION);
        assert_eq!(fields[8], "b");
        assert_eq!(fields[15], "text/plain");
    }

    #[test]
    fn urls() {
        let s = signer("http://127.0.0.1:10000/devstoreaccount1", "");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_551_200);
        let url = s.sign(
            &req(
                "repositories/a/_manifests/sha256/x",
                "application/vnd.oci.image.manifest.v1+json",
            ),
            now,
        );
        assert!(
            url.starts_with(
                "http://127.0.0.1:10000/devstoreaccount1/images/repositories/a/_manifests/sha256/x?sv=2022-11-02&se=2026-12-06T"
            ),
            "{url}"
        );
        assert!(!url.contains("spr="), "plain http endpoint: {url}");
        assert!(url.contains("&rsct=application%2Fvnd.oci.image.manifest.v1%2Bjson&sig="));
        // The signature is HMAC-SHA256 of the string-to-sign under the decoded key.
        let sig = url.rsplit("&sig=").next().unwrap();
        let sig = percent_encoding::percent_decode_str(sig)
            .decode_utf8()
            .unwrap();
        let Key::Account(mac) = &s.key else { panic!() };
        let want = signature(
            mac,
            &s.string_to_sign(
                "repositories/a/_manifests/sha256/x",
                &sas_time(1_796_551_800),
                "application/vnd.oci.image.manifest.v1+json",
            ),
        );
        assert_eq!(sig, want);
        // Another key, content type or expiry gives another signature.
        let other = s.sign(&req("repositories/a/_manifests/sha256/y", "x/y"), now);
        assert_ne!(other.rsplit("&sig=").next(), url.rsplit("&sig=").next());
        let https = signer("https://acct.blob.core.windows.net", "p");
        assert!(https
            .sign(&req("k", ""), now)
            .contains("?sv=2022-11-02&spr=https&se="));
        assert!(!https.sign(&req("k", ""), now).contains("rsct"));
    }

    #[test]
    fn key_material_is_checked_and_never_shown() {
        let s = signer("https://acct.blob.core.windows.net", "");
        assert!(!format!("{s:?}").contains("Eby8"));
        assert!(AzureSasSigner::new("a", "c", "", "https://h", vec![1; 4]).is_err());
        assert!(AzureSasSigner::new("a", "c", "../x", "https://h", vec![1; 32]).is_err());
        assert_eq!(sas_time(0), "1970-01-01T00:00:00Z");
    }
}
