//! Where requests go: the endpoint URL, path- or virtual-host style, and the HTTP client options.

use anyhow::{bail, Context};
use object_store::{Certificate, ClientOptions};

use super::settings::*;
use crate::aws::Env;
use crate::store::bucket::{checked_endpoint, REQUEST_TIMEOUT};

/// Where requests go, derived once from the settings.
pub(super) struct Endpoint {
    /// What to give `AmazonS3Builder::with_endpoint`; `None` lets it derive AWS's.
    pub(super) builder_url: Option<String>,
    pub(super) virtual_hosted: bool,
    pub(super) allow_http: bool,
    pub(super) bucket_url: String,
    pub(super) display: String,
}

impl Endpoint {
    pub(super) fn resolve(
        settings: &S3Settings,
        bucket: &str,
        region: &str,
    ) -> anyhow::Result<Endpoint> {
        let Some(raw) = settings.endpoint.as_deref() else {
            let display = format!("https://s3.{region}.amazonaws.com");
            let bucket_url = if settings.path_style {
                format!("{display}/{bucket}")
            } else {
                format!("https://{bucket}.s3.{region}.amazonaws.com")
            };
            return Ok(Endpoint {
                builder_url: None,
                virtual_hosted: !settings.path_style,
                allow_http: false,
                bucket_url,
                display,
            });
        };
        let (mut url, allow_http) = checked_endpoint(raw, "s3", settings.allow_http)?;
        if url.path() != "/" {
            bail!("s3.endpoint must be a bare scheme://host[:port] (no path)");
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        if settings.path_style {
            return Ok(Endpoint {
                bucket_url: format!("{base}/{bucket}"),
                builder_url: Some(base.clone()),
                virtual_hosted: false,
                allow_http,
                display: base,
            });
        }
        // Virtual-hosted with a custom endpoint: object_store expects the bucket already in the
        // host name.
        let host = url.host_str().expect("checked above").to_owned();
        url.set_host(Some(&format!("{bucket}.{host}")))
            .context("s3.endpoint: bucket name does not make a valid host name")?;
        let bucket_url = url.as_str().trim_end_matches('/').to_owned();
        Ok(Endpoint {
            builder_url: Some(bucket_url.clone()),
            virtual_hosted: true,
            allow_http,
            bucket_url,
            display: base,
        })
    }
}

pub(super) fn client_options(allow_http: bool, env: Env<'_>) -> ClientOptions {
    let mut options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(REQUEST_TIMEOUT);
    // AWS_CA_BUNDLE is the AWS SDKs' way to trust an extra CA (a proxy, a private endpoint).
    // Honour it as roots *added* to the system's, and never fail on it: these machines set it to
    // the system bundle, and a broken bundle should not stop a client that may not need it.
    if let Some(path) = env("AWS_CA_BUNDLE") {
        let certs = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()));
        match certs {
            Ok(certs) => {
                for c in certs {
                    options = options.with_root_certificate(c);
                }
            }
            Err(e) => tracing::warn!("ignoring AWS_CA_BUNDLE={path}: {e}"),
        }
    }
    options
}
