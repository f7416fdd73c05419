//! The retention decision, table by table: mixtures of rules, newest-N with ties, patterns, age,
//! in use (named, or through a child: the caller folds that into `in_use`), pins, immutable tags.

use std::collections::BTreeMap;

use super::*;
use crate::immutable::ImmutableRule;

const DAY: i64 = 86400;
const NOW: i64 = 1_000 * DAY;

fn facts(list: &[(&str, Option<i64>, bool)]) -> Vec<TagFacts> {
    list.iter()
        .map(|(t, age_days, in_use)| TagFacts {
            tag: Tag::parse(t).unwrap(),
            digest: Digest::sha256_of(t.as_bytes()),
            published: age_days.map(|a| NOW - a * DAY),
            in_use: *in_use,
        })
        .collect()
}

fn rule(prefix: &str, newest: Option<usize>, keep: &[&str], older: Option<&str>) -> RetentionRule {
    RetentionRule {
        prefix: prefix.into(),
        keep_newest: newest,
        keep: keep.iter().map(|s| s.to_string()).collect(),
        drop_older_than: older.map(str::to_owned),
        pins: Vec::new(),
    }
}

/// The tags dropped, by name.
fn dropped(policy: &Policy, repo: &str, tags: &[TagFacts], in_use_given: bool) -> Vec<String> {
    decide(
        policy,
        &RepoName::parse(repo).unwrap(),
        tags,
        NOW,
        in_use_given,
    )
    .into_iter()
    .filter(|d| d.drop)
    .map(|d| d.facts.tag.to_string())
    .collect()
}

#[test]
fn mixtures_of_rules_by_prefix() {
    let policy = Policy::new(
        &[
            rule("", Some(2), &[], None),
            rule("team/", Some(1), &["v*", "latest"], Some("30d")),
        ],
        Immutable::default(),
    )
    .unwrap();
    let tags = facts(&[
        ("latest", Some(100), false),
        ("v1", Some(90), false),
        ("dev-1", Some(60), false),
        ("dev-2", Some(40), false),
        ("dev-3", Some(20), false),
        ("dev-4", Some(1), false),
    ]);
    // team/: newest 1 (dev-4) kept, dev-3 younger than 30d kept, patterns kept.
    assert_eq!(
        dropped(&policy, "team/app", &tags, false),
        ["dev-1", "dev-2"]
    );
    // The "" rule: the two newest only.
    assert_eq!(
        dropped(&policy, "other/app", &tags, false),
        ["latest", "v1", "dev-1", "dev-2"]
    );
    // Why, in words.
    let d = decide(
        &policy,
        &RepoName::parse("team/app").unwrap(),
        &tags,
        NOW,
        false,
    );
    let why: BTreeMap<String, String> = d
        .iter()
        .map(|d| (d.facts.tag.to_string(), d.why.to_string()))
        .collect();
    assert_eq!(why["dev-1"], "not among the 1 newest, older than 30d");
    assert_eq!(why["dev-3"], "moved within 30d");
    assert_eq!(why["latest"], "matches \"latest\"");
    assert_eq!(why["dev-4"], "among the 1 newest");
}

#[test]
fn no_rule_no_drop_and_longest_prefix_wins() {
    let policy = Policy::new(
        &[
            rule("team/", Some(0), &[], None),
            rule("team/keep/", Some(10), &[], None),
        ],
        Immutable::default(),
    )
    .unwrap();
    let tags = facts(&[("a", Some(5), false), ("b", Some(4), false)]);
    assert!(dropped(&policy, "elsewhere/app", &tags, false).is_empty());
    assert!(dropped(&policy, "team/keep/app", &tags, false).is_empty());
    assert_eq!(dropped(&policy, "team/app", &tags, false), ["a", "b"]);
    let d = decide(
        &policy,
        &RepoName::parse("elsewhere/x").unwrap(),
        &tags,
        NOW,
        false,
    );
    assert!(d.iter().all(|d| d.why == Why::NoRule));
}

#[test]
fn newest_n_keeps_ties_at_the_boundary_and_unknown_times_rank_last() {
    let policy = Policy::new(&[rule("", Some(2), &[], None)], Immutable::default()).unwrap();
    // Three tags published in the same second share second place: all kept.
    let tags = facts(&[
        ("new", Some(1), false),
        ("tie-a", Some(3), false),
        ("tie-b", Some(3), false),
        ("tie-c", Some(3), false),
        ("old", Some(9), false),
        ("unknown", None, false),
    ]);
    assert_eq!(dropped(&policy, "a", &tags, false), ["old", "unknown"]);
    // Unknown ages are older than any age limit.
    let policy = Policy::new(&[rule("", None, &[], Some("7d"))], Immutable::default()).unwrap();
    assert_eq!(
        dropped(&policy, "a", &tags, false),
        ["old", "unknown"],
        "3 days is within 7d"
    );
    // Exactly at the limit stays.
    let at = facts(&[("edge", Some(7), false)]);
    assert!(dropped(&policy, "a", &at, false).is_empty());
}

#[test]
fn in_use_and_immutable_win_over_every_rule() {
    let policy = Policy::new(
        &[rule("", Some(0), &[], Some("1d"))],
        Immutable::new(&[ImmutableRule {
            prefix: "rel/".into(),
            tags: vec!["v*".into()],
        }]),
    )
    .unwrap();
    let tags = facts(&[
        ("deployed", Some(400), true),
        ("v1", Some(400), false),
        ("old", Some(400), false),
    ]);
    assert_eq!(dropped(&policy, "rel/app", &tags, true), ["old"]);
    assert_eq!(dropped(&policy, "dev/app", &tags, true), ["v1", "old"]);
    let d = decide(
        &policy,
        &RepoName::parse("rel/app").unwrap(),
        &tags,
        NOW,
        true,
    );
    assert_eq!(d[0].why, Why::InUse);
    assert_eq!(d[1].why, Why::Immutable);
}

#[test]
fn pins_live_while_their_digest_is_in_use() {
    let mut r = rule("", Some(5), &["pin-*"], None);
    r.pins = vec!["pin-*".into()];
    let policy = Policy::new(&[r], Immutable::default()).unwrap();
    let tags = facts(&[
        ("pin-1", Some(30), true),
        ("pin-2", Some(2), false),
        ("latest", Some(40), false),
    ]);
    // With a list: the unused pin goes even though it is new and matches a keep pattern; pins
    // do not count towards the newest N.
    assert_eq!(dropped(&policy, "a", &tags, true), ["pin-2"]);
    // Without one, nobody knows: every pin stays.
    assert!(dropped(&policy, "a", &tags, false).is_empty());
    let d = decide(&policy, &RepoName::parse("a").unwrap(), &tags, NOW, false);
    assert_eq!(d[1].why, Why::PinUseUnknown);
    // --pin adds to the config's rules.
    let policy = Policy::new(&[rule("", Some(5), &[], None)], Immutable::default())
        .unwrap()
        .with_pins(&["pin-*".into()])
        .unwrap();
    assert_eq!(dropped(&policy, "a", &tags, true), ["pin-2"]);
}

#[test]
fn rules_are_checked() {
    let bad = [
        (
            rule("", None, &["v*"], None),
            "keep_newest or drop_older_than",
        ),
        (rule("", None, &[], Some("1w")), "drop_older_than"),
        (rule("", Some(1), &[""], None), "pattern"),
    ];
    for (r, want) in bad {
        let e = format!("{:#}", Policy::new(&[r], Immutable::default()).unwrap_err());
        assert!(e.contains(want), "{e}");
    }
    let twice = [
        rule("a/", Some(1), &[], None),
        rule("a/", Some(2), &[], None),
    ];
    assert!(Policy::new(&twice, Immutable::default()).is_err());
    // From the config file.
    let cfg: crate::config::Config = toml::from_str(
        "[[retention]]\nprefix = \"team/\"\nkeep_newest = 5\nkeep = [\"v*\", \"latest\"]\ndrop_older_than = \"30d\"\npins = [\"pin-*\"]\n",
    )
    .unwrap();
    let p = Policy::new(&cfg.retention, Immutable::default()).unwrap();
    let r = p.rule_for(&RepoName::parse("team/app").unwrap()).unwrap();
    assert_eq!(
        r.older_than,
        Some(std::time::Duration::from_secs(30 * 86400))
    );
    assert!(toml::from_str::<crate::config::Config>("[[retention]]\nkeep_last = 1\n").is_err());
}
