//! The SigV4 signer's key cache: the current credentials with the signing key of the latest UTC
//! day seen. A key is derived once per day and credential set (four HMACs); every URL only
//! clones the cached HMAC state. Rotation (`refresh`) swaps credentials and key together.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hmac::KeyInit;

use super::presign::{signing_key, HmacSha256};
use super::{check_credentials, SigV4Config, SigV4Signer};
use crate::aws::Credentials;
use crate::sign::{encode, unix_secs, Method};

pub(super) const SECS_PER_DAY: u64 = 86_400;

/// The credentials and everything derived from them that the hot path needs.
pub(super) struct State {
    pub(super) creds: Arc<Credentials>,
    /// The session token, already encoded as a query value.
    pub(super) token_q: Option<String>,
    pub(super) day: DayKey,
}

/// One UTC day's signing material for one set of credentials.
pub(super) struct DayKey {
    /// Days since the Unix epoch.
    pub(super) day: u64,
    pub(super) yyyymmdd: [u8; 8],
    /// HMAC keyed with kSigning: the key schedule (ipad/opad blocks) is already hashed, so each
    /// URL only clones it.
    pub(super) mac: HmacSha256,
    /// `X-Amz-Credential`, encoded: `AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request`.
    pub(super) credential_q: String,
    /// The credential scope for the string to sign: `20130524/us-east-1/s3/aws4_request`.
    pub(super) scope: String,
}

impl SigV4Signer {
    /// Loads credentials from the source again; a change takes effect for the next URL.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let creds = self
            .source
            .credentials()
            .await
            .context("refreshing credentials for S3 URL signing")?;
        check_credentials(&creds)?;
        if *self.load().creds == *creds {
            return Ok(());
        }
        // Only the access key id is logged: it identifies the credentials and is not secret.
        tracing::info!(access_key_id = %creds.access_key_id, "S3 URL-signing credentials rotated");
        let state = Arc::new(self.new_state(creds, day_of(unix_secs(SystemTime::now()))));
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        Ok(())
    }

    /// Calls [`Self::refresh`] every `every` in the background, until the signer is dropped.
    /// A failure keeps the current credentials (they may still be valid) and is logged.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate, and the constructor has just loaded credentials.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(signer) = weak.upgrade() else { break };
                if let Err(e) = signer.refresh().await {
                    tracing::warn!(error = %format!("{e:#}"), "keeping the current S3 URL-signing credentials");
                }
            }
        })
    }

    /// How many signing keys have been derived so far (tests; worth a metric: ~1 a day).
    pub fn key_derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    pub(super) fn load(&self) -> Arc<State> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn new_state(&self, creds: Arc<Credentials>, day: u64) -> State {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        new_state(&self.cfg, &self.scope_suffix, creds, day)
    }

    pub(super) fn day_key(&self, creds: &Credentials, day: u64) -> DayKey {
        self.derivations.fetch_add(1, Ordering::Relaxed);
        day_key(&self.cfg, &self.scope_suffix, creds, day)
    }

    /// Signs with the cached key of `day`, deriving (and caching, if it is a newer day) another.
    pub(super) fn sign_at(
        &self,
        method: Method,
        key: &str,
        content_type: &str,
        ttl: u64,
        now: u64,
    ) -> String {
        let day = day_of(now);
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if state.day.day == day {
                return self.sign_with(&state, &state.day, method, key, content_type, ttl, now);
            }
        }
        let state = self.load();
        let dk = self.day_key(&state.creds, day);
        let url = self.sign_with(&state, &dk, method, key, content_type, ttl, now);
        // Cache only a newer day, so requests straddling midnight (or a clock step back) can't
        // make the cache flap; and only for the credentials it was derived from.
        if day > state.day.day {
            let mut cell = self.state.write().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(&cell.creds, &state.creds) && day > cell.day.day {
                *cell = Arc::new(State {
                    creds: state.creds.clone(),
                    token_q: state.token_q.clone(),
                    day: dk,
                });
            }
        }
        url
    }
}

pub(super) fn new_state(
    cfg: &SigV4Config,
    scope_suffix: &str,
    creds: Arc<Credentials>,
    day: u64,
) -> State {
    State {
        token_q: creds
            .session_token
            .as_deref()
            // An empty token is no token: signing `X-Amz-Security-Token=` only fails.
            .filter(|t| !t.is_empty())
            .map(|t| {
                let mut q = String::with_capacity(t.len() * 3 / 2);
                encode::push(&mut q, t, encode::QUERY_VALUE);
                q
            }),
        day: day_key(cfg, scope_suffix, &creds, day),
        creds,
    }
}

/// Derives kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
/// "aws4_request") and the day's credential strings. A few µs: once a day.
pub(super) fn day_key(
    cfg: &SigV4Config,
    scope_suffix: &str,
    creds: &Credentials,
    day: u64,
) -> DayKey {
    let yyyymmdd = yyyymmdd(day);
    let date = std::str::from_utf8(&yyyymmdd).expect("digits");
    let k_signing = signing_key(&creds.secret_access_key, date, &cfg.region, &cfg.service);
    let scope = format!("{date}{scope_suffix}");
    let mut credential_q = String::with_capacity(creds.access_key_id.len() + 64);
    encode::push(&mut credential_q, &creds.access_key_id, encode::QUERY_VALUE);
    credential_q.push_str("%2F");
    encode::push(&mut credential_q, &scope, encode::QUERY_VALUE);
    DayKey {
        day,
        yyyymmdd,
        mac: HmacSha256::new_from_slice(&k_signing).expect("HMAC takes any key length"),
        credential_q,
        scope,
    }
}

pub(super) fn day_of(unix: u64) -> u64 {
    unix / SECS_PER_DAY
}

/// `YYYYMMDD` of a day since the epoch (once a day, when the signing key is derived).
pub(super) fn yyyymmdd(day: u64) -> [u8; 8] {
    let at = i64::try_from(day * SECS_PER_DAY).unwrap_or(i64::MAX);
    let at = jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::MAX);
    let s = at.strftime("%Y%m%d").to_string();
    s.as_bytes().try_into().expect("a four-digit year")
}
