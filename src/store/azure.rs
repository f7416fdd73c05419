//! Azure Blob Storage stores: `azure://ACCOUNT/CONTAINER[/PREFIX]` and the `[azure]` settings.
//!
//! Credentials come from `object_store`'s standard Azure sources, first match wins: an account
//! key (`AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_ACCESS_KEY`), a SAS (`AZURE_STORAGE_SAS_KEY`),
//! a service principal (`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/`AZURE_TENANT_ID`), workload
//! identity (`AZURE_FEDERATED_TOKEN_FILE`), the managed identity endpoint, and the Azure CLI. The
//! SAS signer (`sign::azure_sas`) reads the account key from the same place. Secrets never reach
//! `Debug`, logs or errors.

use anyhow::{bail, Context};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::ClientOptions;
use serde::Deserialize;

use super::bucket::{checked_endpoint, parse_prefix, Bucket, VersionField, REQUEST_TIMEOUT};
use super::cloud::{CloudStore, Uploads};

/// The `[azure]` section: everything about an Azure store except its location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureSettings {
    /// The Blob service URL. Default `https://ACCOUNT.blob.core.windows.net`; for Azurite
    /// `http://127.0.0.1:10000/devstoreaccount1` (path-style, the account in the path).
    pub endpoint: Option<String>,
    /// Allow plain `http` to a non-loopback `endpoint`. Default `false`.
    pub allow_http: bool,
    /// Files at least this large are uploaded in parts (bytes). Default 64 MiB.
    pub multipart_threshold: Option<u64>,
    /// The size of each part (bytes). Default 16 MiB; 5 MiB to 4 GiB.
    pub part_size: Option<u64>,
}

/// `azure://ACCOUNT/CONTAINER[/PREFIX]`, checked at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureLocation {
    pub account: String,
    pub container: String,
    /// No leading or trailing `/`; empty for the container root.
    pub prefix: String,
}

impl AzureLocation {
    pub fn parse(location: &str) -> anyhow::Result<AzureLocation> {
        let rest = location
            .strip_prefix("azure://")
            .context("an Azure store location starts with azure://")?;
        if rest.contains(['?', '#', '@']) {
            bail!("invalid Azure location {location:?}: no query, fragment or user info");
        }
        let mut parts = rest.splitn(3, '/');
        let account = parts.next().unwrap_or_default();
        let container = parts.next().unwrap_or_default();
        // Azure's rules: accounts are 3-24 lowercase letters and digits; containers 3-63
        // lowercase letters, digits and single hyphens, starting with a letter or digit.
        if !(3..=24).contains(&account.len())
            || !account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("invalid Azure storage account {account:?} in {location:?}");
        }
        if !(3..=63).contains(&container.len())
            || !container
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || container.starts_with('-')
            || container.ends_with('-')
            || container.contains("--")
        {
            bail!("invalid Azure container name {container:?} in {location:?}");
        }
        Ok(AzureLocation {
            account: account.to_owned(),
            container: container.to_owned(),
            prefix: parse_prefix(parts.next().unwrap_or_default(), location)?,
        })
    }

    /// The Blob service URL for this account: the setting, or Azure's public one.
    pub fn service_url(&self, settings: &AzureSettings) -> anyhow::Result<(url::Url, bool)> {
        match settings.endpoint.as_deref() {
            Some(raw) => checked_endpoint(raw, "azure", settings.allow_http),
            None => Ok((
                url::Url::parse(&format!("https://{}.blob.core.windows.net", self.account))?,
                false,
            )),
        }
    }
}

/// Opens an Azure container as a store.
pub fn open(location: &str, settings: &AzureSettings) -> anyhow::Result<CloudStore> {
    let loc = AzureLocation::parse(location)?;
    let (service, allow_http) = loc.service_url(settings)?;
    let builder = MicrosoftAzureBuilder::from_env()
        .with_account(&loc.account)
        .with_container_name(&loc.container)
        .with_endpoint(service.as_str().trim_end_matches('/').to_owned())
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(allow_http)
                .with_timeout(REQUEST_TIMEOUT),
        );
    let client = builder
        .build()
        .context("cannot configure the Azure client (credentials: AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY, a service principal, workload or managed identity)")?;
    let mut label = format!("azure://{}/{}", loc.account, loc.container);
    if !loc.prefix.is_empty() {
        label = format!("{label}/{}", loc.prefix);
    }
    let label = format!("{label} ({})", service.as_str().trim_end_matches('/'));
    let uploads =
        Uploads::from_settings("azure", settings.multipart_threshold, settings.part_size)?;
    Ok(CloudStore::new(
        Bucket::new(client, &loc.prefix, "Azure", label, VersionField::ETag),
        uploads,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let l = AzureLocation::parse("azure://acct123/images/reg/prod/").unwrap();
        assert_eq!(
            (l.account.as_str(), l.container.as_str(), l.prefix.as_str()),
            ("acct123", "images", "reg/prod")
        );
        assert_eq!(
            AzureLocation::parse("azure://acct/cont").unwrap().prefix,
            ""
        );
        for bad in [
            "azure://ACCT/cont",
            "azure://ac/cont",
            "azure://acct",
            "azure://acct/c",
            "azure://acct/-cont",
            "azure://acct/co--nt",
            "azure://acct/cont?sig=x",
            "azure://u@acct/cont",
            "azure://acct/cont/a/../b",
            "s3://acct/cont",
        ] {
            assert!(AzureLocation::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        let l = AzureLocation::parse("azure://devstoreaccount1/c0c").unwrap();
        let (u, http) = l.service_url(&AzureSettings::default()).unwrap();
        assert_eq!(
            u.as_str(),
            "https://devstoreaccount1.blob.core.windows.net/"
        );
        assert!(!http);
        let azurite = AzureSettings {
            endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
            ..Default::default()
        };
        assert!(l.service_url(&azurite).unwrap().1);
        let remote = AzureSettings {
            endpoint: Some("http://blob.example.net/x".into()),
            ..Default::default()
        };
        assert!(l.service_url(&remote).is_err());
    }
}
