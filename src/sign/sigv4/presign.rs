//! Pure SigV4 presigning: the URL, its canonical request and string to sign, and the signature,
//! from a day's cached key (see `key_cache`). No state is read or written here.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest as _, Sha256};

use super::key_cache::{DayKey, State, SECS_PER_DAY};
use super::SigV4Signer;
use crate::sign::{encode, Method};

pub(super) type HmacSha256 = Hmac<Sha256>;

/// S3 refuses `X-Amz-Expires` outside 1 s ..= 7 days.
pub(super) const MAX_EXPIRES: u64 = 604_800;
pub(super) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

impl SigV4Signer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sign_with(
        &self,
        state: &State,
        dk: &DayKey,
        method: Method,
        key: &str,
        content_type: &str,
        ttl: u64,
        now: u64,
    ) -> String {
        let amz_date = amz_date(&dk.yyyymmdd, now);
        let amz_date = std::str::from_utf8(&amz_date).expect("digits");
        let expires = ttl.clamp(1, MAX_EXPIRES);

        let token_len = state.token_q.as_ref().map_or(0, |t| t.len() + 22);
        let mut url = String::with_capacity(
            self.origin.len()
                + self.base_path.len()
                + key.len() * 3
                + content_type.len() * 3
                + dk.credential_q.len()
                + token_len
                + 200,
        );
        url.push_str(&self.origin);

        let path_start = url.len();
        url.push_str(&self.base_path);
        encode::push(&mut url, key, encode::PATH);
        let path_end = url.len();

        // Sorted by (encoded) name: uppercase `X-Amz-*` sorts before lowercase `response-*`,
        // and `Security-Token` before `SignedHeaders`.
        url.push('?');
        let query_start = url.len();
        url.push_str("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
        url.push_str(&dk.credential_q);
        url.push_str("&X-Amz-Date=");
        url.push_str(amz_date);
        url.push_str("&X-Amz-Expires=");
        push_u64(&mut url, expires);
        if let Some(token) = &state.token_q {
            url.push_str("&X-Amz-Security-Token=");
            url.push_str(token);
        }
        url.push_str("&X-Amz-SignedHeaders=host");
        if !content_type.is_empty() {
            url.push_str("&response-content-type=");
            encode::push(&mut url, content_type, encode::QUERY_VALUE);
        }
        let query_end = url.len();

        let mut h = Sha256::new();
        h.update(method.as_str());
        h.update("\n");
        h.update(&url[path_start..path_end]);
        h.update("\n");
        h.update(&url[query_start..query_end]);
        h.update(&self.canonical_tail);
        let mut hash_hex = [0u8; 64];
        hex::encode_to_slice(h.finalize(), &mut hash_hex).expect("64 hex digits");

        let mut mac = dk.mac.clone();
        mac.update(ALGORITHM.as_bytes());
        mac.update(b"\n");
        mac.update(amz_date.as_bytes());
        mac.update(b"\n");
        mac.update(dk.scope.as_bytes());
        mac.update(b"\n");
        mac.update(&hash_hex);
        let mut sig_hex = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut sig_hex).expect("64 hex digits");

        url.push_str("&X-Amz-Signature=");
        url.push_str(std::str::from_utf8(&sig_hex).expect("hex"));
        url
    }
}

pub(super) fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("digits"));
}

/// `X-Amz-Date`: `YYYYMMDDTHHMMSSZ`.
pub(super) fn amz_date(yyyymmdd: &[u8; 8], unix: u64) -> [u8; 16] {
    let s = unix % SECS_PER_DAY;
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(yyyymmdd);
    out[8] = b'T';
    put_digits(&mut out[9..11], s / 3600);
    put_digits(&mut out[11..13], s / 60 % 60);
    put_digits(&mut out[13..15], s % 60);
    out[15] = b'Z';
    out
}

/// Writes `n` as exactly `out.len()` decimal digits (zero-padded, high digits dropped).
pub(super) fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

pub(super) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    fn hmac(key: &[u8], data: &str) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data.as_bytes());
        m.finalize().into_bytes().into()
    }
    let k_secret = format!("AWS4{secret}");
    let k_date = hmac(k_secret.as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    hmac(&k_service, "aws4_request")
}
