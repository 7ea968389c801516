//! `pgfork bench dashboard`: what the dashboard's pages cost to serve,
//! each against the API's JSON for the same thing, in the same run.
//!
//! N branches are made on a bench source (one of them with changed rows),
//! this binary's `pgfork serve` is started, and an admin session signs in
//! as a browser does. Then, for R rounds, interleaved: the branch list
//! (`GET /` against `GET /v1/branches`), one branch (`GET /branches/B`
//! against `GET /v1/branches/B`) and its diff (`GET /branches/B/diff`, the
//! fragment the page loads, against `GET /v1/branches/B/diff`). A page
//! refreshed live costs what `GET /` costs: the script asks for the same
//! page every 3 seconds.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgfork_engine::{BranchCreate, Engine};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde::Serialize;

use super::api::{Daemon, loadavg, prepare};
use super::child::BENCH_LABEL;
use super::conn::AppConn;
use super::stats::{Summary, millis};
use crate::cli::DashboardBenchArgs;
use crate::output;

/// The source the benchmark branches (made if missing, deleted after if so).
const SOURCE: &str = "bench-dashboard";

/// One page against its API counterpart.
#[derive(Debug, Serialize)]
pub struct Pair {
    /// What was fetched.
    pub what: &'static str,
    /// The dashboard's page.
    pub page: Summary,
    /// The API's JSON.
    pub api: Summary,
    /// page p50 / api p50.
    pub ratio_p50: f64,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct DashboardReport {
    /// Branches listed.
    pub branches: usize,
    /// Requests per page.
    pub rounds: usize,
    /// Load averages (1 min) before and after.
    pub load_before: f64,
    /// See `load_before`.
    pub load_after: f64,
    /// The pages.
    pub pages: Vec<Pair>,
}

/// Signs in as a browser does; the session cookie.
fn sign_in(http: &Client, url: &str, token: &str) -> Result<String> {
    let cookie = |r: &reqwest::blocking::Response, name: &str| {
        r.headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let pair = v.split(';').next()?;
                let (k, value) = pair.split_once('=')?;
                (k == name).then(|| value.to_string())
            })
    };
    let page = http.get(format!("{url}/login")).send()?;
    let login = cookie(&page, "pgfork_login").context("the sign-in page set no cookie")?;
    let html = page.text()?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("the sign-in page has no CSRF field")?;
    let done = http
        .post(format!("{url}/login"))
        .header(COOKIE, format!("pgfork_login={login}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        // Tokens and CSRF values are alphanumeric (and `_`): nothing to escape.
        .body(format!("csrf={csrf}&token={token}"))
        .send()?;
    cookie(&done, "pgfork_session").context("signing in failed: is the token an admin's?")
}

/// Times one request; fails on a status other than 200.
fn timed(req: RequestBuilder) -> Result<f64> {
    let began = Instant::now();
    let resp = req.send()?;
    let status = resp.status();
    let _ = resp.bytes()?;
    if status != reqwest::StatusCode::OK {
        bail!("answered {status}");
    }
    Ok(millis(began.elapsed()))
}

/// Runs the benchmark on the home `engine` has open.
pub fn run(mut engine: Engine, args: DashboardBenchArgs, json: bool) -> Result<()> {
    let Some(token) = args.token.clone() else {
        bail!(
            "the admin API token is needed: pass --token or set PGFORK_TOKEN (pgfork init printed it; \
             `pgfork token rotate` makes a new one)"
        );
    };
    if args.branches == 0 || args.rounds == 0 {
        bail!("--branches and --rounds must be at least 1");
    }
    let load_before = loadavg();
    let (snapshot, made_source) = prepare(&mut engine, SOURCE)?;
    let result = measure(&mut engine, &token, &snapshot, &args);
    let (key, value) = BENCH_LABEL.split_once('=').expect("KEY=VALUE");
    let labels = std::collections::BTreeMap::from([(key.to_string(), value.to_string())]);
    for b in engine.branch_list(&labels).unwrap_or_default() {
        let _ = engine.branch_delete(&b.name, true);
    }
    if made_source {
        engine.source_delete(SOURCE, true)?;
    }
    let mut report = result?;
    report.load_before = load_before;
    report.load_after = loadavg();
    if json {
        output::json(&report);
    } else {
        print(&report);
    }
    Ok(())
}

fn measure(
    engine: &mut Engine,
    token: &str,
    snapshot: &str,
    args: &DashboardBenchArgs,
) -> Result<DashboardReport> {
    let (key, value) = BENCH_LABEL.split_once('=').expect("KEY=VALUE");
    let labels = std::collections::BTreeMap::from([(key.to_string(), value.to_string())]);
    let mut first = None;
    for i in 0..args.branches {
        let info = engine.branch_create(&BranchCreate {
            name: format!("bench-dash-{i}"),
            from: snapshot.to_string(),
            labels: labels.clone(),
            ..BranchCreate::default()
        })?;
        first.get_or_insert(info);
    }
    let one = first.expect("at least one branch");
    // Something for the diff to show.
    AppConn::parse(&one.dsn_with_password().context("branch DSN")?)?
        .connect()?
        .batch_execute(
            "UPDATE accounts SET balance = balance + 1 WHERE id <= 20;
             INSERT INTO accounts VALUES (-1, 0, 'new');",
        )?;
    let daemon = Daemon::start(engine.home().root())?;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let url = daemon.url.clone();
    let session = sign_in(&http, &url, token)?;
    let page = |path: &str| {
        http.get(format!("{url}{path}"))
            .header(COOKIE, format!("pgfork_session={session}"))
    };
    let api = |path: &str| http.get(format!("{url}{path}")).bearer_auth(token);
    let b = &one.name;
    let pairs: [(&'static str, String, String); 3] = [
        ("branch list", "/".into(), "/v1/branches".into()),
        (
            "one branch",
            format!("/branches/{b}"),
            format!("/v1/branches/{b}"),
        ),
        (
            "its diff",
            format!("/branches/{b}/diff"),
            format!("/v1/branches/{b}/diff"),
        ),
    ];
    let mut times = vec![(Vec::new(), Vec::new()); pairs.len()];
    for _ in 0..args.rounds {
        for (i, (what, p, a)) in pairs.iter().enumerate() {
            let fragment = page(p).header("x-pgfork-fragment", "1");
            times[i]
                .0
                .push(timed(fragment).with_context(|| format!("{what}: GET {p}"))?);
            times[i]
                .1
                .push(timed(api(a)).with_context(|| format!("{what}: GET {a}"))?);
        }
    }
    drop(daemon);
    let pages = pairs
        .iter()
        .zip(times)
        .map(|((what, _, _), (p, a))| {
            let (page, api) = (
                Summary::of_ms(&p).expect("rounds"),
                Summary::of_ms(&a).expect("rounds"),
            );
            Pair {
                what,
                ratio_p50: page.p50_ms / api.p50_ms,
                page,
                api,
            }
        })
        .collect();
    Ok(DashboardReport {
        branches: args.branches,
        rounds: args.rounds,
        load_before: 0.0,
        load_after: 0.0,
        pages,
    })
}

fn print(r: &DashboardReport) {
    println!(
        "dashboard pages against the API's JSON, {} branches, {} requests each (load {:.2} -> {:.2})",
        r.branches, r.rounds, r.load_before, r.load_after
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "", "page p50", "page p99", "API p50", "API p99", "p50 x"
    );
    for p in &r.pages {
        println!(
            "{:<12} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>7.2}x",
            p.what, p.page.p50_ms, p.page.p99_ms, p.api.p50_ms, p.api.p99_ms, p.ratio_p50
        );
    }
}
