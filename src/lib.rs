//! `static-registry` as a library: the modules behind the binary, exposed so benchmarks and
//! integration tests can drive them directly. The CLI lives in `src/main.rs`.
//!
//! Add new modules here (not in `main.rs`).

pub mod auth;
pub mod aws;
pub mod byte_size;
pub mod check;
pub mod commit;
pub mod config;
pub mod export;
pub mod federation;
pub mod hashing;
pub mod immutable;
pub mod index;
pub mod layout;
pub mod mirror;
pub mod oci;
pub mod pattern;
pub mod prune;
pub mod publish;
pub mod reference;
pub mod registry;
pub mod retain;
pub mod serve;
pub mod settings;
pub mod sign;
pub mod store;
pub mod sync;
pub mod tags;
pub mod ui;
pub mod verify;
pub mod walk;
