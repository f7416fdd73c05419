//! S3 and S3-compatible object stores (AWS, Cloudflare R2, MinIO, Ceph RGW, GCS's XML interop
//! API), through `object_store`'s S3 client.
//!
//! The location is `s3://BUCKET[/PREFIX]`; everything else is [`S3Settings`] (the `[s3]` section
//! of the configuration file). Keys are always relative to the prefix, so one bucket can hold
//! several layouts.
//!
//! # Conditional writes
//!
//! The publisher commits repository indexes with compare-and-swap, so two publishers racing on
//! one repository cannot lose each other's tags:
//! - [`PutMode::Create`] sends `If-None-Match: *`;
//! - [`PutMode::Update`] sends `If-Match: <etag>` with the ETag [`Store::get`] returned;
//! - a `412 Precondition Failed` (or `409 Conflict` left after retries, or the `304` some stores
//!   answer) becomes [`StoreError::Conflict`], and the caller re-reads and retries.
//!
//! AWS S3 (since 2024-08 for `If-None-Match`, 2024-11 for `If-Match`), R2, MinIO and s3s-fs honour
//! both headers (s3s-fs is checked by the test below). A backend that rejects them fails the
//! commit with an error naming `s3.conditional_writes`; a backend that silently *ignores* them
//! cannot be detected from the client, so check a new backend with two `Create`s on one key.
//! For such backends set `conditional_writes = "emulated"`: a read-compare-write that is only
//! safe while a single publisher runs at a time. GCS's XML API and older Ceph or MinIO releases
//! have not been checked here.
//!
//! `put_file` (blobs, content-addressed, always [`PutMode::Overwrite`] in the publisher) honours
//! the mode exactly for single-PUT uploads. A multipart upload cannot be conditional through
//! `object_store`, so above the threshold `Create` is a best-effort existence check and `Update`
//! is refused.
//!
//! # Memory
//!
//! `put_file` never reads a whole large file: below `multipart_threshold` it is one PUT of the
//! file's bytes; above, parts of `part_size` are read with `pread` and uploaded at most
//! `concurrency` at a time. A store-wide byte budget of
//! `max(part_size × concurrency, multipart_threshold)` bounds the buffers of *all* concurrent
//! `put_file` calls together, so the publisher's `--jobs` does not multiply it.
//!
//! # Credentials
//!
//! The standard AWS chain, first match wins: explicit `profile` setting; environment
//! (`AWS_ACCESS_KEY_ID`, ...); shared profile files (static keys only); web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`); container credentials (ECS
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, EKS Pod Identity `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`); EC2 IMDSv2. The last three rotate and are
//! fetched by `object_store`; [`S3Store::credential_source`] exposes the same identity to the
//! SigV4 signer, so presigned URLs and writes never disagree. Secrets never reach `Debug`, logs
//! or errors.
//!
//! # Files
//!
//! `settings` (the `[s3]` section and the location), `endpoint` (where requests go),
//! `credentials` (the chain and the provider shared with the signer), `cas` (conditional
//! writes), `multipart` (large files with bounded memory), `store_impl` (the [`Store`] methods);
//! this file builds the store.

mod cas;
mod credentials;
mod endpoint;
mod multipart;
mod settings;
mod store_impl;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use anyhow::Context;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential, S3ConditionalPut};
use object_store::path::Path as ObjPath;
use object_store::StaticCredentialProvider;

use super::bucket::{attributes, Bucket, ByteBudget, VersionField};
use super::{StoreError, StoreResult};
use crate::aws::{
    self, CredentialSource, Credentials, Env, FoundCredentials, ProfileFiles, StaticCredentials,
};
use credentials::{ambient_credentials, ProviderSource};
use endpoint::{client_options, Endpoint};
use multipart::BufferPool;
pub use settings::{ConditionalWrites, S3Location, S3Settings};

/// An S3 bucket (under an optional prefix) as a [`Store`].
///
/// Cheap to share (`Arc` inside `object_store`); build one per process and hand the
/// [`credential_source`](S3Store::credential_source) to the SigV4 signer.
pub struct S3Store {
    inner: AmazonS3,
    /// The same client for the reads, lists and deletes every cloud store shares.
    bucket: Bucket,
    location: S3Location,
    region: String,
    /// Base URL of the bucket as requests address it (`https://bucket.host` or
    /// `https://host/bucket`), without credentials.
    bucket_url: String,
    /// Human form of the service for `describe()`.
    endpoint_display: String,
    settings: S3Settings,
    credentials: Arc<dyn CredentialSource>,
    credentials_origin: String,
    /// Bytes that `put_file` may hold in memory across all concurrent calls, in KiB permits.
    budget: ByteBudget,
    /// Part buffers shared by every multipart upload of this store (see [`BufferPool`]).
    parts: BufferPool,
}

// Hand-written: `AmazonS3`'s derived Debug reaches into its credential provider.
impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.location.bucket)
            .field("prefix", &self.location.prefix)
            .field("endpoint", &self.endpoint_display)
            .field("region", &self.region)
            .field("credentials", &self.credentials_origin)
            .finish()
    }
}

impl S3Store {
    /// Opens `s3://BUCKET[/PREFIX]` with credentials from the standard AWS chain.
    pub fn open(location: &str, settings: &S3Settings) -> anyhow::Result<S3Store> {
        Self::build(location, settings, None, &aws::process_env)
    }

    /// Opens `s3://BUCKET[/PREFIX]` with the given keys, skipping the chain (tests, and callers
    /// that obtained credentials some other way).
    pub fn with_credentials(
        location: &str,
        settings: &S3Settings,
        credentials: Credentials,
    ) -> anyhow::Result<S3Store> {
        let found = FoundCredentials {
            credentials,
            origin: "explicit".into(),
        };
        Self::build(location, settings, Some(found), &aws::process_env)
    }

    fn build(
        location: &str,
        settings: &S3Settings,
        explicit: Option<FoundCredentials>,
        env: Env<'_>,
    ) -> anyhow::Result<S3Store> {
        settings.validate()?;
        let loc = S3Location::parse(location)?;
        let files = ProfileFiles::load(env)?;
        let region = aws::resolve_region(
            settings.region.as_deref(),
            settings.profile.as_deref(),
            env,
            &files,
        );
        let found = match explicit {
            Some(f) => Some(f),
            None => aws::static_chain(settings.profile.as_deref(), env, &files)?,
        };
        let endpoint = Endpoint::resolve(settings, &loc.bucket, &region)?;

        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(&region)
            .with_client_options(client_options(endpoint.allow_http, env))
            .with_virtual_hosted_style_request(endpoint.virtual_hosted)
            .with_conditional_put(match settings.conditional_writes {
                ConditionalWrites::Etag => S3ConditionalPut::ETagMatch,
                ConditionalWrites::Emulated => S3ConditionalPut::Disabled,
            })
            // Single-object DELETE is core S3; the bulk `POST ?delete` is missing on GCS interop.
            .with_disable_bulk_delete(true);
        if let Some(url) = &endpoint.builder_url {
            builder = builder.with_endpoint(url);
        }

        let (static_source, origin) = match found {
            Some(FoundCredentials {
                credentials,
                origin,
            }) => {
                builder = builder.with_credentials(Arc::new(StaticCredentialProvider::new(
                    AwsCredential {
                        key_id: credentials.access_key_id.clone(),
                        secret_key: credentials.secret_access_key.clone(),
                        token: credentials.session_token.clone(),
                    },
                )));
                let source: Arc<dyn CredentialSource> =
                    Arc::new(StaticCredentials(Arc::new(credentials)));
                (Some(source), origin)
            }
            None => {
                let (b, origin) = ambient_credentials(builder, env)?;
                builder = b;
                (None, origin.to_owned())
            }
        };
        let inner = builder.build().context("cannot configure the S3 client")?;
        // Rotating credentials: share the client's own provider (and its cache) with the signer.
        let credentials = static_source.unwrap_or_else(|| {
            Arc::new(ProviderSource::new(inner.credentials().clone())) as Arc<dyn CredentialSource>
        });
        tracing::debug!(
            "S3 store s3://{}/{} via {} ({}), credentials from {origin}",
            loc.bucket,
            loc.prefix,
            endpoint.display,
            region
        );

        let budget_bytes =
            (settings.part_size * settings.concurrency as u64).max(settings.multipart_threshold);

        let label = describe(&loc, &endpoint.display, &region);
        let bucket = Bucket::new(inner.clone(), &loc.prefix, "S3", label, VersionField::ETag);
        Ok(S3Store {
            inner,
            bucket,
            region,
            bucket_url: endpoint.bucket_url,
            endpoint_display: endpoint.display,
            settings: settings.clone(),
            credentials,
            credentials_origin: origin,
            budget: ByteBudget::new(budget_bytes),
            parts: BufferPool::default(),
            location: loc,
        })
    }

    /// The identity this store writes with, for the SigV4 signer: static keys as they are, rotating
    /// ones through `object_store`'s cached provider.
    pub fn credential_source(&self) -> Arc<dyn CredentialSource> {
        self.credentials.clone()
    }

    /// Where the credentials came from (`environment`, `profile ci`, `container`, ...), for logs.
    pub fn credentials_origin(&self) -> &str {
        &self.credentials_origin
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The bucket's base URL as this store addresses it (`https://bucket.host` or
    /// `https://host/bucket`), for the signer to build object URLs on.
    pub fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// The full object key in the bucket for a layout key (prefix included).
    pub fn object_key(&self, key: &str) -> StoreResult<String> {
        self.bucket.object_key(key)
    }

    fn path(&self, key: &str) -> StoreResult<ObjPath> {
        self.bucket.path(key)
    }

    fn fail(&self, what: &str, key: &str, e: object_store::Error) -> StoreError {
        self.bucket.fail(what, key, e)
    }
}

/// `s3://bucket/prefix (endpoint, region)`, for `describe()` and errors; no credentials.
fn describe(loc: &S3Location, endpoint: &str, region: &str) -> String {
    let mut s = format!("s3://{}", loc.bucket);
    if !loc.prefix.is_empty() {
        s.push('/');
        s.push_str(&loc.prefix);
    }
    format!("{s} ({endpoint}, {region})")
}
