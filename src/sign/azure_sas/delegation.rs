//! User delegation keys: what a user-delegation SAS is signed with when `serve` has an Azure AD
//! identity (service principal, workload or managed identity) instead of the account key.
//!
//! The key is asked for with the identity's bearer token (`POST ?restype=service&comp=userdelegationkey`,
//! <https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key>), valid for
//! [`KEY_LIFETIME`], and replaced by a background task well before it expires; a URL never
//! outlives the key it is signed with.

use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde::Deserialize;

/// How long each delegation key is valid (Azure allows up to 7 days).
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Asked for again when less than this is left.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(6 * 3600);
/// The service version the key is requested with.
const API_VERSION: &str = "2022-11-02";
/// Most bytes of the service's answer read (it is a few hundred).
const MAX_ANSWER: usize = 64 * 1024;

/// A user delegation key as the service returned it, with its value decoded.
#[derive(Clone)]
pub struct DelegationKey {
    pub oid: String,
    pub tid: String,
    pub start: String,
    pub expiry: String,
    pub service: String,
    pub version: String,
    pub value: Vec<u8>,
    /// `expiry` in Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for DelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationKey")
            .field("oid", &self.oid)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    signed_oid: String,
    signed_tid: String,
    signed_start: String,
    signed_expiry: String,
    signed_service: String,
    signed_version: String,
    value: String,
}

/// Parses the service's XML answer; every field is checked before it reaches a signature.
pub fn parse(xml: &str) -> anyhow::Result<DelegationKey> {
    let a: Answer = quick_xml::de::from_str(xml).context("not a UserDelegationKey document")?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(a.value.trim())
        .context("the delegation key's value is not base64")?;
    if value.len() < 16 {
        bail!("the delegation key's value is too short");
    }
    let fields = [
        &a.signed_oid,
        &a.signed_tid,
        &a.signed_start,
        &a.signed_expiry,
        &a.signed_service,
        &a.signed_version,
    ];
    // They are copied into URLs and the string-to-sign: short, printable, no separators.
    if fields.iter().any(|f| {
        f.is_empty() || f.len() > 64 || !f.bytes().all(|b| b.is_ascii_graphic() && b != b'&')
    }) {
        bail!("the delegation key's fields are malformed");
    }
    let expires_at = a
        .signed_expiry
        .parse::<jiff::Timestamp>()
        .with_context(|| {
            format!(
                "the delegation key's expiry {:?} is not a time",
                a.signed_expiry
            )
        })?
        .as_second();
    Ok(DelegationKey {
        oid: a.signed_oid,
        tid: a.signed_tid,
        start: a.signed_start,
        expiry: a.signed_expiry,
        service: a.signed_service,
        version: a.signed_version,
        value,
        expires_at: u64::try_from(expires_at).unwrap_or(0),
    })
}

/// The client delegation keys are asked with: it follows no redirect, so the bearer token only
/// ever goes to the configured Blob service, and gives up after 30 s.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Asks the Blob service at `service_url` for a key valid from `now` for [`KEY_LIFETIME`].
pub async fn fetch(
    http: &reqwest::Client,
    service_url: &str,
    bearer: &str,
    now: u64,
) -> anyhow::Result<DelegationKey> {
    let time = |t: u64| super::sas_time(t);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
        // A few minutes back: the service's clock may run behind ours.
        time(now.saturating_sub(300)),
        time(now + KEY_LIFETIME.as_secs())
    );
    let url = format!(
        "{}/?restype=service&comp=userdelegationkey",
        service_url.trim_end_matches('/')
    );
    let r = http
        .post(&url)
        .bearer_auth(bearer)
        .header("x-ms-version", API_VERSION)
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        // reqwest's errors name the URL; it carries no secret, the bearer token is a header.
        .context("cannot ask the Blob service for a user delegation key")?;
    let status = r.status();
    let bytes = read_capped(r).await?;
    if !status.is_success() {
        bail!(
            "the Blob service refused a user delegation key: {status} {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
    }
    parse(std::str::from_utf8(&bytes).context("the delegation key answer is not UTF-8")?)
}

async fn read_capped(mut r: reqwest::Response) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        if out.len() + chunk.len() > MAX_ANSWER {
            bail!("the delegation key answer is larger than {MAX_ANSWER} bytes");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer as documented (Get User Delegation Key, "Sample response").
    const ANSWER: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<UserDelegationKey>\n    <SignedOid>5f1b3d4a-0000-4000-8000-000000000001</SignedOid>\n    <SignedTid>72f988bf-86f1-41af-91ab-2d7cd011db47</SignedTid>\n    <SignedStart>2026-12-06T10:00:00Z</SignedStart>\n    <SignedExpiry>2026-12-07T10:00:00Z</SignedExpiry>\n    <SignedService>b</SignedService>\n    <SignedVersion>2022-11-02</SignedVersion>\n    <Value>c3JEZWxlZ2F0aW9uS2V5VmFsdWUtdGVzdC0wMTIzNDU2Nzg5</Value>\n</UserDelegationKey>";

    #[test]
    fn parses_the_documented_answer_and_refuses_bad_ones() {
        let k = parse(ANSWER).unwrap();
        assert_eq!(k.tid, "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert_eq!(k.service, "b");
        assert_eq!(k.value, b"srDelegationKeyValue-test-0123456789");
        assert_eq!(
            k.expires_at,
            "2026-12-07T10:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second() as u64
        );
        assert!(!format!("{k:?}").contains("srDelegation"));
        for bad in [
            ANSWER.replace("<Value>c3JE", "<Value>!!"),
            ANSWER.replace("<SignedService>b<", "<SignedService>b&sig=x<"),
            ANSWER.replace("2026-12-07T10:00:00Z", "tomorrow"),
            ANSWER
                .replace("<SignedOid>", "<Other>")
                .replace("</SignedOid>", "</Other>"),
            "<Error><Code>AuthorizationFailure</Code></Error>".into(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    /// A loopback server answering every request with `answer`, counting the requests that
    /// carried an `Authorization` header.
    async fn server(
        answer: axum::response::Response<String>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let authorized = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = authorized.clone();
        let (parts, body) = answer.into_parts();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (seen, parts, body) = (seen.clone(), parts.clone(), body.clone());
            async move {
                if req.headers().contains_key("authorization") {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                axum::response::Response::from_parts(parts, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, authorized)
    }

    fn client() -> reqwest::Client {
        http_client().unwrap()
    }

    /// The bearer token goes to the Blob service only: a redirect the service answers with is
    /// not followed (and so never carries the token elsewhere); an oversized answer is refused.
    #[tokio::test]
    async fn the_token_never_follows_a_redirect_and_answers_are_bounded() {
        use std::sync::atomic::Ordering;
        let ok = axum::response::Response::new(ANSWER.to_owned());
        let (elsewhere, elsewhere_saw) = server(ok).await;
        let redirect = axum::response::Response::builder()
            .status(307)
            .header(
                "location",
                format!("{elsewhere}/?restype=service&comp=userdelegationkey"),
            )
            .body(String::new())
            .unwrap();
        let (service, service_saw) = server(redirect).await;
        let err = fetch(&client(), &service, "sr-test-token", 1_796_551_200)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("307"), "{err:#}");
        assert_eq!(service_saw.load(Ordering::SeqCst), 1);
        assert_eq!(
            elsewhere_saw.load(Ordering::SeqCst),
            0,
            "the token followed a redirect"
        );

        let huge = axum::response::Response::new("x".repeat(MAX_ANSWER + 1));
        let (service, _) = server(huge).await;
        let err = fetch(&client(), &service, "sr-test-token", 1_796_551_200)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("larger than"), "{err:#}");

        // The control: the same server without the redirect hands out a key.
        let (direct, _) = server(axum::response::Response::new(ANSWER.to_owned())).await;
        let key = fetch(&client(), &direct, "sr-test-token", 1_796_551_200)
            .await
            .unwrap();
        assert_eq!(key.service, "b");
    }
}
