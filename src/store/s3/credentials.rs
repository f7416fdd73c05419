//! Credentials for the store: the rotating links of the AWS chain, configured for `object_store`
//! to run, and its provider shared with the SigV4 signer as a [`CredentialSource`].

use std::fmt;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use async_trait::async_trait;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider};

use crate::aws::{CredentialSource, Credentials, Env};

/// The rotating links of the chain, configured on the builder for `object_store` to run, in the
/// SDKs' order: web identity, container endpoint, then EC2 instance metadata.
pub(super) fn ambient_credentials(
    builder: AmazonS3Builder,
    env: Env<'_>,
) -> anyhow::Result<(AmazonS3Builder, &'static str)> {
    let mut b = builder;
    let origin;
    if let (Some(token_file), Some(role)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        b = b
            .with_config(AmazonS3ConfigKey::WebIdentityTokenFile, token_file)
            .with_config(AmazonS3ConfigKey::RoleArn, role);
        if let Some(name) = env("AWS_ROLE_SESSION_NAME") {
            b = b.with_config(AmazonS3ConfigKey::RoleSessionName, name);
        }
        if let Some(sts) = env("AWS_ENDPOINT_URL_STS") {
            b = b.with_config(AmazonS3ConfigKey::StsEndpoint, sts);
        }
        origin = "web identity";
    } else if let Some(uri) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        b = b.with_config(AmazonS3ConfigKey::ContainerCredentialsRelativeUri, uri);
        origin = "container credentials (ECS)";
    } else if let Some(uri) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        let Some(token_file) = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") else {
            bail!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI is set without \
                 AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, which is not supported"
            );
        };
        b = b
            .with_config(AmazonS3ConfigKey::ContainerCredentialsFullUri, uri)
            .with_config(
                AmazonS3ConfigKey::ContainerAuthorizationTokenFile,
                token_file,
            );
        origin = "container credentials (EKS Pod Identity)";
    } else {
        if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            bail!(
                "no AWS credentials found (environment, profile files) and \
                 AWS_EC2_METADATA_DISABLED=true"
            );
        }
        if let Some(endpoint) = env("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
            b = b.with_config(AmazonS3ConfigKey::MetadataEndpoint, endpoint);
        }
        origin = "EC2 instance metadata (IMDSv2)";
    }
    Ok((b, origin))
}

/// `object_store`'s rotating provider as a [`CredentialSource`]: the signer presigns with exactly
/// the identity the store writes with, and the provider's cache decides when to refresh.
pub(super) struct ProviderSource {
    provider: AwsCredentialProvider,
    /// The last credential seen and its conversion, so the signer's hot path does not allocate
    /// three strings per URL while the provider keeps returning the same `Arc`.
    last: Mutex<Option<(Arc<AwsCredential>, Arc<Credentials>)>>,
}

impl ProviderSource {
    pub(super) fn new(provider: AwsCredentialProvider) -> Self {
        ProviderSource {
            provider,
            last: Mutex::new(None),
        }
    }
}

impl fmt::Debug for ProviderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSource(object_store AWS credential provider)")
    }
}

#[async_trait]
impl CredentialSource for ProviderSource {
    async fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
        let current = self
            .provider
            .get_credential()
            .await
            .context("cannot obtain AWS credentials")?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, converted)) = last.as_ref() {
            if Arc::ptr_eq(seen, &current) {
                return Ok(converted.clone());
            }
        }
        let converted = Arc::new(Credentials {
            access_key_id: current.key_id.clone(),
            secret_access_key: current.secret_key.clone(),
            session_token: current.token.clone(),
        });
        *last = Some((current, converted.clone()));
        Ok(converted)
    }
}
