//! Google Cloud Storage stores: `gs://BUCKET[/PREFIX]` and the `[gcs]` settings, through GCS's
//! JSON and XML APIs (not the S3 interoperability API, which `s3://` covers: docs/gcs.md).
//!
//! Credentials, first match wins: `gcs.service_account_file` (or `GOOGLE_SERVICE_ACCOUNT`), the
//! application default credentials file (`GOOGLE_APPLICATION_CREDENTIALS` or gcloud's), then the
//! metadata server (GKE workload identity, Compute Engine). `anonymous = true` sends no
//! credentials (public buckets, emulators). Conditional writes compare generations.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::sync::Arc;

use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::{ClientOptions, StaticCredentialProvider};
use serde::Deserialize;

use super::bucket::{checked_endpoint, parse_prefix, Bucket, VersionField, REQUEST_TIMEOUT};
use super::cloud::{CloudStore, Uploads};

/// The `[gcs]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcsSettings {
    /// Base URL of the service. Default `https://storage.googleapis.com`; an emulator otherwise.
    pub endpoint: Option<String>,
    /// Allow plain `http` to a non-loopback `endpoint`. Default `false`.
    pub allow_http: bool,
    /// Files at least this large are uploaded in parts (bytes). Default 64 MiB.
    pub multipart_threshold: Option<u64>,
    /// The size of each part (bytes). Default 16 MiB; 5 MiB to 4 GiB.
    pub part_size: Option<u64>,
    /// A service account's JSON key file.
    pub service_account_file: Option<PathBuf>,
    /// Send no credentials (a public bucket, or an emulator). Default `false`.
    pub anonymous: bool,
}

/// `gs://BUCKET[/PREFIX]`, checked at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsLocation {
    pub bucket: String,
    pub prefix: String,
}

impl GcsLocation {
    pub fn parse(location: &str) -> anyhow::Result<GcsLocation> {
        let rest = location
            .strip_prefix("gs://")
            .context("a GCS store location starts with gs://")?;
        if rest.contains(['?', '#', '@']) {
            bail!("invalid GCS location {location:?}: no query, fragment or user info");
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // GCS: 3-63 characters (222 with dots), lowercase letters, digits, `-`, `_`, `.`,
        // starting and ending with a letter or digit.
        let edge_ok =
            |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !(3..=222).contains(&bucket.len())
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            || !edge_ok(bucket.bytes().next())
            || !edge_ok(bucket.bytes().last())
        {
            bail!("invalid GCS bucket name {bucket:?} in {location:?}");
        }
        Ok(GcsLocation {
            bucket: bucket.to_owned(),
            prefix: parse_prefix(prefix, location)?,
        })
    }
}

/// Opens a GCS bucket as a store.
pub fn open(location: &str, settings: &GcsSettings) -> anyhow::Result<CloudStore> {
    let loc = GcsLocation::parse(location)?;
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&loc.bucket);
    let mut allow_http = false;
    let mut display = "https://storage.googleapis.com".to_owned();
    if let Some(raw) = settings.endpoint.as_deref() {
        let (url, http) = checked_endpoint(raw, "gcs", settings.allow_http)?;
        allow_http = http;
        display = url.as_str().trim_end_matches('/').to_owned();
        builder = builder.with_base_url(&display);
    }
    if let Some(path) = &settings.service_account_file {
        builder = builder.with_service_account_path(path.to_string_lossy());
    }
    if settings.anonymous {
        // No token is ever fetched: uploads ask the credential provider even when signatures
        // are skipped, and the default one is the metadata server.
        builder = builder.with_skip_signature(true).with_credentials(Arc::new(
            StaticCredentialProvider::new(GcpCredential {
                bearer: String::new(),
            }),
        ));
    }
    let client = builder
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(allow_http)
                .with_timeout(REQUEST_TIMEOUT),
        )
        .build()
        .context("cannot configure the GCS client")?;
    let mut label = format!("gs://{}", loc.bucket);
    if !loc.prefix.is_empty() {
        label = format!("{label}/{}", loc.prefix);
    }
    let uploads = Uploads::from_settings("gcs", settings.multipart_threshold, settings.part_size)?;
    Ok(CloudStore::new(
        Bucket::new(
            client,
            &loc.prefix,
            "GCS",
            format!("{label} ({display})"),
            VersionField::Generation,
        ),
        uploads,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = GcsLocation::parse("gs://my-bucket.example/reg/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("my-bucket.example", "reg")
        );
        for bad in [
            "gs://My-Bucket",
            "gs://ab",
            "gs://-bucket",
            "gs://bucket-",
            "gs://bucket?x",
            "gs://u@bucket",
            "gs://bucket/a//b",
            "s3://bucket",
        ] {
            assert!(GcsLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
