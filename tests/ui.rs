//! The web page in a real browser (issue 19, item 5): Debian's headless Chromium, driven through
//! chromedriver (tests/common/browser.rs), against `static-registry serve` on loopback with real
//! published fixtures and a private repository.
//!
//! - `the_page_in_a_browser`: the catalog (public repositories only), the live filter (rows hide
//!   and show as one types, without a reload), the server-side search, a repository, the
//!   multi-platform image (both platforms; layer digests as the fixture's manifests have them), a
//!   copy button (the clipboard is read back), the store page, the not-found page a private
//!   repository shows an anonymous visitor, then sign-in (URL credentials) and the private
//!   repository. The skip link is the first Tab stop. No CSP violation and no script error
//!   reaches the console on any page (both are provoked first, to show they would be seen).
//! - `search_works_without_javascript`: a session with scripts disabled searches by submitting.
//! - `the_page_leaves_the_registry_api_alone`: under the default prefix `/`, `/v2/` is still the
//!   registry's (no browser needed).
//!
//! Screenshots of every page are written to `CARGO_TARGET_TMPDIR/ui-screenshots/` (each path is
//! printed; `cargo test --test ui -- --nocapture` shows them).

mod common;

use std::time::Duration;

use common::browser::{poll, Browser, Key, LogEntry, Options, PATIENCE};
use common::fixtures::{self, Expect};
use common::lb::Replica;
use common::private_world::{Secrets, ALICE_PW};
use common::{new_store, publish};
use serde_json::{json, Value};

/// The public repositories, as the catalog sorts them.
const PUBLIC: [&str; 3] = ["legacy/hello", "library/multi", "library/single"];
const MULTI: &str = "library/multi";
const PRIVATE: &str = "team/secret";
/// Where the page is served (`[ui] prefix`; `/` is the default).
const PREFIX: &str = "/";

/// The fixtures published: three public repositories and `team/secret`, which only alice may
/// pull; `serve` runs with that `[auth]`.
struct World {
    server: Replica,
    _store: tempfile::TempDir,
    _secrets: Secrets,
}

fn world() -> World {
    let store = new_store();
    publish(
        store.path(),
        "oci:fixtures/oci-multi:latest",
        &["library/multi:latest"],
    );
    publish(
        store.path(),
        "oci:fixtures/oci-single:1.0",
        &["library/single:1.0"],
    );
    publish(
        store.path(),
        "docker-archive:fixtures/docker-legacy.tar",
        &["legacy/hello:1.0"],
    );
    publish(
        store.path(),
        "docker-archive:fixtures/docker-25.tar",
        &["team/secret:1"],
    );
    // htpasswd with alice and bob (bcrypt), a token key.
    let secrets = Secrets::new();
    let config = secrets.write_config(
        "serve.toml",
        &format!(
            "[auth]\nhtpasswd = \"{}\"\ntoken_key_file = \"{}\"\n\
             rules = [{{ prefix = \"team/\", users = [\"alice\"] }}]\n\n\
             [ui]\nprefix = \"{PREFIX}\"\n\n\
             [[retention]]\nprefix = \"legacy/\"\ndrop_older_than = \"0s\"\n",
            secrets.path("htpasswd"),
            secrets.path("token.key"),
        ),
    );
    // A replica, as the private-repository tests run one: ready on `/healthz` (with `[auth]`,
    // `GET /v2/` answers 401).
    let server = Replica::start(
        &[
            "--store",
            common::private_world::path_str(store.path()),
            "--config",
            &config,
        ],
        &[],
    );
    World {
        server,
        _store: store,
        _secrets: secrets,
    }
}

impl World {
    /// The page's URL for `rest` (below the prefix).
    fn page(&self, rest: &str) -> String {
        self.server.url(&format!("{PREFIX}{rest}"))
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `data-name` of every catalog row, and of those the browser shows.
async fn rows(b: &Browser) -> (Vec<String>, Vec<String>) {
    let mut all = Vec::new();
    let mut shown = Vec::new();
    for row in b.find_all("#repos tbody tr").await {
        let name = row
            .attr("data-name")
            .await
            .expect("data-name")
            .expect("a catalog row has data-name");
        if row.is_displayed().await.expect("row displayed?") {
            shown.push(name.clone());
        }
        all.push(name);
    }
    (all, shown)
}

/// Opens the catalog at `url`, reloading until the summary is computed (the server summarises
/// the store in the background right after it starts), and returns the listed rows.
async fn open_catalog(b: &Browser, url: &str, want: usize) -> Vec<String> {
    poll("the catalog to list the store", PATIENCE, async || {
        b.goto(url).await;
        let (all, _) = rows(b).await;
        (all.len() >= want).then_some(all)
    })
    .await
}

/// The visible catalog rows once they equal `want` (the filter runs as the page handles input).
async fn shown_rows_become(b: &Browser, what: &str, want: &[&str]) {
    poll(what, PATIENCE, async || {
        let (_, shown) = rows(b).await;
        (shown == want).then_some(())
    })
    .await;
}

/// Console entries that are CSP violations or script errors.
fn script_or_csp_errors(entries: &[LogEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| {
            e.source == "javascript"
                || e.source == "security"
                || e.message.contains("Content Security Policy")
                || (e.level == "SEVERE" && e.source != "network")
        })
        .map(ToString::to_string)
        .collect()
}

/// Asserts the console holds no CSP violation or script error since the last look; network
/// errors are allowed only for `expected_network` (URL fragments: a 404 page, the 401 sign-in).
async fn console_clean(b: &Browser, page: &str, expected_network: &[&str]) {
    let entries = b.console().await;
    let bad = script_or_csp_errors(&entries);
    assert!(
        bad.is_empty(),
        "{page}: CSP violations or script errors in the console:\n{}",
        bad.join("\n")
    );
    let unexpected: Vec<String> = entries
        .iter()
        .filter(|e| e.source == "network" && e.level == "SEVERE")
        .filter(|e| !expected_network.iter().any(|u| e.message.contains(u)))
        .map(ToString::to_string)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{page}: failed requests in the console:\n{}",
        unexpected.join("\n")
    );
}

/// `(platform heading, manifest digest, layer digests)` of each platform section of an image page.
async fn platforms_on_page(b: &Browser) -> Vec<(String, String, Vec<String>)> {
    let sections = b.find_all("section.platform").await;
    let mut out = Vec::new();
    for s in sections {
        let heading = s
            .find(fantoccini::Locator::Css("h2"))
            .await
            .expect("platform heading")
            .text()
            .await
            .expect("heading text");
        let mut manifest = None;
        for p in s
            .find_all(fantoccini::Locator::Css(":scope > p"))
            .await
            .expect("paragraphs")
        {
            let t = p.text().await.expect("paragraph text");
            if let Some(d) = t.strip_prefix("Manifest ") {
                manifest = Some(d.trim().to_owned());
            }
        }
        let mut layers = Vec::new();
        for c in s
            .find_all(fantoccini::Locator::Css(
                "table.layers tbody tr td:nth-child(2) code",
            ))
            .await
            .expect("layer cells")
        {
            layers.push(c.text().await.expect("layer digest text"));
        }
        out.push((
            heading,
            manifest.expect("a platform section names its manifest"),
            layers,
        ));
    }
    out
}

/// The fixture's platforms: `(linux/ARCH, manifest digest, layer digests)`, from its own files.
fn fixture_platforms(expect: &Expect) -> Vec<(String, String, Vec<String>)> {
    let Expect::Index { images, .. } = expect else {
        panic!("oci-multi:latest is an index")
    };
    images
        .iter()
        .map(|i| {
            (
                format!("linux/{}", i.architecture),
                i.manifest
                    .clone()
                    .expect("OCI fixtures keep their manifest"),
                i.layers.clone().expect("OCI fixtures keep their layers"),
            )
        })
        .collect()
}

/// Clicks the copy button `css`, waits for the page to say what happened, and returns the
/// button's text then.
async fn click_copy(b: &Browser, css: &str) -> String {
    assert_eq!(b.text(css).await, "Copy", "{css} before the click");
    b.click(css).await;
    poll("the copy button to report the copy", PATIENCE, async || {
        let t = b.text(css).await;
        (t != "Copy").then_some(t)
    })
    .await
}

/// What `navigator.clipboard.readText()` returns in the page, or why it failed.
async fn read_clipboard(b: &Browser) -> Result<String, String> {
    let v = b
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             navigator.clipboard.readText().then(t => done({ ok: t }), e => done({ err: String(e) }));",
            vec![],
        )
        .await;
    match (&v["ok"], &v["err"]) {
        (Value::String(t), _) => Ok(t.clone()),
        (_, Value::String(e)) => Err(e.clone()),
        _ => Err(format!("unexpected answer {v}")),
    }
}

#[test]
fn the_page_in_a_browser() {
    let w = world();
    let host = w.server.host();
    let base = w.page("");
    let multi_expect = fixtures::oci_multi();
    let rt = rt();
    rt.block_on(async {
        let b = Browser::start(Options::new("js")).await;
        eprintln!(
            "browser: Chromium {} through {}",
            b.version(),
            b.driver_log()
                .lines()
                .find(|l| l.contains("Starting ChromeDriver"))
                .unwrap_or("chromedriver (version not logged)")
        );

        // --- The catalog: every public repository, never the private one.
        let listed = open_catalog(&b, &base, PUBLIC.len()).await;
        assert_eq!(listed, PUBLIC, "catalog rows");
        assert_eq!(b.title().await, "Repositories · static-registry");
        assert_eq!(b.text(".count").await, "3 repositories");
        let source = b.client.source().await.expect("page source");
        assert!(
            !source.contains(PRIVATE) && !source.contains("secret"),
            "an anonymous visitor's catalog mentions the private repository"
        );
        assert_eq!(
            b.text(&format!("header nav a[href='{PREFIX}login']")).await,
            "Sign in"
        );
        b.screenshot("catalog").await;

        // The first Tab reaches the skip link, which then shows on screen; Enter moves to main.
        b.press(Key::Tab).await;
        let focused = b
            .execute(
                "const a = document.activeElement, r = a.getBoundingClientRect();\
                 return [a.className, a.textContent, r.left >= 0 && r.top >= 0 && r.width > 0];",
                vec![],
            )
            .await;
        assert_eq!(
            focused,
            json!(["skip", "Skip to content", true]),
            "the first Tab: [class, text, on screen]"
        );
        b.press(Key::Enter).await;
        assert_eq!(
            b.current_url().await.fragment(),
            Some("main"),
            "the skip link"
        );

        // The console check below must be able to fail: a CSP violation (an inline style) and an
        // uncaught error, provoked here, are both seen.
        b.execute(
            "document.querySelector('footer').setAttribute('style', 'color: red');\
             setTimeout(() => { throw new Error('console probe'); }, 0);",
            vec![],
        )
        .await;
        let probes = poll("the provoked errors in the console", PATIENCE, async || {
            let errs = script_or_csp_errors(&b.console().await);
            (errs.iter().any(|e| e.contains("Content Security Policy"))
                && errs.iter().any(|e| e.contains("console probe")))
            .then_some(errs)
        })
        .await;
        eprintln!("console probes seen:\n{}", probes.join("\n"));
        // A fresh load of the same page: no violation and no error of its own.
        b.goto(&base).await;
        b.find("#repos tbody tr").await;
        console_clean(&b, "catalog", &["favicon.ico"]).await;

        // --- The live filter: rows hide and show as one types; the page is not reloaded.
        b.execute("window.__sameDocument = 'yes';", vec![]).await;
        b.type_into("#q", "lib").await;
        shown_rows_become(
            &b,
            "rows matching `lib`",
            &["library/multi", "library/single"],
        )
        .await;
        assert_eq!(
            b.attr("#repos tr[data-name='legacy/hello']", "hidden")
                .await
                .as_deref(),
            Some("true"),
            "a filtered-out row is `hidden`"
        );
        b.type_into("#q", "x").await;
        shown_rows_become(&b, "no row matching `libx`", &[]).await;
        b.type_into("#q", "\u{E003}\u{E003}\u{E003}\u{E003}").await; // Backspace x4
        shown_rows_become(&b, "every row again, the box empty", &PUBLIC).await;
        b.type_into("#q", "HELLO").await;
        shown_rows_become(
            &b,
            "rows matching `HELLO` (case-insensitive)",
            &["legacy/hello"],
        )
        .await;
        assert_eq!(
            b.execute("return window.__sameDocument;", vec![]).await,
            json!("yes"),
            "typing in the search box reloaded the page"
        );
        assert_eq!(b.current_url().await.as_str(), base, "typing navigated");
        let (all, _) = rows(&b).await;
        assert_eq!(
            all, PUBLIC,
            "the filter removed rows instead of hiding them"
        );

        // --- The server-side search: submitting the form.
        b.clear("#q").await;
        b.type_into("#q", "multi\u{E007}").await; // Enter
        let url = poll("the search to navigate", PATIENCE, async || {
            let u = b.current_url().await;
            (u.query() == Some("q=multi")).then_some(u)
        })
        .await;
        assert_eq!(url.path(), PREFIX);
        assert_eq!(
            b.execute("return window.__sameDocument ?? 'new';", vec![])
                .await,
            json!("new"),
            "submitting did not load a new page"
        );
        let (all, shown) = rows(&b).await;
        assert_eq!(all, [MULTI], "server-side search result");
        assert_eq!(shown, [MULTI]);
        let count = b.text(".count").await;
        assert!(
            count.starts_with("1 repositor") && count.ends_with("matching “multi”"),
            "{count}"
        );
        assert_eq!(b.attr("#q", "value").await.as_deref(), Some("multi"));
        b.screenshot("search").await;
        // Searching for the private repository finds nothing either.
        b.goto(&w.page("?q=secret")).await;
        assert_eq!(
            rows(&b).await.0,
            Vec::<String>::new(),
            "search for `secret`"
        );
        assert_eq!(b.text(".count").await, "0 repositories matching “secret”");
        console_clean(&b, "search", &["favicon.ico"]).await;

        // --- A repository, reached by its link.
        b.goto(&base).await;
        b.click(&format!("#repos a[href='{PREFIX}r/{MULTI}']"))
            .await;
        assert_eq!(b.current_url().await.path(), format!("{PREFIX}r/{MULTI}"));
        assert_eq!(b.text("main h1").await, MULTI);
        assert_eq!(b.title().await, format!("{MULTI} · static-registry"));
        let row = "#tags tr[data-tag='latest']";
        assert_eq!(b.text(&format!("{row} th")).await, "latest");
        let cells = b.texts(&format!("{row} td")).await;
        assert_eq!(cells[1], "index", "type cell: {cells:?}");
        assert_eq!(
            cells[2], "linux/amd64, linux/arm64",
            "platforms cell: {cells:?}"
        );
        let top = multi_expect.top_digest();
        assert_eq!(
            b.attr(&format!("{row} td a"), "title").await.as_deref(),
            Some(top.as_str()),
            "the tag's digest link"
        );
        b.screenshot("repository").await;
        console_clean(&b, "repository", &["favicon.ico"]).await;

        // --- A copy button.
        let by_tag = format!("{row} button.copy[data-copy$=':latest']");
        let command = format!("docker pull {host}/{MULTI}:latest");
        assert_eq!(
            b.attr(&by_tag, "data-copy").await.as_deref(),
            Some(command.as_str()),
            "the pull command a copy button carries"
        );
        assert_eq!(
            b.attr(&by_tag, "aria-label").await.as_deref(),
            Some("Copy the pull command by tag")
        );
        let granted = b.set_permission("clipboard-read", "granted").await;
        let state = click_copy(&b, &by_tag).await;
        assert_eq!(
            state, "Copied",
            "the copy button's state (the clipboard API failed, and so did the fallback)"
        );
        assert!(
            b.find_all(&format!("{by_tag}.copied")).await.len() == 1,
            "a successful copy marks the button `copied`"
        );
        match (&granted, read_clipboard(&b).await) {
            (Ok(()), Ok(text)) => {
                assert_eq!(text, command, "the clipboard after Copy");
                eprintln!("clipboard read back: {text:?}");
            }
            (g, r) => panic!(
                "the clipboard cannot be read back (permission: {g:?}; readText: {r:?}); \
                 only the button's state and data-copy were checked"
            ),
        }
        // The button says so for a while, then offers to copy again.
        poll(
            "the copy button to reset",
            Duration::from_secs(5),
            async || (b.text(&by_tag).await == "Copy").then_some(()),
        )
        .await;

        // --- The multi-platform image, reached from the tag's digest link.
        b.click(&format!("{row} td a")).await;
        assert_eq!(
            b.current_url().await.path(),
            format!("{PREFIX}r/{MULTI}@{top}"),
            "the image page's address"
        );
        let on_page = platforms_on_page(&b).await;
        let headings: Vec<&str> = on_page.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            headings,
            ["linux/amd64", "linux/arm64"],
            "platform sections"
        );
        let mut want = fixture_platforms(&multi_expect);
        want.sort();
        let mut got = on_page.clone();
        got.sort();
        assert_eq!(
            got, want,
            "platform, manifest and layer digests on the page vs the fixture's manifests"
        );
        // The first layer is one blob both platforms share (fixtures/README.md).
        assert_eq!(got[0].2[0], got[1].2[0]);
        assert_ne!(got[0].2[1], got[1].2[1]);
        let facts = b.texts("main > dl.facts dd").await;
        assert_eq!(facts[0], top, "digest fact: {facts:?}");
        assert_eq!(facts[2], "latest", "tags fact: {facts:?}");
        assert_eq!(
            b.attr("main > dl.facts button.copy", "data-copy")
                .await
                .as_deref(),
            Some(format!("docker pull {host}/{MULTI}@{top}").as_str())
        );
        b.screenshot("image").await;
        // The dark palette (prefers-color-scheme), for a look at its contrast.
        let dark =
            |v: &str| json!({ "features": [{ "name": "prefers-color-scheme", "value": v }] });
        b.cdp("Emulation.setEmulatedMedia", dark("dark")).await;
        b.screenshot("image-dark").await;
        b.cdp("Emulation.setEmulatedMedia", dark("light")).await;
        console_clean(&b, "image", &["favicon.ico"]).await;

        // --- The store page: totals of what an anonymous visitor may see.
        b.goto(&w.page("store")).await;
        assert_eq!(b.text("main h1").await, "Store");
        let totals = b.texts("dl.totals dd").await;
        assert_eq!(
            totals[0], "3",
            "repositories an anonymous visitor sees: {totals:?}"
        );
        let source = b.client.source().await.expect("page source");
        assert!(
            !source.contains(PRIVATE),
            "the store page shows an anonymous visitor the private repository"
        );
        b.screenshot("store").await;
        console_clean(&b, "store", &["favicon.ico"]).await;

        // --- A repository's retention preview: the config's rule drops every legacy/ tag older
        // than 0 s (the store page shows the store-wide one to those who see every repository).
        b.goto(&w.page("r/legacy/hello")).await;
        let retention = b.text("#retention").await;
        assert!(
            retention.contains("legacy/hello:1.0") && retention.contains("static-registry retain"),
            "the repository page's retention preview: {retention}"
        );
        b.goto(&w.page("r/library/single")).await;
        assert!(
            b.text("#retention")
                .await
                .contains("Nothing: every tag is kept"),
            "a repository no rule covers keeps everything"
        );

        // --- The private repository, anonymously: the not-found page, as for any unknown name.
        b.goto(&w.page(&format!("r/{PRIVATE}"))).await;
        assert_eq!(b.title().await, "Not found · static-registry");
        assert_eq!(b.text("main h1").await, "Not found");
        assert!(
            b.text("main")
                .await
                .contains("Private repositories are shown after you sign in"),
            "the not-found page offers sign-in"
        );
        b.screenshot("private-anonymous").await;
        b.goto(&w.page("r/team/nothing-here")).await;
        assert_eq!(b.text("main h1").await, "Not found");
        console_clean(&b, "not found", &["favicon.ico", "r/team/"]).await;

        // --- Sign in. Chromium (156) answers `/login`'s Basic challenge with the credentials of
        // a top-level URL, then follows the 303 to the catalog; that request's URL still
        // carries the credentials (a relative Location keeps them), and Chromium never sends
        // URL credentials unchallenged, so that one page is anonymous. The credentials are in
        // its auth cache by then: every later request to the origin, by a URL without them,
        // carries them.
        let login = format!("http://alice:{ALICE_PW}@{host}{PREFIX}login");
        b.goto(&login).await;
        let url = b.current_url().await;
        assert_eq!(url.path(), PREFIX, "after sign-in: {url}");
        let landed_signed_in = !b.find_all("header .user").await.is_empty();
        eprintln!("after sign-in, at {url}: signed in there: {landed_signed_in}");
        let listed = open_catalog(&b, &base, PUBLIC.len() + 1).await;
        assert_eq!(b.text("header .user").await, "Signed in as alice");
        assert_eq!(
            listed,
            ["legacy/hello", "library/multi", "library/single", PRIVATE],
            "alice's catalog"
        );
        b.screenshot("signed-in-catalog").await;
        b.goto(&w.page(&format!("r/{PRIVATE}"))).await;
        assert_eq!(b.text("main h1").await, PRIVATE);
        assert_eq!(b.text("#tags tr[data-tag='1'] th").await, "1");
        b.screenshot("signed-in-repository").await;
        console_clean(&b, "signed in", &["favicon.ico", "login"]).await;

        b.close().await;
    });
}

#[test]
fn search_works_without_javascript() {
    let w = world();
    let host = w.server.host();
    let base = w.page("");
    rt().block_on(async {
        let mut options = Options::new("nojs");
        options.javascript = false;
        let b = Browser::start(options).await;

        let listed = open_catalog(&b, &base, PUBLIC.len()).await;
        assert_eq!(listed, PUBLIC);
        // Scripts really are off: typing filters nothing.
        b.type_into("#q", "multi").await;
        assert_eq!(
            rows(&b).await.1,
            PUBLIC,
            "rows were filtered as one typed: scripts run"
        );
        // Submitting searches on the server.
        b.click("form.search button[type='submit']").await;
        let url = poll("the search to navigate", PATIENCE, async || {
            let u = b.current_url().await;
            (u.query() == Some("q=multi")).then_some(u)
        })
        .await;
        assert_eq!(url.path(), PREFIX);
        let (all, shown) = rows(&b).await;
        assert_eq!(all, [MULTI], "server-side search result");
        assert_eq!(shown, [MULTI]);
        b.screenshot("search").await;

        // The pull command stays readable (and selectable) text without the script.
        b.click(&format!("#repos a[href='{PREFIX}r/{MULTI}']"))
            .await;
        assert_eq!(
            b.text("#tags tr[data-tag='latest'] .cmd code").await,
            format!("docker pull {host}/{MULTI}:latest")
        );
        b.screenshot("repository").await;
        b.close().await;
    });
}

/// The page shares the port with the registry API: under the default prefix `/`, the API's own
/// paths still reach the registry (a container client never gets the page's HTML).
#[test]
fn the_page_leaves_the_registry_api_alone() {
    let w = world();
    for (path, status) in [
        // With `[auth]`, the base answers 401 with a Bearer challenge.
        ("/v2/", 401),
        ("/v2/library/multi/tags/list", 307),
        ("/v2/team/secret/tags/list", 401),
    ] {
        let r = common::blocking_request(w.server.addr(), "GET", path)
            .unwrap_or_else(|| panic!("GET {path}: no answer"));
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(
            (r.status, r.header("docker-distribution-api-version")),
            (status, Some("registry/2.0")),
            "GET {path} must be the registry's answer, not the page's; got {} {:?}\n{}",
            r.status,
            r.headers,
            body.chars().take(300).collect::<String>()
        );
    }
    // And the page still answers at its prefix.
    let r = common::blocking_request(w.server.addr(), "GET", PREFIX).expect("GET the page");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{r:?}"
    );
}
