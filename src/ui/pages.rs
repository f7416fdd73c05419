//! The pages, as maud templates: every value is escaped by maud, so names, labels and history
//! lines from whoever published an image cannot inject markup.

use std::time::SystemTime;

use indicatif::HumanBytes;
use maud::{html, Markup, DOCTYPE};

use crate::auth::access::CatalogView;
use crate::index::RepoIndex;
use crate::reference::Digest;

use super::facts::{ImageFacts, PlatformFacts, TagFacts};
use super::summary::{RepoSummary, RetentionDrop, StoreSummary};
use super::Query;

/// Repositories per catalog page.
const PER_PAGE: usize = 50;

/// What every page needs to know about the request.
pub struct Ctx<'a> {
    pub prefix: &'a str,
    /// The host the browser used, for pull commands.
    pub host: &'a str,
    pub user: Option<&'a str>,
    /// Whether private repositories exist (then a sign-in link is shown).
    pub private: bool,
}

fn layout(ctx: &Ctx<'_>, title: &str, body: Markup) -> Markup {
    let p = ctx.prefix;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No favicon request (a 404 in every browser console).
                link rel="icon" href="data:,";
                title { (title) " · static-registry" }
                link rel="stylesheet" href={ (p) "assets/ui.css" };
                script src={ (p) "assets/ui.js" } defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a class="brand" href=(p) { "static-registry" }
                        a href=(p) { "Repositories" }
                        a href={ (p) "store" } { "Store" }
                        @if let Some(u) = ctx.user {
                            span class="user" { "Signed in as " strong { (u) } }
                        } @else if ctx.private {
                            a href={ (p) "login" } { "Sign in" }
                        }
                    }
                }
                main id="main" { (body) }
                footer { "Read-only. Changes are made with the " code { "static-registry" } " command line." }
            }
        }
    }
}

fn when(t: Option<SystemTime>) -> String {
    t.and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// `2026-11-22T13:05:01.123Z` → `2026-11-22 13:05`.
fn created(s: Option<&str>) -> String {
    match s {
        Some(s) if s.len() >= 16 => format!("{} {}", &s[..10], &s[11..16]),
        Some(s) => s.to_owned(),
        None => "—".into(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn short(d: &Digest) -> String {
    let hex = d.hex();
    format!("{}:{}", d.algorithm().as_str(), &hex[..12.min(hex.len())])
}

/// A command with a copy button (the text stays selectable without JavaScript).
fn copyable(label: &str, command: &str) -> Markup {
    html! {
        span class="cmd" {
            code { (command) }
            // Hidden until the script runs: without JavaScript it could not copy.
            button type="button" class="copy" data-copy=(command) aria-label={ "Copy " (label) } aria-live="polite" hidden { "Copy" }
        }
    }
}

pub fn catalog(ctx: &Ctx<'_>, s: &StoreSummary, view: &CatalogView, q: &Query) -> Markup {
    let visible: Vec<&RepoSummary> = s
        .repos
        .iter()
        .filter(|r| view.lists(r.name.as_str()))
        .filter(|r| q.q.is_empty() || r.name.as_str().contains(q.q.as_str()))
        .collect();
    let pages = visible.len().div_ceil(PER_PAGE).max(1);
    let page = q.page.min(pages - 1);
    let shown =
        &visible[(page * PER_PAGE).min(visible.len())..((page + 1) * PER_PAGE).min(visible.len())];
    let link = |n: usize| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        if !q.q.is_empty() {
            u.append_pair("q", &q.q);
        }
        u.append_pair("page", &n.to_string());
        format!("{}?{}", ctx.prefix, u.finish())
    };
    layout(
        ctx,
        "Repositories",
        html! {
            h1 { "Repositories" }
            form class="search" role="search" method="get" action=(ctx.prefix) {
                label for="q" { "Search repositories" }
                input id="q" name="q" type="search" value=(q.q) placeholder="name contains…" autocomplete="off" data-filter="#repos";
                button type="submit" { "Search" }
            }
            @if s.computed.is_none() {
                p class="note" { "The store is being summarised; reload in a moment." }
            }
            p class="count" id="count" aria-live="polite" { (plural(visible.len(), "repository", "repositories")) @if !q.q.is_empty() { " matching “" (q.q) "”" } }
            table id="repos" {
                caption class="visually-hidden" { "Repositories" }
                thead { tr { th scope="col" { "Name" } th scope="col" class="num" { "Tags" } th scope="col" class="num" { "Size" } th scope="col" { "Last published" } } }
                tbody {
                    @for r in shown {
                        tr data-name=(r.name) {
                            td { a href={ (ctx.prefix) "r/" (r.name) } { (r.name) } }
                            td class="num" { (r.tags) }
                            td class="num" { (HumanBytes(r.bytes)) }
                            td { (when(r.last_published)) }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav class="pages" aria-label="Pages" {
                    @if page > 0 { a href=(link(page - 1)) rel="prev" { "← Previous" } }
                    span { "Page " (page + 1) " of " (pages) }
                    @if page + 1 < pages { a href=(link(page + 1)) rel="next" { "Next →" } }
                }
            }
        },
    )
}

/// When a tag was last moved (0: before tag history was recorded).
fn tagged(at: i64) -> String {
    if at <= 0 {
        return "—".into();
    }
    let t = jiff::Timestamp::from_second(at).ok();
    when(t.map(SystemTime::from))
}

/// `retention`: what a retention dry run would drop here (`None`: no rules, or not computed yet).
pub fn repository(
    ctx: &Ctx<'_>,
    idx: &RepoIndex,
    tags: &[TagFacts],
    retention: Option<&[&RetentionDrop]>,
) -> Markup {
    let name = &idx.name;
    let host = ctx.host;
    layout(
        ctx,
        name.as_str(),
        html! {
            nav class="crumbs" aria-label="Breadcrumb" { a href=(ctx.prefix) { "Repositories" } " / " (name) }
            h1 { (name) }
            p { (plural(tags.len(), "tag", "tags")) ", " (plural(idx.manifests.len(), "manifest", "manifests")) ", " (plural(idx.blobs.len(), "blob", "blobs")) }
            table id="tags" {
                caption class="visually-hidden" { "Tags, newest first" }
                thead { tr {
                    th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "Type" }
                    th scope="col" { "Platforms" } th scope="col" class="num" { "Size" } th scope="col" { "Created" }
                    th scope="col" { "Tagged" } th scope="col" { "Pull" }
                } }
                tbody {
                    @for t in tags {
                        @let image = t.image.as_deref();
                        tr data-tag=(t.tag) {
                            th scope="row" { (t.tag) }
                            td { a href={ (ctx.prefix) "r/" (name) "@" (t.digest) } title=(t.digest) { code { (short(&t.digest)) } } }
                            td { (kind(&t.media_type)) }
                            td { (image.map(platforms).unwrap_or_default()) }
                            td class="num" { (image.map_or("—".to_owned(), |i| HumanBytes(i.compressed).to_string())) }
                            td { (created(image.and_then(|i| i.created.as_deref()))) }
                            td { (tagged(idx.published_at(&t.tag))) }
                            td class="pull" {
                                (copyable("the pull command by tag", &format!("docker pull {host}/{name}:{}", t.tag)))
                                (copyable("the pull command by digest", &format!("docker pull {host}/{name}@{}", t.digest)))
                            }
                        }
                    }
                }
            }
            @let moved: Vec<_> = idx.history.iter().filter(|(t, h)| h.len() > 1 && idx.tags.contains_key(*t)).collect();
            @if !moved.is_empty() {
                section {
                    h2 { "Tag history" }
                    p class="note" { "Where moved tags pointed before, newest first. Roll back with " code { "static-registry tag REPO:TAG --to DIGEST" } "." }
                    @for (tag, h) in moved {
                        details {
                            summary { (tag) ": moved " (plural(h.len() - 1, "time", "times")) }
                            ol class="history" {
                                @for m in h.iter().rev() {
                                    li { span class="when" { (tagged(m.at)) } " " a href={ (ctx.prefix) "r/" (name) "@" (m.digest) } { code { (m.digest) } } }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(drops) = retention {
                section id="retention" {
                    h2 { "What retention would remove" }
                    p class="note" { "A dry run of the config's " code { "[[retention]]" } " rules with no in-use list: a real run with the platform's in-use list keeps anything deployed." }
                    (retention_list(ctx, drops))
                }
            }
        },
    )
}

/// The tags a retention dry run would drop, with why; a sentence when there are none.
fn retention_list(ctx: &Ctx<'_>, drops: &[&RetentionDrop]) -> Markup {
    html! {
        @if drops.is_empty() {
            p { "Nothing: every tag is kept." }
        } @else {
            ul class="retention" {
                @for d in drops {
                    li { a href={ (ctx.prefix) "r/" (d.repository) } { (d.repository) } ":" (d.tag) " " code title=(d.digest) { (short(&d.digest)) } ": " (d.why) }
                }
            }
        }
        (copyable("the retain command", "static-registry retain --store STORE --in-use DEPLOYED.txt --dry-run"))
    }
}

fn kind(media_type: &str) -> &'static str {
    if crate::oci::media::is_index(media_type) {
        "index"
    } else if media_type.contains("docker") {
        "docker manifest"
    } else {
        "OCI manifest"
    }
}

fn platforms(i: &ImageFacts) -> String {
    let names: Vec<&str> = i
        .platforms
        .iter()
        .map(|p| p.platform.as_str())
        .filter(|p| !p.is_empty() && *p != "unknown/unknown")
        .collect();
    names.join(", ")
}

pub fn image(ctx: &Ctx<'_>, idx: &RepoIndex, digest: &Digest, image: &ImageFacts) -> Markup {
    let name = &idx.name;
    let tags: Vec<&str> = idx
        .tags
        .iter()
        .filter(|(_, d)| &d.digest == digest)
        .map(|(t, _)| t.as_str())
        .collect();
    let referrers = idx.referrers.get(digest);
    layout(
        ctx,
        &format!("{name}@{}", short(digest)),
        html! {
            nav class="crumbs" aria-label="Breadcrumb" {
                a href=(ctx.prefix) { "Repositories" } " / " a href={ (ctx.prefix) "r/" (name) } { (name) } " / " (short(digest))
            }
            h1 { (name) "@" code { (short(digest)) } }
            dl class="facts" {
                dt { "Digest" } dd { code { (digest) } }
                dt { "Type" } dd { (kind(&image.media_type)) " (" code { (image.media_type) } ")" }
                dt { "Tags" } dd { @if tags.is_empty() { "none" } @else { (tags.join(", ")) } }
                dt { "Compressed size" } dd { (HumanBytes(image.compressed)) }
                dt { "Pull" } dd { (copyable("the pull command by digest", &format!("docker pull {}/{name}@{digest}", ctx.host))) }
            }
            @for p in &image.platforms {
                (platform_section(p))
            }
            @if let Some(list) = referrers {
                section {
                    h2 { "Referrers" }
                    table {
                        thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Digest" } th scope="col" class="num" { "Size" } } }
                        tbody {
                            @for r in list {
                                tr {
                                    td { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) }
                                    td { code { (r.digest) } }
                                    td class="num" { (HumanBytes(r.size)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn platform_section(p: &PlatformFacts) -> Markup {
    let title = if p.platform.is_empty() {
        "Image".to_owned()
    } else {
        p.platform.clone()
    };
    html! {
        section class="platform" {
            h2 { (title) }
            p { "Manifest " code { (p.digest) } }
            @if let Some(c) = &p.config { p { "Config " code { (c) } } }
            @if let Some(s) = &p.summary {
                dl class="facts" {
                    dt { "Created" } dd { (created(s.created.as_deref())) }
                    @if !s.entrypoint.is_empty() { dt { "Entrypoint" } dd { code { (s.entrypoint.join(" ")) } } }
                    @if !s.cmd.is_empty() { dt { "Command" } dd { code { (s.cmd.join(" ")) } } }
                    @if let Some(u) = &s.user { dt { "User" } dd { code { (u) } } }
                    @if let Some(w) = &s.working_dir { dt { "Working directory" } dd { code { (w) } } }
                    @if !s.ports.is_empty() { dt { "Exposed ports" } dd { (s.ports.join(", ")) } }
                    @if !s.env_names.is_empty() { dt { "Environment" } dd { (s.env_names.join(", ")) } }
                }
                @if !s.labels.is_empty() {
                    h3 { "Labels" }
                    table class="labels" {
                        thead { tr { th scope="col" { "Label" } th scope="col" { "Value" } } }
                        tbody { @for (k, v) in &s.labels { tr { td { code { (k) } } td { (v) } } } }
                    }
                }
            }
            h3 { "Layers" }
            table class="layers" {
                thead { tr { th scope="col" class="num" { "#" } th scope="col" { "Digest" } th scope="col" class="num" { "Size" } th scope="col" { "Type" } } }
                tbody {
                    @for (i, (d, size, mt)) in p.layers.iter().enumerate() {
                        tr { td class="num" { (i + 1) } td { code title=(d) { (d) } } td class="num" { (HumanBytes(*size)) } td { code { (mt) } } }
                    }
                }
            }
            @if let Some(s) = &p.summary {
                @if !s.history.is_empty() {
                    details {
                        summary { "History (" (s.history.len()) " steps)" }
                        ol class="history" {
                            @for (when, by, empty) in &s.history {
                                li { span class="when" { (created(when.as_deref())) } " " code { (by) } @if *empty { " " span class="empty" { "(no layer)" } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn store(
    ctx: &Ctx<'_>,
    s: &StoreSummary,
    view: &CatalogView,
    health: &[(String, bool)],
) -> Markup {
    let visible: Vec<&RepoSummary> = s
        .repos
        .iter()
        .filter(|r| view.lists(r.name.as_str()))
        .collect();
    // Store-wide figures would count repositories this visitor may not know about.
    let whole = visible.len() == s.repos.len();
    let mut biggest = visible.clone();
    biggest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    let mut recent = visible.clone();
    recent.sort_by_key(|r| std::cmp::Reverse(r.last_published));
    layout(
        ctx,
        "Store",
        html! {
            h1 { "Store" }
            p class="note" { "Summarised " (when(s.computed)) @if !s.took.is_zero() { " in " (format!("{:.1}", s.took.as_secs_f64())) " s" } "; recomputed in the background." }
            @if let Some(e) = &s.error { p class="error" role="alert" { "The last summary failed: " (e) } }
            section {
                h2 { "Totals" }
                dl class="totals" {
                    dt { "Repositories" } dd { (visible.len()) }
                    dt { "Tags" } dd { (visible.iter().map(|r| r.tags).sum::<usize>()) }
                    @if whole {
                        dt { "Manifests" } dd { (s.manifests) }
                        dt { "Blobs" } dd { (s.blobs) }
                        dt { "Stored" } dd { (HumanBytes(s.bytes)) }
                        dt { "Shared between repositories" } dd { (HumanBytes(s.shared_bytes)) }
                    } @else {
                        dt { "Size of the repositories you can see" } dd { (HumanBytes(visible.iter().map(|r| r.bytes).sum())) }
                    }
                }
            }
            @if whole {
                section {
                    h2 { "What prune would reclaim" }
                    @if let Some(r) = &s.reclaim {
                        p { (r.items) " unreferenced manifests and blobs, " strong { (HumanBytes(r.bytes)) } ", older than the " (format!("{}", humantime_hours(r.grace))) " grace period" }
                        @if r.young > 0 { p { "Also unreferenced but younger, kept for now: " (r.young) " (" (HumanBytes(r.young_bytes)) ")." } }
                    } @else {
                        p { "Not computed yet." }
                    }
                    (copyable("the prune command", "static-registry prune --store STORE --dry-run"))
                }
                @if let Some(r) = &s.retention {
                    section id="retention" {
                        h2 { "What retention would remove" }
                        p class="note" { "A dry run of the config's " code { "[[retention]]" } " rules with no in-use list: a real run with the platform's in-use list keeps anything deployed." }
                        p { (plural(r.drops.len(), "tag", "tags")) "; afterwards " (r.manifests) " manifests and " (r.blobs) " blobs, " strong { (HumanBytes(r.bytes)) } ", would be unreferenced (prune deletes them once past its grace period)." }
                        (retention_list(ctx, &r.drops.iter().collect::<Vec<_>>()))
                    }
                }
            }
            section {
                h2 { "Biggest repositories" }
                (repo_table(ctx, &biggest[..biggest.len().min(10)]))
            }
            section {
                h2 { "Last published" }
                (repo_table(ctx, &recent[..recent.len().min(10)]))
                p { "Remove a tag: " (copyable("the untag command", "static-registry untag REPO:TAG --store STORE")) }
            }
            section {
                h2 { "Origins" }
                ul class="health" {
                    @for (name, ok) in health {
                        li { (name) ": " @if *ok { span class="ok" { "healthy" } } @else { span class="bad" { "failing" } } }
                    }
                }
            }
        },
    )
}

fn humantime_hours(d: std::time::Duration) -> String {
    let h = d.as_secs() / 3600;
    if h > 0 && d.as_secs().is_multiple_of(3600) {
        format!("{h} h")
    } else {
        format!("{} s", d.as_secs())
    }
}

fn repo_table(ctx: &Ctx<'_>, repos: &[&RepoSummary]) -> Markup {
    html! {
        table {
            thead { tr { th scope="col" { "Name" } th scope="col" class="num" { "Tags" } th scope="col" class="num" { "Size" } th scope="col" { "Last published" } } }
            tbody {
                @for r in repos {
                    tr {
                        td { a href={ (ctx.prefix) "r/" (r.name) } { (r.name) } }
                        td class="num" { (r.tags) }
                        td class="num" { (HumanBytes(r.bytes)) }
                        td { (when(r.last_published)) }
                    }
                }
            }
        }
    }
}

pub fn login(ctx: &Ctx<'_>) -> Markup {
    layout(
        ctx,
        "Sign in",
        html! {
            h1 { "Sign in" }
            p { "Private repositories are shown to users of the registry's htpasswd file. Your browser asks for the user name and password; they are sent with each page of this site only." }
            p { a href=(ctx.prefix) { "Back to the repositories" } }
        },
    )
}

pub fn not_found(ctx: &Ctx<'_>) -> Markup {
    layout(
        ctx,
        "Not found",
        html! {
            h1 { "Not found" }
            p { "No such page or repository." @if ctx.private && ctx.user.is_none() { " Private repositories are shown after you " a href={ (ctx.prefix) "login" } { "sign in" } "." } }
            p { a href=(ctx.prefix) { "Back to the repositories" } }
        },
    )
}
