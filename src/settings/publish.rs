//! `publish`'s settings: flag > config file (`[publish]`) > [`PUBLISH_DEFAULTS`]. None of them
//! has an environment variable.

use crate::config::Config;
use crate::publish::archive::{ArchiveLimits, ByteSize, DEFAULT_MAX_EXPANDED};

/// The defaults of `publish`.
#[derive(Debug)]
pub struct PublishDefaults {
    /// Blobs uploaded at once.
    pub jobs: usize,
    pub v1: bool,
    /// Bytes; `ArchiveLimits::default` is the same value.
    pub max_archive_bytes: u64,
}

pub const PUBLISH_DEFAULTS: PublishDefaults = PublishDefaults {
    jobs: 4,
    v1: false,
    max_archive_bytes: DEFAULT_MAX_EXPANDED,
};

/// `publish`'s flags that the config file's `[publish]` can also set.
#[derive(Debug, Default, clap::Args)]
pub struct PublishFlags {
    /// Blobs uploaded concurrently, and threads compressing layers (at most the cores)
    /// [default: 4]. The compressed bytes are the same whatever the number.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also write the registry v1 (legacy protocol) files, for Docker <= 17 clients; see
    /// docs/v1.md. Same as `[publish] v1 = true` in the config file.
    #[arg(long)]
    pub v1: bool,
    /// Most a compressed archive source may decompress to (its tar stream; also the most it
    /// can put in the temporary directory), e.g. 512MiB, 64GiB [default: 64GiB; config
    /// `[publish] max_archive_bytes`].
    #[arg(long, value_name = "SIZE")]
    pub max_archive_bytes: Option<ByteSize>,
}

/// Everything from `[publish]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    pub jobs: usize,
    pub v1: bool,
    pub archive: ArchiveLimits,
}

impl PublishSettings {
    pub fn resolve(flags: PublishFlags, file: &Config) -> PublishSettings {
        let (d, f) = (&PUBLISH_DEFAULTS, &file.publish);
        PublishSettings {
            jobs: flags.jobs.or(f.jobs).unwrap_or(d.jobs).max(1),
            // A flag can only switch it on, as `--access-log` does.
            v1: flags.v1 || f.v1.unwrap_or(d.v1),
            archive: ArchiveLimits {
                max_expanded: flags
                    .max_archive_bytes
                    .or(f.max_archive_bytes)
                    .map_or(d.max_archive_bytes, |b| b.0),
            },
        }
    }
}
