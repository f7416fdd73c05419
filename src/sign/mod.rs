//! URL signers: turn an object key into a short-lived URL a client can fetch.
//!
//! The endpoint never streams bytes; it signs. Each origin kind (the embedded origin, S3 SigV4,
//! CDNs) is one small type behind [`Signer`], so handlers and tests never know which one is in use.

pub mod azure_sas;
pub mod cloudfront;
pub mod embedded;
pub mod encode;
pub mod gcs_v4;
pub mod hmac_token;
pub mod object_urls;
pub mod public;
pub mod secure_link;
pub mod sigv4;

use std::time::{Duration, SystemTime};

pub use embedded::EmbeddedSigner;

/// The HTTP method a URL is signed for. Some origins (S3) refuse a HEAD on a GET-signed URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

/// One URL to sign: which object, for which method, answered with which `Content-Type`.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    pub method: Method,
    /// A key from [`crate::layout`].
    pub key: &'a str,
    /// The `Content-Type` the origin must answer with, where the origin can be told.
    pub content_type: &'a str,
    /// How long the URL stays valid.
    pub ttl: Duration,
}

/// Signs object URLs for one origin.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics (`embedded`, `s3`, ...).
    fn kind(&self) -> &'static str;

    /// The URL to redirect to (absolute, or a path on this endpoint for the embedded origin).
    fn sign(&self, req: &SignRequest<'_>, now: SystemTime) -> String;
}

/// Seconds since the Unix epoch (signers work in whole seconds).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
