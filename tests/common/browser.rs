//! A real browser for the web page's tests (tests/ui.rs): Debian's headless Chromium, driven over
//! WebDriver by its `chromedriver` (packages `chromium` and `chromium-driver`; scripts/test.sh
//! installs them).
//!
//! Each [`Browser`] has its own chromedriver on a free loopback port and its own fresh profile,
//! started with the flags that keep Chromium off the network (no background requests, no
//! component updates, no sync, no QUIC). chromedriver runs in a process group of its own, so the
//! browser processes it starts are ended with it on drop. Its log is kept and printed when a test
//! fails. Screenshots go to `CARGO_TARGET_TMPDIR/ui-screenshots/` (the path is printed).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::elements::Element;
pub use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::{find_tool, free_port, wait_started, Startup};

/// How long an element may take to appear, and the default deadline of [`poll`].
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Where screenshots (and the logs of failed runs) are kept after the test.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

fn require(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "required tool `{name}` is not installed (not on PATH). The browser tests need \
             Debian's `chromium` and `chromium-driver` packages: run the suite with \
             scripts/test.sh, which installs them."
        )
    })
}

/// The status line of `GET path` on `addr` (chromedriver keeps connections open and writes
/// `Name:value` headers, so only the first line is read).
fn status_line(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line)
}

/// A running `chromedriver --port=PORT` (loopback only); it and the browsers it started are
/// killed on drop.
pub struct Driver {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
    label: String,
    _dir: tempfile::TempDir,
}

impl Driver {
    pub fn start(label: &str) -> Driver {
        let exe = require("chromedriver");
        let dir = tempfile::Builder::new()
            .prefix("sr-chromedriver-")
            .tempdir()
            .expect("chromedriver temp dir");
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let log_path = dir.path().join(format!("chromedriver-{attempt}.log"));
            let mut child = Command::new(&exe)
                .arg(format!("--port={port}"))
                // Only this machine may drive it (the default, said explicitly).
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", log_path.display()))
                .arg("--readable-timestamp")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // A group of its own: on drop, it and every browser process it started are ended.
                .process_group(0)
                .spawn()
                .expect("spawn chromedriver");
            match wait_started(&mut child, "chromedriver", || {
                status_line(addr, "/status").is_some_and(|l| l.contains(" 200 "))
            }) {
                Startup::Ready => {
                    return Driver {
                        child,
                        addr,
                        log_path,
                        label: label.to_owned(),
                        _dir: dir,
                    }
                }
                Startup::Exited(status) => {
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if last_log.contains("bind() failed") || last_log.contains("Address in use") {
                        continue;
                    }
                    panic!("chromedriver exited early ({status}):\n{last_log}");
                }
                Startup::TimedOut => panic!(
                    "chromedriver did not answer GET /status within 30 s:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ),
            }
        }
        panic!("could not start chromedriver on a free port:\n{last_log}");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver's own shutdown quits the browsers of its sessions; then the whole group.
        let _ = status_line(self.addr, "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let kept = screenshot_dir().join(format!("chromedriver-{}.log", self.label));
            let _ = std::fs::create_dir_all(screenshot_dir());
            let _ = std::fs::write(&kept, &log);
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- chromedriver log ({}), last 80 of {} lines; all of it in {} ---\n{}",
                self.label,
                lines.len(),
                kept.display(),
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
    }
}

/// How a [`Browser`] is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names the session in screenshot and log file names.
    pub label: String,
    /// Whether pages may run scripts.
    pub javascript: bool,
    pub width: u32,
    pub height: u32,
}

impl Options {
    pub fn new(label: &str) -> Options {
        Options {
            label: label.to_owned(),
            javascript: true,
            width: 1280,
            height: 900,
        }
    }
}

/// One entry of the browser's console log (chromedriver's `goog:loggingPrefs`).
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `javascript`, `console-api`, `network`, `security`, `other`, ...
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} {}] {}", self.level, self.source, self.message)
    }
}

/// A chromedriver endpoint of the session that fantoccini has no method for.
#[derive(Debug)]
struct SessionCommand {
    /// Below `/session/ID/`.
    path: String,
    body: Value,
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session.expect("a WebDriver session");
        base.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.body.to_string()))
    }
}

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    pub client: Client,
    pub options: Options,
    shots: PathBuf,
    // Dropped after the client: the driver's drop ends the browser; then the profile goes.
    driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium session.
    pub async fn start(options: Options) -> Browser {
        let chromium = require("chromium");
        let driver = Driver::start(&options.label);
        let profile = tempfile::Builder::new()
            .prefix("sr-chromium-profile-")
            .tempdir()
            .expect("chromium profile dir");
        let mut chrome = json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--force-device-scale-factor=1",
                "--lang=en-US",
                format!("--user-data-dir={}", profile.path().display()),
                format!("--window-size={},{}", options.width, options.height),
            ],
        });
        if !options.javascript {
            chrome["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": chrome,
            "goog:loggingPrefs": { "browser": "ALL" },
            "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "open a Chromium session through chromedriver: {e}\n--- chromedriver log ---\n{}",
                    driver.log()
                )
            });
        let shots = screenshot_dir();
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Browser {
            client,
            options,
            shots,
            driver,
            _profile: profile,
        }
    }

    /// `browserVersion` as the session reports it.
    pub fn version(&self) -> String {
        self.client
            .capabilities()
            .and_then(|c| c.get("browserVersion"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    }

    /// What chromedriver logged so far.
    pub fn driver_log(&self) -> String {
        self.driver.log()
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub async fn current_url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("page title")
    }

    /// The first element matching `css`, waiting up to [`PATIENCE`] for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let url = self.client.current_url().await.ok();
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element `{css}` on {url:?} within {PATIENCE:?}: {e}"))
    }

    /// Every element matching `css` now (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find `{css}`: {e}"))
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of `{css}`: {e}"))
    }

    /// The rendered text of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.find_all(css).await {
            out.push(
                e.text()
                    .await
                    .unwrap_or_else(|e| panic!("text of `{css}`: {e}")),
            );
        }
        out
    }

    /// An attribute of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("attribute {name} of `{css}`: {e}"))
    }

    /// Types `text` into the first element matching `css` (key by key, as a person would).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type {text:?} into `{css}`: {e}"));
    }

    /// Empties the input matching `css`.
    pub async fn clear(&self, css: &str) {
        self.find(css)
            .await
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear `{css}`: {e}"));
    }

    /// Clicks the first element matching `css` (a link click waits for the new page).
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click `{css}`: {e}"));
    }

    /// Presses and releases `key` on whatever has the focus (as a keyboard user would).
    pub async fn press(&self, key: Key) {
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        self.client
            .perform_actions(keys)
            .await
            .unwrap_or_else(|e| panic!("press {key:?}: {e}"));
    }

    /// Runs `script` in the page (a function body; `arguments` holds `args`).
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("run script {script:?}: {e}"))
    }

    /// Runs an asynchronous `script` (its last argument is the callback that returns the value).
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("run async script {script:?}: {e}"))
    }

    /// Saves a PNG of the viewport as `ui-screenshots/LABEL-NAME.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot {name} is not a PNG"
        );
        let path = self
            .shots
            .join(format!("{}-{name}.png", self.options.label));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The browser console since the last call (chromedriver hands each entry out once).
    pub async fn console(&self) -> Vec<LogEntry> {
        let v = self
            .client
            .issue_cmd(SessionCommand {
                path: "se/log".into(),
                body: json!({ "type": "browser" }),
            })
            .await
            .unwrap_or_else(|e| panic!("read the browser console log: {e}"));
        v.as_array()
            .unwrap_or_else(|| panic!("console log is not a list: {v}"))
            .iter()
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or_default().to_owned(),
                source: e["source"].as_str().unwrap_or_default().to_owned(),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Runs a DevTools command through chromedriver (e.g. `Emulation.setEmulatedMedia`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(SessionCommand {
                path: "goog/cdp/execute".into(),
                body: json!({ "cmd": cmd, "params": params }),
            })
            .await
            .unwrap_or_else(|e| panic!("DevTools {cmd}: {e}"))
    }

    /// Sets a permission (`clipboard-read`, ...) for the current page's origin (WebDriver's
    /// permissions extension, which chromedriver implements).
    pub async fn set_permission(&self, name: &str, state: &str) -> Result<(), String> {
        self.client
            .issue_cmd(SessionCommand {
                path: "permissions".into(),
                body: json!({ "descriptor": { "name": name }, "state": state }),
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Ends the session (the browser quits); the driver goes on drop.
    pub async fn close(self) {
        let Browser { client, driver, .. } = self;
        if let Err(e) = client.close().await {
            eprintln!("closing the {} session: {e}", driver.label);
        }
    }
}

/// Polls `ready` every 50 ms until it returns `Some`, panicking with `what` after `timeout`: for
/// state that the page changes asynchronously.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut ready: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
