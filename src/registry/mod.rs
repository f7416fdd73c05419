//! A client for pulling from other registries (the `docker://` source of `publish`).
//!
//! Split by concern: [`reference`] parses what the user names (Docker Hub conventions included),
//! [`credentials`] finds what to log in with (never keeping it), [`auth`] speaks the
//! `WWW-Authenticate` / Bearer token protocol, [`transport`] sends every request (redirects
//! followed by hand, credentials on the first hop only, time limits, capped bodies), and
//! [`client`] speaks the API: retries, resumable blob streams and the referrers API. The publisher turns what it fetches into the
//! static layout (`src/publish/remote.rs`).

pub mod auth;
pub mod blob_reader;
pub mod client;
pub mod credentials;
pub mod reference;
pub mod retry;
#[cfg(test)]
pub mod testing;
pub mod transport;
