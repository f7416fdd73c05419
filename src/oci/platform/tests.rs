use serde_json::json;

use super::*;

/// (what `--platform` asks for, what the entry says, whether it matches): the rule of the module
/// docs, row by row.
#[test]
fn platform_matching_table() {
    let rows: &[(&str, Value, bool)] = &[
        // arm64: no variant = v8, on either side.
        (
            "linux/arm64",
            json!({"os": "linux", "architecture": "arm64"}),
            true,
        ),
        (
            "linux/arm64",
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
            true,
        ),
        (
            "linux/arm64/v8",
            json!({"os": "linux", "architecture": "arm64"}),
            true,
        ),
        (
            "linux/arm64/v8",
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
            true,
        ),
        (
            "linux/arm64/8",
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
            true,
        ),
        (
            "linux/arm64/v8",
            json!({"os": "linux", "architecture": "arm64", "variant": "8"}),
            true,
        ),
        (
            "linux/arm64/v8",
            json!({"os": "linux", "architecture": "aarch64"}),
            true,
        ),
        (
            "linux/arm64/v8",
            json!({"os": "linux", "architecture": "arm64", "variant": "v9"}),
            false,
        ),
        (
            "linux/arm64",
            json!({"os": "linux", "architecture": "arm64", "variant": "v9"}),
            true,
        ),
        (
            "linux/arm64",
            json!({"os": "linux", "architecture": "arm", "variant": "v8"}),
            false,
        ),
        // arm: no variant = v7; v6, v7, v8 are different images.
        (
            "linux/arm",
            json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
            true,
        ),
        (
            "linux/arm/v7",
            json!({"os": "linux", "architecture": "arm"}),
            true,
        ),
        (
            "linux/arm/v7",
            json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
            true,
        ),
        (
            "linux/arm/v7",
            json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
            false,
        ),
        (
            "linux/arm/v6",
            json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
            false,
        ),
        (
            "linux/arm/v6",
            json!({"os": "linux", "architecture": "arm"}),
            false,
        ),
        (
            "linux/arm/v6",
            json!({"os": "linux", "architecture": "arm", "variant": "6"}),
            true,
        ),
        (
            "linux/arm/v8",
            json!({"os": "linux", "architecture": "arm", "variant": "v8"}),
            true,
        ),
        (
            "linux/arm/v8",
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
            false,
        ),
        (
            "linux/armhf",
            json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
            true,
        ),
        (
            "linux/armhf",
            json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
            false,
        ),
        (
            "linux/armel",
            json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
            true,
        ),
        // amd64: no variant = v1; a request without a variant takes any.
        (
            "linux/amd64",
            json!({"os": "linux", "architecture": "amd64"}),
            true,
        ),
        (
            "linux/amd64",
            json!({"os": "linux", "architecture": "amd64", "variant": "v3"}),
            true,
        ),
        (
            "linux/amd64/v1",
            json!({"os": "linux", "architecture": "amd64"}),
            true,
        ),
        (
            "linux/amd64/v3",
            json!({"os": "linux", "architecture": "amd64"}),
            false,
        ),
        (
            "linux/amd64",
            json!({"os": "linux", "architecture": "x86_64"}),
            true,
        ),
        (
            "linux/amd64",
            json!({"os": "linux", "architecture": "arm64"}),
            false,
        ),
        (
            "linux/386",
            json!({"os": "linux", "architecture": "i386"}),
            true,
        ),
        // Case, os, and the unnamed attestation entries.
        (
            "Linux/AMD64",
            json!({"os": "linux", "architecture": "amd64"}),
            true,
        ),
        (
            "linux/amd64",
            json!({"os": "windows", "architecture": "amd64"}),
            false,
        ),
        (
            "linux/amd64",
            json!({"os": "unknown", "architecture": "unknown"}),
            false,
        ),
        ("linux/amd64", json!({}), false),
        (
            "linux/amd64",
            json!({"os": 1, "architecture": ["amd64"]}),
            false,
        ),
        // os.version: compared only when asked for, by whole components.
        (
            "windows/amd64",
            json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"}),
            true,
        ),
        (
            "windows(10.0.20348)/amd64",
            json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.20348.2113"}),
            true,
        ),
        (
            "windows(10.0.20348)/amd64",
            json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.20348"}),
            true,
        ),
        (
            "windows(10.0.20348)/amd64",
            json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"}),
            false,
        ),
        (
            "windows(10.0.2)/amd64",
            json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.20348"}),
            false,
        ),
        (
            "windows(10.0.20348)/amd64",
            json!({"os": "windows", "architecture": "amd64"}),
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (want, have, expected) in rows {
        let p: Platform = want.parse().unwrap_or_else(|e| panic!("{e}"));
        if p.matches_json(have) != *expected {
            wrong.push(format!("{want} vs {have}: expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn requests_parse_and_print_as_given() {
    for s in [
        "linux/arm64",
        "linux/arm64/v8",
        "linux/arm/v7",
        "windows(10.0.20348)/amd64",
    ] {
        assert_eq!(s.parse::<Platform>().unwrap().to_string(), s);
    }
    let p: Platform = "windows(10.0.20348)/amd64".parse().unwrap();
    assert_eq!(p.os, "windows");
    assert_eq!(p.os_version.as_deref(), Some("10.0.20348"));
    for bad in [
        "linux",
        "linux/",
        "/amd64",
        "linux/amd64/v8/x",
        "linux/amd 64",
        "linux/amd64/",
        "windows(/amd64",
        "windows()/amd64",
        "windows(10)x/amd64",
        "linux\r\n/amd64",
        "",
    ] {
        assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
    }
}

#[test]
fn entries_read_leniently() {
    let p = Platform::of(&json!({
        "os": "windows", "architecture": "amd64", "os.version": "10.0.1", "variant": ""
    }));
    assert_eq!(p.to_string(), "windows(10.0.1)/amd64");
}
