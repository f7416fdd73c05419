//! Real registry clients, each confined to its own temporary directories: skopeo, podman (vfs
//! storage, private root/runroot/tmpdir) and containerd (a private daemon driven with `ctr`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{describe_output, hex_of, require_tool, sha256};

/// A `registries.conf` with no search registries, mirrors or short-name aliases, so a machine's
/// configuration cannot redirect the tests' pulls.
fn write_registries_conf(dir: &Path) -> PathBuf {
    let path = dir.join("registries.conf");
    std::fs::write(
        &path,
        "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
    )
    .expect("write registries.conf");
    path
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(describe_output(what, &out))
    }
}

// ---------------------------------------------------------------------------------------------
// skopeo
// ---------------------------------------------------------------------------------------------

/// `skopeo copy` from the registry into `dir:` directories.
pub struct Skopeo {
    dir: tempfile::TempDir,
    registries_conf: PathBuf,
    copies: usize,
}

/// An image `skopeo copy` wrote to a `dir:` destination.
pub struct PulledDir {
    pub path: PathBuf,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        require_tool("skopeo");
        let dir = tempfile::Builder::new()
            .prefix("sr-skopeo-")
            .tempdir()
            .expect("skopeo temp dir");
        let registries_conf = write_registries_conf(dir.path());
        Skopeo {
            dir,
            registries_conf,
            copies: 0,
        }
    }

    /// `skopeo [--override-arch ARCH] copy [--all] --src-tls-verify=false
    /// docker://HOST/REFERENCE dir:DEST`. `reference` is `repo:tag` or `repo@digest`.
    pub fn copy(
        &mut self,
        host: &str,
        reference: &str,
        all: bool,
        arch: Option<&str>,
    ) -> Result<PulledDir, String> {
        self.copies += 1;
        let dest = self.dir.path().join(format!("copy-{}", self.copies));
        let mut cmd = Command::new("skopeo");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .arg("--insecure-policy");
        if let Some(a) = arch {
            cmd.args(["--override-arch", a]);
        }
        cmd.arg("copy");
        if all {
            cmd.arg("--all");
        }
        cmd.arg("--src-tls-verify=false")
            .arg(format!("docker://{host}/{reference}"))
            .arg(format!("dir:{}", dest.display()));
        run(
            &mut cmd,
            &format!("skopeo copy docker://{host}/{reference}"),
        )?;
        Ok(PulledDir { path: dest })
    }

    /// `skopeo --insecure-policy copy ARGS... docker://HOST/REFERENCE dir:DEST`, with no TLS
    /// flag of its own: pass `--src-tls-verify=false`, or `--src-cert-dir DIR` (a directory
    /// holding the CA as `ca.crt`), and `--src-creds USER:PASSWORD` as needed.
    pub fn copy_with(
        &mut self,
        host: &str,
        reference: &str,
        args: &[&str],
    ) -> Result<PulledDir, String> {
        self.copies += 1;
        let dest = self.dir.path().join(format!("copy-{}", self.copies));
        let mut cmd = Command::new("skopeo");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .args(["--insecure-policy", "copy"])
            .args(args)
            .arg(format!("docker://{host}/{reference}"))
            .arg(format!("dir:{}", dest.display()));
        run(
            &mut cmd,
            &format!("skopeo copy {args:?} docker://{host}/{reference}"),
        )?;
        Ok(PulledDir { path: dest })
    }

    /// `skopeo inspect --raw`: the exact manifest bytes the registry serves.
    pub fn inspect_raw(&self, host: &str, reference: &str) -> Result<Vec<u8>, String> {
        let mut cmd = Command::new("skopeo");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .args([
                "--insecure-policy",
                "inspect",
                "--raw",
                "--tls-verify=false",
            ])
            .arg(format!("docker://{host}/{reference}"));
        Ok(run(&mut cmd, &format!("skopeo inspect --raw {reference}"))?.stdout)
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Self::new()
    }
}

impl PulledDir {
    /// The top-level manifest (`manifest.json`) and its digest.
    pub fn manifest(&self) -> Result<(String, Vec<u8>), String> {
        let bytes = std::fs::read(self.path.join("manifest.json"))
            .map_err(|e| format!("{}/manifest.json: {e}", self.path.display()))?;
        Ok((sha256(&bytes), bytes))
    }

    /// The layer digests of the top manifest (empty for an index).
    pub fn layer_digests(&self) -> Result<Vec<String>, String> {
        let (_, bytes) = self.manifest()?;
        let m: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(m["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l["digest"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Content by digest: `manifest.json` for the top manifest, `<hex>.manifest.json` for the
    /// instances of an index copied with `--all`, `<hex>` for blobs.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, String> {
        let (top, bytes) = self.manifest()?;
        if top == digest {
            return Ok(bytes);
        }
        let hex = hex_of(digest);
        for name in [hex.to_owned(), format!("{hex}.manifest.json")] {
            if let Ok(b) = std::fs::read(self.path.join(&name)) {
                return Ok(b);
            }
        }
        Err(format!("{} has no {digest}", self.path.display()))
    }

    /// Every content file must hash to the digest its name carries.
    pub fn check_file_names(&self) -> Result<usize, String> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.path).map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "manifest.json" || name == "version" {
                continue;
            }
            let hex = name.strip_suffix(".manifest.json").unwrap_or(&name);
            let bytes = std::fs::read(e.path()).map_err(|e| e.to_string())?;
            let got = sha256(&bytes);
            if got != format!("sha256:{hex}") {
                return Err(format!("{name} hashes to {got}"));
            }
            n += 1;
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------------

/// podman with private vfs storage. The runroot holds sockets and locks, so its path must stay
/// under ~50 characters: it is a `/tmp/pr-XXXXXX` directory.
pub struct Podman {
    dir: tempfile::TempDir,
    runroot: tempfile::TempDir,
    registries_conf: PathBuf,
}

impl Podman {
    /// podman whose `registries.conf` also holds `extra` (e.g. a `[[registry.mirror]]`).
    pub fn with_registries(extra: &str) -> Podman {
        let p = Podman::new();
        let mut conf = std::fs::read_to_string(&p.registries_conf).expect("read registries.conf");
        conf.push_str(extra);
        std::fs::write(&p.registries_conf, conf).expect("write registries.conf");
        p
    }

    pub fn new() -> Podman {
        require_tool("podman");
        let dir = tempfile::Builder::new()
            .prefix("sr-podman-")
            .tempdir()
            .expect("podman temp dir");
        let runroot = tempfile::Builder::new()
            .prefix("pr-")
            .tempdir_in("/tmp")
            .expect("podman runroot");
        let registries_conf = write_registries_conf(dir.path());
        Podman {
            dir,
            runroot,
            registries_conf,
        }
    }

    /// `podman --root … --runroot … --storage-driver vfs …`.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.runroot.path())
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        cmd
    }

    /// `podman pull --tls-verify=false [EXTRA...] HOST/REFERENCE`.
    pub fn pull(&self, image: &str, extra: &[&str]) -> Result<(), String> {
        let mut cmd = self.cmd();
        cmd.args(["pull", "--tls-verify=false"])
            .args(extra)
            .arg(image);
        run(&mut cmd, &format!("podman pull {image}")).map(|_| ())
    }

    /// `podman pull ARGS... IMAGE`, with no TLS flag of its own: pass `--tls-verify=false`, or
    /// `--cert-dir DIR` (a directory holding the CA as `ca.crt`), and `--creds USER:PASSWORD`.
    pub fn pull_with(&self, image: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = self.cmd();
        cmd.arg("pull").args(args).arg(image);
        run(&mut cmd, &format!("podman pull {args:?} {image}")).map(|_| ())
    }

    /// `podman image inspect IMAGE`, parsed.
    pub fn inspect(&self, image: &str) -> Result<Value, String> {
        let mut cmd = self.cmd();
        cmd.args(["image", "inspect", "--format", "json", image]);
        let out = run(&mut cmd, &format!("podman image inspect {image}"))?;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        v.get(0)
            .cloned()
            .ok_or_else(|| "empty inspect output".into())
    }

    /// `podman rmi -a -f`.
    pub fn remove_all(&self) -> Result<(), String> {
        let mut cmd = self.cmd();
        cmd.args(["rmi", "-a", "-f"]);
        run(&mut cmd, "podman rmi -a").map(|_| ())
    }
}

impl Default for Podman {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.remove_all();
    }
}

// ---------------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------------

/// A private containerd (its own root, state, sockets; CRI and the snapshotters that cannot work
/// in a sandbox disabled), killed on drop. Pull with [`Containerd::pull`].
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    sock: PathBuf,
    log_path: PathBuf,
}

impl Containerd {
    pub fn start() -> Containerd {
        require_tool("containerd");
        require_tool("ctr");
        // Unix socket paths are limited to 108 bytes: keep the directory short.
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir_in("/tmp")
            .expect("containerd temp dir");
        let d = dir.path();
        let sock = d.join("c.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{ttrpc}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = sock.display(),
            ttrpc = d.join("t.sock").display(),
            opt = d.join("opt").display(),
        );
        let cfg_path = d.join("config.toml");
        std::fs::write(&cfg_path, config).expect("write containerd config");
        let log_path = d.join("containerd.log");
        let log = std::fs::File::create(&log_path).expect("containerd log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("poll containerd") {
                panic!(
                    "containerd exited early ({status}):\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if sock.exists() {
                let ok = Command::new("ctr")
                    .arg("--address")
                    .arg(&sock)
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "containerd did not answer on {} within 60 s:\n{}",
                    sock.display(),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd {
            child,
            dir,
            sock,
            log_path,
        }
    }

    /// `ctr --address SOCK ARGS...`.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.sock);
        cmd
    }

    /// `ctr images pull --plain-http --snapshotter native [EXTRA...] HOST/REF`. Pulling also
    /// unpacks, which checks every layer against the config's diff_ids.
    pub fn pull(&self, image: &str, extra: &[&str]) -> Result<(), String> {
        let mut cmd = self.ctr();
        cmd.args(["images", "pull", "--plain-http", "--snapshotter", "native"])
            .args(extra)
            .arg(image);
        run(&mut cmd, &format!("ctr images pull {image}")).map(|_| ())
    }

    /// `ctr images pull --snapshotter native ARGS... IMAGE`, with no transport flag of its own:
    /// pass `--plain-http`, or for HTTPS `--hosts-dir DIR` (containerd 1.6 talks plain HTTP to
    /// 127.0.0.1 and localhost otherwise; `DIR/HOST:PORT/hosts.toml` names the `https://` server
    /// and its `ca`), and `--user USER:PASSWORD` for credentials.
    pub fn pull_with(&self, image: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = self.ctr();
        cmd.args(["images", "pull", "--snapshotter", "native"])
            .args(args)
            .arg(image);
        run(&mut cmd, &format!("ctr images pull {args:?} {image}")).map(|_| ())
    }

    /// The digest and media type `ctr images ls` records for `image`.
    pub fn image(&self, image: &str) -> Result<(String, String), String> {
        let mut cmd = self.ctr();
        cmd.args(["images", "ls"]);
        let out = run(&mut cmd, "ctr images ls")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&image))
            .map(|cols| (cols[2].to_owned(), cols[1].to_owned()))
            .ok_or_else(|| format!("ctr images ls has no {image}:\n{text}"))
    }

    /// `ctr content get DIGEST`.
    pub fn content(&self, digest: &str) -> Result<Vec<u8>, String> {
        let mut cmd = self.ctr();
        cmd.args(["content", "get", digest]);
        Ok(run(&mut cmd, &format!("ctr content get {digest}"))?.stdout)
    }

    /// What containerd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- containerd log (tail) ---");
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }
}
