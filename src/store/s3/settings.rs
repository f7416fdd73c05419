//! The `[s3]` settings and the `s3://BUCKET[/PREFIX]` location, checked at startup.

use anyhow::{anyhow, bail};
use serde::Deserialize;

pub(super) const MIB: u64 = 1024 * 1024;
/// S3's limits: parts other than the last are at least 5 MiB, at most 5 GiB, at most 10 000 of
/// them; a single PUT is at most 5 GiB.
pub(super) const MIN_PART: u64 = 5 * MIB;
pub(super) const MAX_PART: u64 = 5 * 1024 * MIB;
pub(super) const MAX_PARTS: u64 = 10_000;

/// How conditional writes are done. A setting because a few S3 "compatibles" lack them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConditionalWrites {
    /// `If-None-Match: *` / `If-Match: <etag>` on PUT: atomic. AWS, R2, MinIO, s3s-fs.
    #[default]
    Etag,
    /// Read the current ETag, compare, then write unconditionally. Not atomic: only safe when a
    /// single publisher writes to the store at a time. For backends without conditional PUT.
    Emulated,
}

/// The `[s3]` configuration section: everything about an S3 store except its location.
///
/// Every field has a default, so an empty section (or none) works against AWS with the standard
/// credential chain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket's region, used for SigV4. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`,
    /// then the selected profile's `region`, then `us-east-1`. Compatibles usually accept any
    /// value (R2 wants `auto`).
    pub region: Option<String>,
    /// Base URL of an S3-compatible service, e.g. `https://<account>.r2.cloudflarestorage.com`,
    /// `https://storage.googleapis.com` or `http://127.0.0.1:9000`. Default: AWS
    /// (`https://s3.<region>.amazonaws.com`). Plain `http` is accepted for loopback hosts only,
    /// unless `allow_http` is set.
    pub endpoint: Option<String>,
    /// Address the bucket in the path (`https://host/bucket/key`) instead of the host name
    /// (`https://bucket.host/key`). Default `false`, which AWS requires for new buckets; MinIO,
    /// Ceph and s3s-fs usually need `true`.
    pub path_style: bool,
    /// Allow plain `http` to a non-loopback `endpoint` (a private network). Default `false`:
    /// request signatures protect integrity, not confidentiality.
    pub allow_http: bool,
    /// Files at least this large are uploaded in parts. Default 64 MiB; at most 5 GiB (the
    /// single-PUT limit). A single PUT holds the whole file in memory, so this is also a memory
    /// bound.
    pub multipart_threshold: u64,
    /// Size of each part. Default 16 MiB; 5 MiB to 5 GiB. Raised automatically when a file would
    /// need more than 10 000 parts.
    pub part_size: u64,
    /// Parts uploaded at once. Default 4. Memory for uploads is about `part_size × concurrency`.
    pub concurrency: usize,
    /// The shared-credentials profile to use, ahead of environment keys (like `aws --profile`).
    /// Default: `AWS_PROFILE`, else `default`, consulted after the environment.
    pub profile: Option<String>,
    /// See [`ConditionalWrites`]. Default `etag`.
    pub conditional_writes: ConditionalWrites,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            region: None,
            endpoint: None,
            path_style: false,
            allow_http: false,
            multipart_threshold: 64 * MIB,
            part_size: 16 * MIB,
            concurrency: 4,
            profile: None,
            conditional_writes: ConditionalWrites::Etag,
        }
    }
}

impl S3Settings {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if !(MIN_PART..=MAX_PART).contains(&self.part_size) {
            bail!("s3.part_size must be between 5 MiB and 5 GiB (S3's part limits)");
        }
        if self.multipart_threshold == 0 || self.multipart_threshold > MAX_PART {
            bail!("s3.multipart_threshold must be between 1 byte and 5 GiB (S3's PUT limit)");
        }
        if self.concurrency == 0 {
            bail!("s3.concurrency must be at least 1");
        }
        Ok(())
    }
}

/// `s3://BUCKET[/PREFIX]`, parsed and checked, so a typo fails at startup rather than as an odd
/// key on the first write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// No leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
}

impl S3Location {
    pub fn parse(location: &str) -> anyhow::Result<S3Location> {
        let rest = location
            .strip_prefix("s3://")
            .ok_or_else(|| anyhow!("an S3 store location starts with s3://"))?;
        if rest.contains(['?', '#']) {
            bail!("invalid S3 location {location:?}: no query or fragment allowed");
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // 3 to 63 characters is the S3 rule (and s3s-fs enforces it); the character set is kept
        // loose because GCS and old us-east-1 buckets allow more than today's AWS rules.
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid_bucket {
            bail!("invalid S3 bucket name {bucket:?} in {location:?}");
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("invalid S3 prefix {prefix:?} in {location:?}");
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}
