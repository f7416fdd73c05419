//! Mirror mode's copier and client configuration (docs/mirror.md, "Mirror mode").
//!
//! `serve` maps mirror requests to store repositories (`federation::mirror`) and, on a miss,
//! tells the [`populate::Populator`] here, which copies the image from the upstream with the
//! `docker://` publisher in the background: only missing blobs, digests verified, the index
//! committed last. [`lease`] makes N replicas that miss the same image copy it once;
//! [`client_config`] prints what Docker, containerd and podman need to use the endpoint.

pub mod client_config;
pub mod lease;
pub mod populate;
