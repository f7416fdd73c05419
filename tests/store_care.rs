//! Store care, proven with the real binary (issue #9):
//!
//! - **crash safety**: `publish` killed with SIGKILL at random points, on a local store and on S3
//!   (s3s-fs), then `verify` must find no reference to missing or partial content; re-running the
//!   publish completes it and leaves a store that verifies with no warning at all;
//! - **races**: publishers racing on one repository on a local store keep every tag (the S3 race
//!   is `racing_publishers_keep_every_tag` in tests/s3.rs);
//! - **prune / untag / delete-repository**: what goes, what stays, `--dry-run`, and a pull of every
//!   remaining tag through `serve` with skopeo afterwards; prune racing publishes;
//! - **export**: `docker-archive:` and `oci:` exports read back by skopeo and loaded by podman,
//!   checked against the store's digests.
//!
//! The crash trials use a seeded RNG; the seed is printed, and `STORE_CARE_SEED=N` replays it.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};

use common::clients::{Podman, Skopeo};
use common::s3::{ConfigExtra, S3World};
use common::{bin, describe_output, files_under, hex_of, new_store, sha256, Server};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// A synthetic OCI layout with uncompressed layers (so publish has real work: compressing,
// staging, uploading)
// ---------------------------------------------------------------------------------------------

/// An uncompressed layer in the layout.
#[derive(Clone)]
struct Layer {
    digest: String,
    size: usize,
}

/// An OCI image layout directory the tests add images to.
struct Layout {
    dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    fn put(&self, bytes: &[u8]) -> String {
        let d = sha256(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(hex_of(&d)), bytes).unwrap();
        d
    }

    /// A tar holding one file of `size` random bytes.
    fn layer(&self, rng: &mut StdRng, size: usize, name: &str) -> Layer {
        let mut data = vec![0u8; size];
        rng.fill_bytes(&mut data);
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, format!("data/{name}.bin"), data.as_slice())
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        Layer {
            digest: self.put(&bytes),
            size: bytes.len(),
        }
    }

    /// Adds an image made of `layers` under `ref_name`; returns its config digest.
    fn image(&mut self, layers: &[Layer], ref_name: &str) -> String {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"ref": ref_name}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_digest = self.put(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": l.digest,
                "size": l.size,
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let digest = self.put(&manifest);
        self.refs
            .retain(|r| r["annotations"][REF_NAME].as_str() != Some(ref_name));
        self.refs.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": manifest.len(),
            "annotations": {REF_NAME: ref_name},
        }));
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        config_digest
    }

    fn source(&self, ref_name: &str) -> String {
        format!("oci:{}:{ref_name}", self.dir.display())
    }
}

// ---------------------------------------------------------------------------------------------
// The binary against a local store or an S3 bucket, and the store's files on disk
// ---------------------------------------------------------------------------------------------

/// Where the store lives. Both kinds keep objects as plain files on disk (s3s-fs does), which is
/// how the tests look at the state a killed publish left.
enum Kind {
    Local(tempfile::TempDir),
    S3 { world: S3World, config: PathBuf },
}

impl Kind {
    fn local() -> Kind {
        Kind::Local(new_store())
    }

    /// s3s-fs with multipart uploads from 5 MiB, so some trials die mid-multipart.
    fn s3() -> Kind {
        let world = S3World::start();
        let config = world.config(
            "care",
            &world.s3.endpoint(),
            &ConfigExtra {
                s3: "multipart_threshold = 5242880\npart_size = 5242880\nconcurrency = 2",
                tail: "",
            },
        );
        Kind::S3 { world, config }
    }

    fn label(&self) -> &'static str {
        match self {
            Kind::Local(_) => "local",
            Kind::S3 { .. } => "s3",
        }
    }

    /// `static-registry SUB` aimed at this store, quiet logs unless `log` says otherwise.
    fn cmd(&self, sub: &str, log: &str) -> Command {
        let mut cmd = match self {
            Kind::Local(dir) => {
                let mut c = Command::new(bin());
                c.arg(sub)
                    .arg("--store")
                    .arg(dir.path())
                    .env_remove("STATIC_REGISTRY_CONFIG")
                    .env_remove("STATIC_REGISTRY_STORE");
                c
            }
            Kind::S3 { world, config } => {
                let mut c = world.command(config);
                c.arg(sub);
                c
            }
        };
        cmd.env("RUST_LOG", log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    fn publish_cmd(&self, source: &str, tags: &[String]) -> Command {
        let mut cmd = self.cmd("publish", "warn");
        cmd.arg(source).arg("--quiet");
        for t in tags {
            cmd.arg("--tag").arg(t);
        }
        cmd
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
        if let Kind::S3 { world, .. } = self {
            world.keep(what, &out);
        }
        out
    }

    fn ok(&self, what: &str, cmd: &mut Command) -> Output {
        let out = self.run(what, cmd);
        assert!(out.status.success(), "{}", describe_output(what, &out));
        out
    }

    fn publish(&self, source: &str, tags: &[String]) -> Output {
        self.ok(
            &format!("publish {source} {tags:?}"),
            &mut self.publish_cmd(source, tags),
        )
    }

    fn verify(&self) -> Output {
        self.run("verify", &mut self.cmd("verify", "warn"))
    }

    /// The directory holding the layout's objects as files.
    fn root(&self) -> PathBuf {
        match self {
            Kind::Local(dir) => dir.path().to_path_buf(),
            Kind::S3 { world, .. } => world.s3.object_file(""),
        }
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root().join(key)).ok()
    }

    fn json(&self, key: &str) -> Option<Value> {
        self.read(key)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `REPO:TAG -> digest` lines of a publish summary.
fn summary_tags(out: &Output) -> BTreeMap<String, String> {
    stdout(out)
        .lines()
        .filter_map(|l| {
            let (t, rest) = l.split_once(" -> ")?;
            Some((t.to_owned(), rest.split_whitespace().next()?.to_owned()))
        })
        .collect()
}

/// Asserts `verify` finds nothing at all: no error, no warning.
fn assert_clean(kind: &Kind, what: &str) {
    let out = kind.verify();
    assert!(
        out.status.success() && stdout(&out).starts_with("OK: checked"),
        "{what}: {}",
        describe_output("verify", &out)
    );
}

/// Blob and manifest keys present under the store root.
fn content_keys(root: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for top in ["blobs", "manifests"] {
        for p in files_under(&root.join(top)) {
            out.insert(format!("{top}/{}", p.display()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Crash safety: SIGKILL at random points
// ---------------------------------------------------------------------------------------------

fn seed() -> u64 {
    std::env::var("STORE_CARE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Phase boundaries of one publish, measured from its start by watching its debug log.
#[derive(Debug, Clone, Copy)]
struct Timing {
    first_commit: Duration,
    total: Duration,
}

/// Runs a publish with debug logs streamed, noting when the first index commit happens.
fn timed_publish(kind: &Kind, source: &str, tags: &[String]) -> Timing {
    let mut cmd = kind.cmd("publish", "static_registry=debug");
    cmd.arg(source).arg("--quiet");
    for t in tags {
        cmd.arg("--tag").arg(t);
    }
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn publish");
    let mut first_commit = None;
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if first_commit.is_none() && line.contains("committed repositories/") {
            first_commit = Some(start.elapsed());
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().unwrap();
    let total = start.elapsed();
    assert!(status.success(), "calibration publish failed:\n{log}");
    Timing {
        first_commit: first_commit.unwrap_or_else(|| panic!("no commit logged:\n{log}")),
        total,
    }
}

/// Where a killed publish was, judged from what it left (`snap`) against what the completed
/// publish references.
fn phase(kind: &Kind, snap: &Snapshot, digest: &str, repos: &[(String, String)]) -> String {
    let manifest: Value = serde_json::from_slice(
        &kind
            .read(&format!("manifests/sha256/{}", hex_of(digest)))
            .unwrap(),
    )
    .unwrap();
    let blobs: Vec<String> = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| format!("blobs/sha256/{}", hex_of(d["digest"].as_str().unwrap())))
        .collect();
    let new: Vec<&String> = blobs.iter().filter(|b| !snap.before.contains(*b)).collect();
    let written = new.iter().filter(|b| snap.after.contains(**b)).count();
    let label = |n: usize, what: &str| format!("{n:02} {what}");
    if written < new.len() {
        return if written == 0 {
            label(1, "loading / compressing (no new blob yet)")
        } else {
            label(2, "blobs (some written)")
        };
    }
    if !snap
        .after
        .contains(&format!("manifests/sha256/{}", hex_of(digest)))
    {
        return label(3, "blobs done, manifest not written");
    }
    for (n, (repo, tag)) in repos.iter().enumerate() {
        let committed = snap
            .indexes
            .get(repo)
            .is_some_and(|idx| idx["tags"].get(tag).is_some());
        if !committed {
            return label(
                4 + 3 * n,
                &format!("before the index commit of repository #{}", n + 1),
            );
        }
        let key = format!("{repo}:{tag}");
        if !snap.copies.contains(&key) || !snap.listed.contains(&key) {
            return label(
                5 + 3 * n,
                &format!("derived files of repository #{}", n + 1),
            );
        }
        if !snap.catalog.contains(repo) {
            return label(
                6 + 3 * n,
                &format!("catalog entry of repository #{}", n + 1),
            );
        }
    }
    label(10, "after the last commit (health canary, exit)")
}

/// What the store held right after a kill.
struct Snapshot {
    before: HashSet<String>,
    after: HashSet<String>,
    indexes: HashMap<String, Value>,
    /// `repo:tag` with a tag copy.
    copies: HashSet<String>,
    /// `repo:tag` listed in `_tags.json`.
    listed: HashSet<String>,
    catalog: HashSet<String>,
}

fn snapshot(kind: &Kind, before: HashSet<String>, repos: &[(String, String)]) -> Snapshot {
    let mut s = Snapshot {
        before,
        after: content_keys(&kind.root()),
        indexes: HashMap::new(),
        copies: HashSet::new(),
        listed: HashSet::new(),
        catalog: HashSet::new(),
    };
    for (repo, tag) in repos {
        if let Some(idx) = kind.json(&format!("repositories/{repo}/_index.json")) {
            s.indexes.insert(repo.clone(), idx);
        }
        if kind
            .read(&format!("repositories/{repo}/_manifests/{tag}"))
            .is_some()
        {
            s.copies.insert(format!("{repo}:{tag}"));
        }
        if let Some(l) = kind.json(&format!("repositories/{repo}/_tags.json")) {
            if l["tags"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t == tag))
            {
                s.listed.insert(format!("{repo}:{tag}"));
            }
        }
    }
    if let Some(c) = kind.json("_catalog.json") {
        s.catalog = c["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
    }
    s
}

/// When a trial kills its publish.
#[derive(Debug, Clone)]
enum Kill {
    /// This many milliseconds after the start.
    After(u64),
    /// This many microseconds after the publish logs the `nth` line containing `anchor`.
    At {
        anchor: &'static str,
        nth: usize,
        delay_us: u64,
    },
}

/// Runs a publish and SIGKILLs it as `plan` says; returns whether it finished first.
fn run_and_kill(kind: &Kind, source: &str, tags: &[String], plan: &Kill) -> bool {
    let mut cmd = kind.publish_cmd(source, tags);
    cmd.stdout(Stdio::null());
    match plan {
        Kill::After(ms) => {
            let mut child = cmd.stderr(Stdio::null()).spawn().expect("spawn publish");
            std::thread::sleep(Duration::from_millis(*ms));
            let finished = child.try_wait().unwrap().is_some();
            if !finished {
                child.kill().expect("SIGKILL publish");
            }
            child.wait().unwrap();
            finished
        }
        Kill::At {
            anchor,
            nth,
            delay_us,
        } => {
            let mut child = cmd
                .env("RUST_LOG", "static_registry=debug")
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn publish");
            let mut seen = 0;
            let mut killed = false;
            for line in BufReader::new(child.stderr.take().unwrap()).lines() {
                let Ok(line) = line else { break };
                if line.contains(anchor) {
                    seen += 1;
                    if seen == *nth {
                        std::thread::sleep(Duration::from_micros(*delay_us));
                        killed = child.kill().is_ok();
                        break;
                    }
                }
            }
            let status = child.wait().unwrap();
            // Exited on its own (before the anchor, or before the kill landed).
            !killed || status.code().is_some()
        }
    }
}

/// The outcome of a series of trials.
struct Trials {
    phases: BTreeMap<String, usize>,
    /// Time spent in the killed runs, in `verify`, and in the completing re-runs.
    killed_time: Duration,
    verify_time: Duration,
    rerun_time: Duration,
    finished_early: usize,
    warned: usize,
    elapsed: Duration,
}

/// `n` publishes killed at random points, each followed by verify, a completing re-run, and a
/// verify that must be spotless.
fn crash_trials(kind: &Kind, n: usize, seed: u64) -> Trials {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let src = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(src.path().join("oci"));
    // Several layers of random data, shared by every trial image; each trial adds its own.
    let base: Vec<Layer> = (0..3)
        .map(|i| layout.layer(&mut rng, 2 * MIB, &format!("base{i}")))
        .collect();
    let with = |layout: &mut Layout, rng: &mut StdRng, name: &str, size: usize| {
        let own = layout.layer(rng, size, name);
        let mut layers = base.clone();
        layers.push(own);
        layout.image(&layers, name);
    };

    // Calibration: a cold publish (every layer compressed and uploaded) and a warm one (the base
    // layers already known from the repository's tags).
    with(&mut layout, &mut rng, "seed", 3 * MIB);
    let cold = timed_publish(kind, &layout.source("seed"), &["crash/app:seed".into()]);
    with(&mut layout, &mut rng, "calib", 3 * MIB);
    let warm = timed_publish(
        kind,
        &layout.source("calib"),
        &["crash/app:calib".into(), "crash/ncalib:v1".into()],
    );
    eprintln!(
        "[{}] calibration: cold publish {:?} (first commit at {:?}), warm publish {:?} (first \
         commit at {:?})",
        kind.label(),
        cold.total,
        cold.first_commit,
        warm.total,
        warm.first_commit
    );
    assert_clean(kind, "after calibration");

    let mut out = Trials {
        phases: BTreeMap::new(),
        killed_time: Duration::ZERO,
        verify_time: Duration::ZERO,
        rerun_time: Duration::ZERO,
        finished_early: 0,
        warned: 0,
        elapsed: Duration::ZERO,
    };
    for i in 0..n {
        // Every fourth trial is cold: one new repository, so nothing is known to reuse and every
        // layer is compressed again. The others publish to crash/app and to one of 8 others
        // (new in the first 8 trials, so the catalog is written too). Few repositories keep
        // `verify` (run twice per trial) fast.
        let cold_trial = i % 4 == 3;
        let name = format!("t{i}");
        // Mostly small, so trials stay quick; one in five above the 5 MiB multipart threshold.
        let size = if rng.random_bool(0.2) {
            rng.random_range(5 * MIB..7 * MIB)
        } else {
            rng.random_range(128 * KIB..2 * MIB)
        };
        with(&mut layout, &mut rng, &name, size);
        let repos: Vec<(String, String)> = if cold_trial {
            vec![(format!("crash/cold{i}"), "v1".into())]
        } else {
            vec![
                ("crash/app".into(), name.clone()),
                (format!("crash/n{}", i % 8), name.clone()),
            ]
        };
        let tags: Vec<String> = repos.iter().map(|(r, t)| format!("{r}:{t}")).collect();
        let t = if cold_trial { cold } else { warm };
        let before = content_keys(&kind.root());
        let plan = if rng.random_bool(0.4) {
            // A delay between 0 and the typical duration of this kind of publish.
            Kill::After(rng.random_range(0..=t.total.as_millis() as u64))
        } else {
            // Anchored on what the publish logs, so the short late phases (index commit, derived
            // files, catalog) get their share: a random event, then a random short delay.
            let (anchor, max_us) = match rng.random_range(0..4) {
                0 => ("wrote blobs/", 40_000),
                1 => ("wrote manifests/", 3_000),
                2 => ("committed repositories/", 3_000),
                _ => ("committed repositories/", 0),
            };
            // The last choice waits for the second commit (the second repository).
            let nth = if max_us == 0 && repos.len() > 1 { 2 } else { 1 };
            Kill::At {
                anchor,
                nth,
                delay_us: rng.random_range(0..=max_us.max(3_000)),
            }
        };
        let t0 = Instant::now();
        let finished = run_and_kill(kind, &layout.source(&name), &tags, &plan);
        out.killed_time += t0.elapsed();
        let delay = format!("{plan:?}");
        let snap = snapshot(kind, before, &repos);

        let t0 = Instant::now();
        let v = kind.verify();
        out.verify_time += t0.elapsed();
        assert!(
            v.status.success(),
            "[{}] trial {i} (seed {seed}, killed {delay}): verify after the kill found \
             references to missing content:\n{}",
            kind.label(),
            describe_output("verify", &v)
        );
        if stdout(&v).contains("warning:") {
            out.warned += 1;
        }
        let t0 = Instant::now();
        let done = kind.publish(&layout.source(&name), &tags);
        out.rerun_time += t0.elapsed();
        let t0 = Instant::now();
        assert_clean(
            kind,
            &format!(
                "[{}] trial {i} (seed {seed}) after the re-run",
                kind.label()
            ),
        );
        out.verify_time += t0.elapsed();
        let digest = summary_tags(&done)[&tags[0]].clone();
        let p = if finished {
            out.finished_early += 1;
            "00 finished before the kill".to_owned()
        } else {
            phase(kind, &snap, &digest, &repos)
        };
        *out.phases.entry(p).or_default() += 1;
    }
    out.elapsed = started.elapsed();
    out
}

fn report(kind: &Kind, seed: u64, n: usize, t: &Trials) {
    eprintln!(
        "[{}] {n} SIGKILL trials in {:?} (seed {seed}; replay with STORE_CARE_SEED={seed}): \
         {} left derived files lagging (verify warnings), {} finished before the kill; \
         time in killed runs {:?}, in verify {:?}, in completing re-runs {:?}",
        kind.label(),
        t.elapsed,
        t.warned,
        t.finished_early,
        t.killed_time,
        t.verify_time,
        t.rerun_time
    );
    for (p, c) in &t.phases {
        eprintln!("[{}]   killed in phase {p}: {c}", kind.label());
    }
}

/// Kills are spread over the publish: some before any content, some among the blobs, some
/// after an index commit (which is where derived files can lag).
fn assert_spread(kind: &Kind, t: &Trials) {
    let number = |p: &str| p[..2].parse::<usize>().unwrap();
    let early: usize = t
        .phases
        .iter()
        .filter(|(p, _)| (1..=3).contains(&number(p)))
        .map(|(_, c)| c)
        .sum();
    let late: usize = t
        .phases
        .iter()
        .filter(|(p, _)| number(p) >= 5)
        .map(|(_, c)| c)
        .sum();
    assert!(
        early > 0 && late > 0,
        "[{}] kills did not spread over the publish: {:?}",
        kind.label(),
        t.phases
    );
}

const TRIALS: usize = 50;

#[test]
fn sigkill_during_publish_never_leaves_dangling_references_local() {
    let seed = seed();
    let kind = Kind::local();
    let t = crash_trials(&kind, TRIALS, seed);
    report(&kind, seed, TRIALS, &t);
    assert_spread(&kind, &t);

    // Killed publishes leave staging files behind; prune removes them (and nothing referenced).
    let staging = files_under(&kind.root().join(".staging")).len();
    let out = kind.ok("prune", kind.cmd("prune", "warn").args(["--grace", "0s"]));
    eprintln!(
        "[local] {staging} staging file(s) left by killed publishes; prune: {}",
        stdout(&out).lines().last().unwrap_or_default()
    );
    assert!(files_under(&kind.root().join(".staging")).is_empty());
    assert_clean(&kind, "after prune");
}

#[test]
fn sigkill_during_publish_never_leaves_dangling_references_s3() {
    let seed = seed() ^ 0x5353;
    let kind = Kind::s3();
    let t = crash_trials(&kind, TRIALS, seed);
    report(&kind, seed, TRIALS, &t);
    assert_spread(&kind, &t);
    let out = kind.ok("prune", kind.cmd("prune", "warn").args(["--grace", "0s"]));
    eprintln!(
        "[s3] prune: {}",
        stdout(&out).lines().last().unwrap_or_default()
    );
    assert_clean(&kind, "after prune");

    // dogestry's pull path straight from the bucket: both exports read back by skopeo.
    let skopeo_dir = tempfile::tempdir().unwrap();
    let archive = skopeo_dir.path().join("app.tar");
    let oci = skopeo_dir.path().join("oci");
    for dest in [
        format!("docker-archive:{}", archive.display()),
        format!("oci:{}", oci.display()),
    ] {
        kind.ok(
            "export",
            kind.cmd("export", "warn").args(["crash/app:seed", &dest]),
        );
    }
    let idx = kind.json("repositories/crash/app/_index.json").unwrap();
    let digest = idx["tags"]["seed"]["digest"].as_str().unwrap().to_owned();
    let copied = skopeo_copy(&format!("oci:{}:seed", oci.display()), false);
    assert_eq!(
        sha256(&std::fs::read(copied.join("manifest.json")).unwrap()),
        digest
    );
    let copied = skopeo_copy(&format!("docker-archive:{}", archive.display()), false);
    let store_manifest: Value = serde_json::from_slice(
        &kind
            .read(&format!("manifests/sha256/{}", hex_of(&digest)))
            .unwrap(),
    )
    .unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(copied.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["config"]["digest"], store_manifest["config"]["digest"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Publishers racing on one repository (local store)
// ---------------------------------------------------------------------------------------------

#[test]
fn racing_publishers_keep_every_tag_local() {
    let kind = Kind::local();
    let mut rng = StdRng::seed_from_u64(7);
    let src = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(src.path().join("oci"));
    let base = layout.layer(&mut rng, 512 * KIB, "base");
    for i in 0..10 {
        let own = layout.layer(&mut rng, 64 * KIB, &format!("own{i}"));
        layout.image(&[base.clone(), own], &format!("img{i}"));
    }
    let mut retries = 0;
    for round in 0..3 {
        // 8 distinct tags, 2 publishers of one more tag (different images), 2 new repositories
        // (racing on the catalog) that also tag the shared repository.
        let mut jobs: Vec<(Vec<String>, String)> = (0..8)
            .map(|i| (vec![format!("race/app:r{round}-t{i}")], format!("img{i}")))
            .collect();
        jobs.push((vec![format!("race/app:r{round}-same")], "img8".into()));
        jobs.push((vec![format!("race/app:r{round}-same")], "img9".into()));
        for (j, img) in [(0, "img1"), (1, "img2")] {
            jobs.push((
                vec![
                    format!("race/other{round}-{j}:1"),
                    format!("race/app:r{round}-other{j}"),
                ],
                img.into(),
            ));
        }
        let outputs: Vec<(Vec<String>, Output)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(tags, img)| {
                    let mut cmd = kind.publish_cmd(&layout.source(img), tags);
                    cmd.env("RUST_LOG", "static_registry=debug");
                    s.spawn(move || (tags.clone(), cmd.output().expect("run publish")))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut published: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (tags, out) in &outputs {
            assert!(out.status.success(), "{}", describe_output(&tags[0], out));
            retries += String::from_utf8_lossy(&out.stderr)
                .matches("changed concurrently")
                .count();
            for (t, d) in summary_tags(out) {
                published.entry(t).or_default().insert(d);
            }
        }
        let index = kind.json("repositories/race/app/_index.json").unwrap();
        let have: BTreeSet<String> = index["tags"].as_object().unwrap().keys().cloned().collect();
        let want: BTreeSet<String> = published
            .keys()
            .filter_map(|t| t.strip_prefix("race/app:"))
            .map(str::to_owned)
            .collect();
        assert!(
            want.is_subset(&have),
            "missing tags: {:?}",
            want.difference(&have)
        );
        for t in &want {
            let d = index["tags"][t]["digest"].as_str().unwrap();
            assert!(
                published[&format!("race/app:{t}")].contains(d),
                "{t} -> {d}"
            );
            let copy = kind
                .read(&format!("repositories/race/app/_manifests/{t}"))
                .unwrap();
            assert_eq!(sha256(&copy), d, "tag copy of {t}");
        }
        let listed: BTreeSet<String> = kind.json("repositories/race/app/_tags.json").unwrap()
            ["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, have, "_tags.json after the last writer");
        let catalog = kind.json("_catalog.json").unwrap();
        for j in 0..2 {
            assert!(
                catalog["repositories"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(format!("race/other{round}-{j}"))),
                "{catalog}"
            );
        }
        assert_clean(&kind, &format!("race round {round}"));
    }
    let out = kind.run("verify --deep", kind.cmd("verify", "warn").arg("--deep"));
    assert!(
        stdout(&out).starts_with("OK: checked"),
        "{}",
        describe_output("verify --deep", &out)
    );
    eprintln!("racing_publishers_keep_every_tag_local: 3 rounds of 12 publishers, {retries} compare-and-swap retries");
}

// ---------------------------------------------------------------------------------------------
// 3. prune, untag, delete-repository
// ---------------------------------------------------------------------------------------------

/// Sets the modification time of every content object (and derived file) to `age` ago, as if the
/// store had been written that long before.
fn age_store(root: &Path, age: Duration, except: &HashSet<String>) {
    let t = SystemTime::now() - age;
    for top in ["blobs", "manifests", "repositories"] {
        for rel in files_under(&root.join(top)) {
            let key = format!("{top}/{}", rel.display());
            if except.contains(&key) {
                continue;
            }
            std::fs::File::options()
                .write(true)
                .open(root.join(&key))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }
}

/// `skopeo copy [--all] SRC dir:DEST` into a fresh directory under the system temp directory
/// (removed at the end of the test process by nothing: each is small, and kept for debugging).
fn skopeo_copy(src: &str, all: bool) -> PathBuf {
    common::require_tool("skopeo");
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let parent = std::env::temp_dir().join(format!("sr-care-copies-{}", std::process::id()));
    std::fs::create_dir_all(&parent).unwrap();
    let dest = parent.join(
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").arg("copy");
    if all {
        cmd.arg("--all");
    }
    let out = cmd
        .arg(src)
        .arg(format!("dir:{}", dest.display()))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "{}",
        describe_output(&format!("skopeo copy {src}"), &out)
    );
    dest
}

/// Every `repo:tag` the store's indexes name, with the digest.
fn all_tags(kind: &Kind) -> Vec<(String, String, String)> {
    let catalog = kind.json("_catalog.json").unwrap();
    let mut out = Vec::new();
    for r in catalog["repositories"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        let idx = kind.json(&format!("repositories/{r}/_index.json")).unwrap();
        for (t, d) in idx["tags"].as_object().unwrap() {
            out.push((
                r.to_owned(),
                t.clone(),
                d["digest"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn prune_keeps_every_live_tag_pullable() {
    common::require_tool("skopeo");
    let kind = Kind::local();
    let root = kind.root();
    common::fixtures::publish_all(&root);
    let mut rng = StdRng::seed_from_u64(11);
    let src = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(src.path().join("oci"));
    let base = layout.layer(&mut rng, 256 * KIB, "base");
    for v in ["v1", "v2"] {
        let own = layout.layer(&mut rng, 128 * KIB, v);
        layout.image(&[base.clone(), own], v);
    }
    let out = kind.publish(
        &layout.source("v1"),
        &["syn/app:1".into(), "syn/gone:1".into()],
    );
    let v1 = summary_tags(&out)["syn/app:1"].clone();
    kind.publish(
        &layout.source("v2"),
        &["syn/app:2".into(), "syn/app:latest".into()],
    );
    let zstd_digest = all_tags(&kind)
        .into_iter()
        .find(|(r, t, _)| r == "fix/docker-legacy" && t == "zstd")
        .unwrap()
        .2;
    assert_clean(&kind, "after publishing");

    // untag: the tag and its copy go; v1 stays referenced by syn/gone.
    let out = kind.ok("untag", kind.cmd("untag", "warn").arg("syn/app:1"));
    assert!(
        stdout(&out).contains("untagged syn/app:1"),
        "{}",
        stdout(&out)
    );
    assert!(kind.read("repositories/syn/app/_manifests/1").is_none());
    let idx = kind.json("repositories/syn/app/_index.json").unwrap();
    assert!(idx["manifests"].get(&v1).is_none(), "{idx}");
    let err = kind.run("untag", kind.cmd("untag", "warn").arg("syn/app:nope"));
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("has no tag nope"));
    // The zstd variant of the legacy fixture: its layers are this tag's alone.
    kind.ok(
        "untag",
        kind.cmd("untag", "warn").arg("fix/docker-legacy:zstd"),
    );
    // delete-repository: index, copies, tag list and catalog entry.
    let out = kind.ok(
        "delete-repository",
        kind.cmd("delete-repository", "warn").arg("syn/gone"),
    );
    assert!(
        stdout(&out).contains("deleted repository syn/gone"),
        "{}",
        stdout(&out)
    );
    assert!(files_under(&root.join("repositories/syn/gone")).is_empty());
    assert!(!kind.json("_catalog.json").unwrap()["repositories"]
        .as_array()
        .unwrap()
        .contains(&json!("syn/gone")));
    assert_clean(&kind, "after untag and delete-repository");

    // A publish in flight: content written, no index yet. It is young, whatever its references.
    let in_flight_blob = layout_blob_copy(&root, b"in flight, not committed yet");
    // Everything else was written two days ago.
    let mut except = HashSet::new();
    except.insert(in_flight_blob.clone());
    age_store(&root, Duration::from_secs(2 * 86400), &except);

    // The default grace (24h) keeps what is younger: here only the in-flight blob.
    let before = files_under(&root);
    let dry = kind.ok(
        "prune --dry-run",
        kind.cmd("prune", "warn").arg("--dry-run"),
    );
    let text = stdout(&dry);
    assert_eq!(files_under(&root), before, "--dry-run changed the store");
    let would: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("would delete "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|k| k.contains('/'))
        .map(str::to_owned)
        .collect();
    assert!(
        would.contains(&format!("manifests/sha256/{}", hex_of(&v1))),
        "{text}"
    );
    assert!(
        would.contains(&format!("manifests/sha256/{}", hex_of(&zstd_digest))),
        "{text}"
    );
    assert!(!would.contains(&in_flight_blob), "{text}");
    let summary = text.lines().last().unwrap();
    assert!(summary.starts_with("dry run: would delete"), "{summary}");
    assert!(summary.contains("freed"), "{summary}");
    // Nothing any index references is listed.
    for (r, t, d) in all_tags(&kind) {
        assert!(
            !would.contains(&format!("manifests/sha256/{}", hex_of(&d))),
            "{r}:{t} would lose its manifest: {text}"
        );
    }

    let out = kind.ok("prune", &mut kind.cmd("prune", "warn"));
    let text = stdout(&out);
    let deleted: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("deleted "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|k| k.contains('/'))
        .map(str::to_owned)
        .collect();
    assert_eq!(deleted, would, "{text}");
    for k in &deleted {
        assert!(!root.join(k).exists(), "{k} still there");
    }
    assert!(
        root.join(&in_flight_blob).exists(),
        "prune deleted content younger than the grace period"
    );
    eprintln!("prune: {}", text.lines().last().unwrap());
    assert_clean(&kind, "after prune");

    // Every remaining tag pulls through serve, byte-exact.
    let server = Server::start(&root, &[]);
    let mut skopeo = Skopeo::new();
    let tags = all_tags(&kind);
    assert!(tags.len() >= 8, "{tags:?}");
    for (r, t, d) in &tags {
        let pulled = skopeo
            .copy(&server.host(), &format!("{r}:{t}"), true, None)
            .unwrap_or_else(|e| panic!("{r}:{t}: {e}"));
        let (got, _) = pulled.manifest().unwrap();
        assert_eq!(&got, d, "{r}:{t}");
        pulled.check_file_names().unwrap();
    }
    eprintln!(
        "prune: all {} remaining tags pulled with skopeo through serve",
        tags.len()
    );
}

/// Writes a blob straight into a local store, as a publish in flight has, and returns its key.
fn layout_blob_copy(root: &Path, bytes: &[u8]) -> String {
    let key = format!("blobs/sha256/{}", hex_of(&sha256(bytes)));
    std::fs::write(root.join(&key), bytes).unwrap();
    key
}

#[test]
fn prune_racing_publishes_breaks_none() {
    let kind = Kind::local();
    let root = kind.root();
    let mut rng = StdRng::seed_from_u64(13);
    let src = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(src.path().join("oci"));
    let base = layout.layer(&mut rng, MIB, "base");
    for i in 0..16 {
        let own = layout.layer(&mut rng, 256 * KIB, &format!("own{i}"));
        layout.image(&[base.clone(), own], &format!("img{i}"));
    }
    // Old history: 8 tags, half of them untagged, all written two days ago.
    for i in 0..8 {
        kind.publish(
            &layout.source(&format!("img{i}")),
            &[format!("old/app:{i}")],
        );
    }
    for i in 0..4 {
        kind.ok(
            "untag",
            kind.cmd("untag", "warn").arg(format!("old/app:{i}")),
        );
    }
    age_store(&root, Duration::from_secs(2 * 86400), &HashSet::new());

    // New images (sharing the base layer) published while prune runs again and again.
    let (prunes, outputs) = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut runs = Vec::new();
            for _ in 0..5 {
                runs.push(
                    kind.cmd("prune", "warn")
                        .args(["--grace", "1h"])
                        .output()
                        .unwrap(),
                );
            }
            runs
        });
        let publishers: Vec<_> = (8..16)
            .map(|i| {
                let mut cmd = kind.publish_cmd(
                    &layout.source(&format!("img{i}")),
                    &[format!("new/app:{i}")],
                );
                s.spawn(move || cmd.output().unwrap())
            })
            .collect();
        (
            pruner.join().unwrap(),
            publishers
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    let mut deleted = 0;
    for p in &prunes {
        assert!(p.status.success(), "{}", describe_output("prune", p));
        deleted += stdout(p)
            .lines()
            .filter(|l| l.starts_with("deleted blobs/") || l.starts_with("deleted manifests/"))
            .count();
    }
    for o in &outputs {
        assert!(o.status.success(), "{}", describe_output("publish", o));
    }
    // The four untagged images' own layers, configs and manifests went; nothing else.
    assert_eq!(deleted, 12, "{}", stdout(&prunes[0]));
    assert_clean(&kind, "after prune raced publishes");
    assert_eq!(all_tags(&kind).len(), 12);
}

// ---------------------------------------------------------------------------------------------
// 4. export, read back by skopeo and loaded by podman
// ---------------------------------------------------------------------------------------------

/// The store's manifest for a digest, parsed.
fn store_manifest(kind: &Kind, digest: &str) -> Value {
    kind.json(&format!("manifests/sha256/{}", hex_of(digest)))
        .unwrap()
}

fn diff_ids(kind: &Kind, manifest: &Value) -> Vec<String> {
    let cfg = kind
        .json(&format!(
            "blobs/sha256/{}",
            hex_of(manifest["config"]["digest"].as_str().unwrap())
        ))
        .unwrap();
    cfg["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// The single-platform manifest an export of `digest` to a docker-archive picks (amd64).
fn image_of(kind: &Kind, digest: &str, arch: &str) -> Value {
    let m = store_manifest(kind, digest);
    match m["manifests"].as_array() {
        None => m,
        Some(children) => {
            let c = children
                .iter()
                .find(|c| c["platform"]["architecture"] == arch)
                .unwrap();
            store_manifest(kind, c["digest"].as_str().unwrap())
        }
    }
}

#[test]
fn export_is_read_by_skopeo_and_loaded_by_podman() {
    common::require_tool("skopeo");
    let kind = Kind::local();
    let root = kind.root();
    common::fixtures::publish_all(&root);
    let mut rng = StdRng::seed_from_u64(17);
    let src = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(src.path().join("oci"));
    let layers: Vec<Layer> = (0..3)
        .map(|i| layout.layer(&mut rng, 300 * KIB, &format!("l{i}")))
        .collect();
    layout.image(&layers, "syn");
    kind.ok(
        "publish zstd",
        kind.publish_cmd(&layout.source("syn"), &["syn/zstd:1".into()])
            .args(["--compression", "zstd"]),
    );
    let out_dir = tempfile::tempdir().unwrap();
    let podman = Podman::new();
    let tags: BTreeMap<String, String> = all_tags(&kind)
        .into_iter()
        .map(|(r, t, d)| (format!("{r}:{t}"), d))
        .collect();

    for (n, (reference, digest)) in tags.iter().enumerate() {
        // docker-archive: skopeo reads it; the config is the store's, the layers decompress to
        // its diff_ids.
        let file = out_dir.path().join(format!("{n}.tar"));
        let dest = format!("docker-archive:{}", file.display());
        kind.ok(
            &format!("export {reference}"),
            kind.cmd("export", "warn").args([reference.as_str(), &dest]),
        );
        let image = image_of(&kind, digest, "amd64");
        let want_diff_ids = diff_ids(&kind, &image);
        let members = common::fixtures::tar_members(&file);
        let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"], json!([reference]), "{reference}");
        let config_name = manifest[0]["Config"].as_str().unwrap();
        assert_eq!(
            sha256(&members[config_name]),
            image["config"]["digest"].as_str().unwrap(),
            "{reference}"
        );
        let copied = skopeo_copy(&dest, false);
        let m: Value =
            serde_json::from_slice(&std::fs::read(copied.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(
            m["config"]["digest"], image["config"]["digest"],
            "{reference}"
        );
        let got: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect();
        let stored: Vec<String> = image["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect();
        // skopeo names docker-archive layers by diff_id (decompressing them) or keeps the
        // stored blob; either way each is exactly the store's content.
        assert!(
            got == want_diff_ids || got == stored,
            "{reference}: layers {got:?}, store has {stored:?} (diff_ids {want_diff_ids:?})"
        );
        common::clients::PulledDir {
            path: copied.clone(),
        }
        .check_file_names()
        .unwrap();

        // podman loads it: the image ID is the config digest, the layers its diff_ids.
        let mut load = podman.cmd();
        load.args(["load", "-i"]).arg(&file);
        let out = load.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            describe_output("podman load", &out)
        );
        let id = hex_of(image["config"]["digest"].as_str().unwrap()).to_owned();
        let inspected = podman.inspect(&id).unwrap();
        assert_eq!(
            inspected["RootFS"]["Layers"],
            json!(want_diff_ids),
            "{reference}"
        );

        // oci: byte-for-byte, the whole index for a multi-platform tag.
        let dir = out_dir.path().join(format!("oci-{n}"));
        let dest = format!("oci:{}", dir.display());
        kind.ok(
            &format!("export {reference} oci"),
            kind.cmd("export", "warn").args([reference.as_str(), &dest]),
        );
        let tag = reference.rsplit_once(':').unwrap().1;
        let copied = skopeo_copy(&format!("oci:{}:{tag}", dir.display()), true);
        let top = std::fs::read(copied.join("manifest.json")).unwrap();
        let stored = store_manifest(&kind, digest);
        if stored["mediaType"]
            .as_str()
            .unwrap_or_default()
            .starts_with("application/vnd.docker.")
        {
            // Converted to OCI media types, as skopeo does; config and layers unchanged.
            let got: Value = serde_json::from_slice(&top).unwrap();
            assert_eq!(got["mediaType"], OCI_MANIFEST, "{reference}");
            assert_eq!(
                got["config"]["digest"], stored["config"]["digest"],
                "{reference}"
            );
            let digests = |m: &Value| -> Vec<Value> {
                m["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["digest"].clone())
                    .collect()
            };
            assert_eq!(digests(&got), digests(&stored), "{reference}");
        } else {
            assert_eq!(
                sha256(&top),
                *digest,
                "{reference}: oci export keeps the manifest bytes"
            );
        }
        let pulled = common::clients::PulledDir { path: copied };
        pulled.check_file_names().unwrap();
        for l in image["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap();
            assert_eq!(
                pulled.get(d).unwrap(),
                kind.read(&format!("blobs/sha256/{}", hex_of(d))).unwrap(),
                "{reference}: layer {d}"
            );
        }
    }

    // A multi-platform tag: --platform picks the image; an absent platform is a clear error.
    let multi = &tags["fix/multi:latest"];
    let arm = image_of(&kind, multi, "arm64");
    let file = out_dir.path().join("arm.tar");
    kind.ok(
        "export arm64",
        kind.cmd("export", "warn").args([
            "fix/multi:latest",
            &format!("docker-archive:{}:my/arm:x", file.display()),
            "--platform",
            "linux/arm64",
        ]),
    );
    let members = common::fixtures::tar_members(&file);
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["my/arm:x"]));
    assert_eq!(
        sha256(&members[manifest[0]["Config"].as_str().unwrap()]),
        arm["config"]["digest"].as_str().unwrap()
    );
    let err = kind.run(
        "export s390x",
        kind.cmd("export", "warn").args([
            "fix/multi:latest",
            &format!("docker-archive:{}", out_dir.path().join("x.tar").display()),
            "--platform",
            "linux/s390x",
        ]),
    );
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && msg.contains("available: linux/"),
        "{msg}"
    );
    // REPO@DIGEST works, and is refused for a digest the repository does not reference.
    let single = &tags["fix/oci-single:1.0"];
    kind.ok(
        "export by digest",
        kind.cmd("export", "warn").args([
            &format!("fix/oci-single@{single}"),
            &format!("oci:{}:pinned", out_dir.path().join("by-digest").display()),
        ]),
    );
    let copied = skopeo_copy(
        &format!("oci:{}:pinned", out_dir.path().join("by-digest").display()),
        false,
    );
    assert_eq!(
        sha256(&std::fs::read(copied.join("manifest.json")).unwrap()),
        *single
    );
    let err = kind.run(
        "export foreign digest",
        kind.cmd("export", "warn").args([
            &format!("syn/zstd@{single}"),
            &format!("oci:{}", out_dir.path().join("nope").display()),
        ]),
    );
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("does not reference"));
    eprintln!(
        "export: {} tags exported both ways, read by skopeo, loaded by podman",
        tags.len()
    );
}
