//! The one place the registry client touches the network: every request goes out here, redirects
//! are followed here (by hand, not by reqwest), and every response body read whole is read here,
//! under a cap.
//!
//! Redirects: the registry usually sends blobs to a CDN or object store. The first hop goes to
//! the registry with its credential; every later hop goes out with the caller's plain headers
//! (`Accept`, `Range`) and nothing else: no `Authorization`, no `Referer`, no cookie. A storage
//! host that answers 401 or 403 is an error naming it — its challenge is never adopted, since
//! answering it would mean handing it the registry's credentials or carrying its token back.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

/// `host:port` of a URL, as error messages name a peer.
pub fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// Why a request (with its redirects) failed.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// The connection or the protocol failed; `host` is the peer it happened with.
    #[error("{host}: {source}")]
    Http {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{host}, reached through a redirect from {from}, answered {status}: it asked for credentials, and registry credentials go to the registry only")]
    RedirectWantsCredentials {
        host: String,
        from: String,
        status: u16,
    },
    #[error("{from} redirected more than {max} times")]
    TooManyRedirects { from: String, max: u32 },
    #[error("{from} redirected to {location:?}, which is not an http(s) URL")]
    BadLocation { from: String, location: String },
}

impl HopError {
    /// Whether trying again may help (the connection failed, not the peer's answer).
    pub fn is_transient(&self) -> bool {
        match self {
            HopError::Http { source: e, .. } => {
                e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
            }
            _ => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, HopError::Http { source, .. } if source.is_timeout())
    }
}

/// A response body over its cap. Not worth retrying: the peer would send it again.
#[derive(Debug, thiserror::Error)]
#[error("{what} from {host} is larger than {cap} bytes: refusing it")]
pub struct TooLarge {
    pub what: String,
    pub host: String,
    pub cap: usize,
}

/// The HTTP client with the limits the registry client runs under.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
    /// Redirect hops followed per request.
    pub max_redirects: u32,
}

impl Transport {
    /// `connect_timeout` bounds each TCP/TLS connect, `read_timeout` each silence while reading;
    /// the total time of a request is given per request ([`Transport::send`]).
    pub fn new(
        tls_verify: bool,
        connect_timeout: Duration,
        read_timeout: Duration,
        max_redirects: u32,
    ) -> anyhow::Result<Transport> {
        use anyhow::Context as _;
        let http = reqwest::Client::builder()
            // Redirects are followed in `send`, where credentials can be kept to the first hop.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            .user_agent(concat!("static-registry/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!tls_verify)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Transport {
            http,
            max_redirects,
        })
    }

    /// Sends `method url` with `headers`, `credential` (an `Authorization` value) on the first
    /// hop only, and follows redirects of GET and HEAD requests (other methods get the 3xx back:
    /// their body may hold a secret). `timeout` bounds the whole exchange, redirects and the
    /// reading of the final body included. A 401 or 403 after a redirect is an error naming the
    /// host that sent it; any other final response is returned, whatever its status.
    pub async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        credential: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<Response, HopError> {
        let deadline = Instant::now() + timeout;
        let first = url;
        let mut url = url.clone();
        let follow = *method == Method::GET || *method == Method::HEAD;
        for hop in 0..=self.max_redirects {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(deadline.saturating_duration_since(Instant::now()));
            if hop == 0 {
                if let Some(c) = credential {
                    req = req.header(AUTHORIZATION, c.clone());
                }
            }
            let resp = req.send().await.map_err(|source| HopError::Http {
                host: host_port(&url),
                source,
            })?;
            let status = resp.status();
            if hop > 0 && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                return Err(HopError::RedirectWantsCredentials {
                    host: host_port(&url),
                    from: host_port(first),
                    status: status.as_u16(),
                });
            }
            if !follow || !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(LOCATION) else {
                return Ok(resp);
            };
            let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
            let next = match url.join(&location) {
                Ok(n) if matches!(n.scheme(), "http" | "https") => n,
                _ => {
                    return Err(HopError::BadLocation {
                        from: host_port(&url),
                        location,
                    })
                }
            };
            tracing::debug!(
                "{method} {} -> {status}, redirected to {}",
                url.path(),
                host_port(&next)
            );
            url = next;
        }
        Err(HopError::TooManyRedirects {
            from: host_port(&url),
            max: self.max_redirects,
        })
    }

    /// POSTs a form (a token exchange: the body holds a secret, so a redirect is not followed).
    pub async fn post_form(
        &self,
        url: &Url,
        form: String,
        timeout: Duration,
    ) -> Result<Response, HopError> {
        self.http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| HopError::Http {
                host: host_port(url),
                source,
            })
    }
}

/// Reads a whole response body, refusing more than `cap` bytes (checked as it streams, so an
/// endless body costs at most `cap` of memory). `what` names the body in errors.
pub async fn read_capped(mut resp: Response, cap: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let host = host_port(resp.url());
    let too_large = || TooLarge {
        what: what.to_owned(),
        host: host.clone(),
        cap,
    };
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large().into());
    }
    let mut out = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|source| HopError::Http {
            host: host.clone(),
            source,
        })?;
        let Some(chunk) = chunk else { break };
        if out.len() + chunk.len() > cap {
            return Err(too_large().into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
