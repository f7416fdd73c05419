//! Byte counts as users write them in flags and the config file.

use std::fmt;
use std::str::FromStr;

/// A byte count as users write it: `1048576`, `512MiB`, `64GiB`, `1TiB` (also `K`/`M`/`G`/`T`,
/// binary as well).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(digits);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. 512MiB, 64GiB or bytes"))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            u => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {u:?} (use KiB, MiB, GiB or TiB)"
                ))
            }
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// In the largest unit that states it exactly, as it would be written: `64GiB`, `1536MiB`.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if self.0 != 0 && self.0.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!("64GiB".parse(), Ok(ByteSize(64 << 30)));
        assert_eq!("512 MiB".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("1048576".parse(), Ok(ByteSize(1 << 20)));
        assert_eq!("2T".parse(), Ok(ByteSize(2 << 40)));
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
        for bad in ["", "GiB", "1GB", "-1", "99999999999TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        let c: crate::config::Config =
            toml::from_str("[publish]\nmax_archive_bytes = \"1GiB\"\n").unwrap();
        assert_eq!(c.publish.max_archive_bytes, Some(ByteSize(1 << 30)));
        let c: crate::config::Config =
            toml::from_str("[publish]\nmax_archive_bytes = 4096\n").unwrap();
        assert_eq!(c.publish.max_archive_bytes, Some(ByteSize(4096)));
    }
}
