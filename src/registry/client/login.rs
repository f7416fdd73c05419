//! How the client logs in: the `/v2/` ping learns the registry's challenge, then Basic
//! credentials or a Bearer token (fetched with retries, refreshed when it expires or the registry
//! answers 401 again). Only the registry's own challenge is ever answered.

use super::*;

/// The challenges in every `WWW-Authenticate` header of `resp`.
fn challenges_of(resp: &Response) -> Vec<Challenge> {
    resp.headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

impl RegistryClient {
    /// `GET /v2/`: 200 means no authentication, 401 says how.
    pub(super) async fn ping(&self, retry: bool) -> anyhow::Result<()> {
        let url = self.base.join("v2/")?;
        let attempts = if retry { self.opts.retry.attempts } else { 1 };
        let mut attempt = 0;
        let resp = loop {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .transport
                .send(
                    &Method::GET,
                    &url,
                    &HeaderMap::new(),
                    None,
                    self.opts.request_timeout,
                )
                .await;
            match sent {
                Ok(r) if is_transient_status(r.status()) && attempt + 1 < attempts => {
                    self.pause(attempt, r.headers()).await;
                }
                Ok(r) => break r,
                Err(e) if e.is_transient() && attempt + 1 < attempts => {
                    tracing::debug!("GET {url}: {e}; retrying");
                    self.pause(attempt, &HeaderMap::new()).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot reach registry {} at {url}", self.registry)))
                }
            }
            attempt += 1;
        };
        let status = resp.status();
        tracing::debug!("GET {url} -> {status}");
        let mut auth = self.auth.lock().await;
        *auth = match status.as_u16() {
            200..=299 => Auth::None,
            401 => {
                let challenges = challenges_of(&resp);
                if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
                    Auth::Bearer {
                        challenge: c.clone(),
                        token: None,
                    }
                } else if challenges.iter().any(|c| c.scheme == "basic") {
                    Auth::Basic
                } else {
                    bail!(
                        "registry {} answered 401 to GET /v2/ without a Bearer or Basic challenge",
                        self.registry
                    );
                }
            }
            s => bail!(
                "registry {} answered {s} to GET {url}: is it a container registry?",
                self.registry
            ),
        };
        Ok(())
    }

    /// Authenticates now: a token for pulling this repository, or a check of Basic credentials.
    pub(super) async fn authenticate(&self) -> anyhow::Result<()> {
        let basic = matches!(*self.auth.lock().await, Auth::Basic);
        if basic {
            if matches!(self.creds.credentials, Credentials::Anonymous) {
                return Err(self.required(401).into());
            }
            let url = self.base.join("v2/")?;
            let resp = self.send(Method::GET, url, HeaderMap::new()).await?;
            if !resp.status().is_success() {
                bail!(
                    "registry {} answered {} to GET /v2/",
                    self.registry,
                    resp.status()
                );
            }
            return Ok(());
        }
        self.auth_header().await.map(|_| ())
    }

    pub(super) fn scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    pub(super) fn refused(&self, status: u16) -> AuthError {
        AuthError::Refused {
            registry: self.registry.clone(),
            who: self.creds.who(),
            status,
            hint: self.creds.hint(),
        }
    }

    pub(super) fn required(&self, status: u16) -> AuthError {
        AuthError::Required {
            registry: self.registry.clone(),
            repository: self.repository.to_string(),
            status,
        }
    }

    /// The `Authorization` value for the next request, fetching a token when there is none or
    /// it is about to expire.
    pub(super) async fn auth_header(&self) -> anyhow::Result<Option<HeaderValue>> {
        let mut auth = self.auth.lock().await;
        let value = match &mut *auth {
            Auth::None => return Ok(None),
            Auth::Basic => match &self.creds.credentials {
                Credentials::Basic { username, password } => basic_value(username, password),
                _ => return Ok(None),
            },
            Auth::Bearer { challenge, token } => {
                if !token.as_ref().is_some_and(Token::fresh) {
                    let t = self.token_with_retries(challenge).await?;
                    *token = Some(t);
                }
                let t = token.as_ref().expect("just set");
                sensitive_value(&format!("Bearer {}", t.value.expose()))
            }
        };
        value
            .map(Some)
            .with_context(|| format!("registry {}", self.registry))
    }

    pub(super) async fn token_with_retries(&self, challenge: &Challenge) -> anyhow::Result<Token> {
        let mut attempt = 0;
        loop {
            self.counters.tokens.fetch_add(1, Ordering::Relaxed);
            let req = TokenRequest {
                challenge,
                scope: &self.scope(),
                creds: &self.creds,
                registry: &self.registry,
                registry_url: &self.base,
                repository: self.repository.as_str(),
                timeout: self.opts.request_timeout,
                max_body: self.opts.max_token_response,
            };
            match fetch_token(&self.transport, &req).await {
                Ok(t) => return Ok(t),
                // Only a failed connection or a busy token service is worth asking again.
                Err(e)
                    if attempt + 1 < self.opts.retry.attempts
                        && (e
                            .downcast_ref::<HopError>()
                            .is_some_and(HopError::is_transient)
                            || e.downcast_ref::<TokenStatus>().is_some_and(|s| {
                                StatusCode::from_u16(s.status).is_ok_and(is_transient_status)
                            })) =>
                {
                    tracing::debug!("token request: {e:#}; retrying");
                    self.pause(attempt, &HeaderMap::new()).await;
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    /// Forgets the token after a 401 (it expired or lacks a scope), adopting the challenge the
    /// 401 carried.
    pub(super) async fn reauthenticate(
        &self,
        resp: &Response,
        sent: Option<&HeaderValue>,
    ) -> anyhow::Result<bool> {
        let mut auth = self.auth.lock().await;
        match &mut *auth {
            Auth::Bearer { challenge, token } => {
                // Requests running concurrently all get a 401 for the same expired token: the
                // first one refreshes it, the others just retry with the new one.
                let current = token
                    .as_ref()
                    .map(|t| format!("Bearer {}", t.value.expose()));
                if current.is_some()
                    && current.as_deref().map(str::as_bytes) != sent.map(|v| v.as_bytes())
                {
                    return Ok(true);
                }
                if let Some(c) = challenges_of(resp)
                    .into_iter()
                    .find(|c| c.scheme == "bearer")
                {
                    *challenge = c;
                }
                *token = None;
                Ok(true)
            }
            Auth::None | Auth::Basic => {
                // `/v2/` was open but this repository is not: adopt its challenge.
                let challenges = challenges_of(resp);
                if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
                    *auth = Auth::Bearer {
                        challenge: c.clone(),
                        token: None,
                    };
                    return Ok(true);
                }
                let basic_now = matches!(*auth, Auth::Basic);
                if !basic_now
                    && challenges.iter().any(|c| c.scheme == "basic")
                    && !matches!(self.creds.credentials, Credentials::Anonymous)
                {
                    *auth = Auth::Basic;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }
}
