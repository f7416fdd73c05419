//! The one `Platform`: what `--platform` asks for (publish, mirror, export) and what an index
//! entry or an image config says it is, with the one rule that matches them.
//!
//! The rule (documented in README and docs/mirror.md where `--platform` is described) follows
//! containerd's `platforms.Normalize`, which Docker and nerdctl use too:
//! - os and architecture compare case-insensitively, after the usual aliases (`x86_64`/`x86-64`
//!   = `amd64`, `aarch64` = `arm64`, `i386` = `386`, `armhf` = `arm/v7`, `armel` = `arm/v6`);
//! - a missing variant is the architecture's default: `arm64` is `v8`, `arm` is `v7`, `amd64`
//!   is `v1`; variants compare with or without the `v` (`arm64/8` = `arm64/v8`);
//! - a request without a variant takes any variant (`linux/arm64` keeps `linux/arm64/v9`), one
//!   with a variant takes only that variant (no "v7 also runs v6" fallback: a filter says what
//!   it keeps);
//! - `os.version` is compared only when the request names one (`windows(10.0.20348)/amd64`, the
//!   containerd syntax): the entry's must be that version or a longer one with it as prefix
//!   (`10.0.20348` takes `10.0.20348.2113`).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// `os[(os.version)]/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
}

/// Names an input may use: the Go/OCI vocabulary, nothing that could smuggle syntax.
fn name_ok(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid platform {s:?}: expected os[(os.version)]/arch[/variant], e.g. linux/arm64"
            )
        };
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] if name_ok(v) => (*os, *arch, Some((*v).to_owned())),
            _ => return Err(bad()),
        };
        let (os, os_version) = match os.split_once('(') {
            Some((os, rest)) => {
                let v = rest
                    .strip_suffix(')')
                    .filter(|v| name_ok(v))
                    .ok_or_else(bad)?;
                (os, Some(v.to_owned()))
            }
            None => (os, None),
        };
        if !name_ok(os) || !name_ok(arch) {
            return Err(bad());
        }
        Ok(Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant,
            os_version,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.os)?;
        if let Some(v) = &self.os_version {
            write!(f, "({v})")?;
        }
        write!(f, "/{}", self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Architecture and variant after the aliases and the default variants.
fn normalize(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant
        .filter(|v| !v.is_empty())
        .map(str::to_ascii_lowercase);
    let (arch, variant) = match arch.as_str() {
        "x86_64" | "x86-64" => ("amd64".to_owned(), variant),
        "aarch64" => ("arm64".to_owned(), variant),
        "i386" => ("386".to_owned(), variant),
        "armhf" => ("arm".to_owned(), Some("v7".to_owned())),
        "armel" => ("arm".to_owned(), Some("v6".to_owned())),
        _ => (arch, variant),
    };
    let default = match arch.as_str() {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        "amd64" => Some("v1"),
        _ => None,
    };
    let variant = match (variant, default) {
        // `8` is `v8` where variants are versions.
        (Some(v), Some(_)) if v.bytes().all(|b| b.is_ascii_digit()) => Some(format!("v{v}")),
        (Some(v), _) => Some(v),
        (None, d) => d.map(str::to_owned),
    };
    (arch, variant)
}

impl Platform {
    /// What a platform object (an index entry's `platform`) or an image config says; fields
    /// that are missing or not strings read as empty.
    pub fn of(v: &Value) -> Platform {
        let get = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        Platform {
            os: get("os").unwrap_or_default().to_owned(),
            architecture: get("architecture").unwrap_or_default().to_owned(),
            variant: get("variant").map(str::to_owned),
            os_version: get("os.version").map(str::to_owned),
        }
    }

    /// `linux/<this machine's architecture>`, in Go's naming.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
            os_version: None,
        }
    }

    /// Whether `have` (an index entry's or a config's platform) is what this request asks for;
    /// the rule is in the module docs.
    pub fn matches(&self, have: &Platform) -> bool {
        if !self.os.eq_ignore_ascii_case(&have.os) {
            return false;
        }
        // A request's variant counts only if given (or implied by an alias such as armhf).
        let (want_arch, want_variant) = normalize(&self.architecture, self.variant.as_deref());
        let explicit = self.variant.is_some()
            || matches!(
                self.architecture.to_ascii_lowercase().as_str(),
                "armhf" | "armel"
            );
        let (have_arch, have_variant) = normalize(&have.architecture, have.variant.as_deref());
        if want_arch != have_arch || (explicit && want_variant != have_variant) {
            return false;
        }
        match (&self.os_version, &have.os_version) {
            (None, _) => true,
            (Some(want), Some(have)) => {
                have == want
                    || have
                        .strip_prefix(want.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }
            (Some(_), None) => false,
        }
    }

    /// [`Platform::matches`] against a platform object or an image config.
    pub fn matches_json(&self, have: &Value) -> bool {
        self.matches(&Platform::of(have))
    }
}

#[cfg(test)]
mod tests;
