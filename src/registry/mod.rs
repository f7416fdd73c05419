//! A client for pulling from other registries (the `docker://` source of `publish`).
//!
//! Split by concern: [`reference`] parses what the user names (Docker Hub conventions included),
//! [`credentials`] finds what to log in with (never keeping it), [`auth`] speaks the
//! `WWW-Authenticate` / Bearer token protocol, and [`client`] does the HTTP: retries, redirects,
//! resumable blob streams and the referrers API. The publisher turns what it fetches into the
//! static layout (`src/publish/remote.rs`).

pub mod auth;
pub mod client;
pub mod credentials;
pub mod reference;
#[cfg(test)]
pub mod testing;
