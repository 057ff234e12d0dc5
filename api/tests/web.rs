//! The web app: the browser session cookie and its CSRF token over plain HTTP, then the
//! journeys in a real headless Chromium (Debian's `chromium` driven through `chromedriver`)
//! against the real server and the fake LLM provider.

mod common;
// The identity-provider fakes of the security tests; this file uses the GitHub one only.
#[path = "security/fake_idp.rs"]
#[expect(dead_code)]
mod fake_idp;

use common::fake_llm::{FakeLlm, Step};
use common::{ADMIN, Account, Backend, PASSWORD, TestApp, assert_error, spawn_app_with};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn app_with_model(backend: Backend, fake: &FakeLlm) -> (TestApp, Account) {
    app_with_model_and(backend, fake, &[]).await
}

/// [`app_with_model`] with more settings.
async fn app_with_model_and(backend: Backend, fake: &FakeLlm, extra: &[(&str, &str)]) -> (TestApp, Account) {
    let config = json!({"api_key": "sk-test"});
    let mut vars = vec![("PARLEY_LLM_STALL_SECS", "5")];
    vars.extend_from_slice(extra);
    let (app, admin, _) = common::app_with_model(backend, &fake.base_url(), config, &vars).await;
    (app, admin)
}

/// The `name=value` pairs a response sets, as one `Cookie` header.
fn cookies_of(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .collect()
}

/// A browser-like session over plain HTTP: the cookies the sign-in page and `/session` set.
async fn cookie_session(app: &TestApp, account: &Account) -> (String, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = client.get(app.url("/signin")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf_cookie = cookies_of(&page).into_iter().find(|c| c.starts_with("parley_csrf=")).expect("a CSRF cookie");
    let csrf = csrf_cookie.trim_start_matches("parley_csrf=").to_owned();
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("content=\"{csrf}\"")), "the page carries its CSRF token");
    let res = client
        .post(app.url("/session"))
        .header(COOKIE, &csrf_cookie)
        .form(&[("csrf", csrf.as_str()), ("access_token", account.access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set = res.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let session = set.iter().find(|c| c.starts_with("parley_session=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
    assert!(!session.contains("Secure"), "plain http: no Secure attribute");
    let session = session.split(';').next().unwrap().to_owned();
    // Signing in rotates the CSRF token.
    let fresh = set.iter().find(|c| c.starts_with("parley_csrf=")).expect("a new CSRF cookie");
    let fresh = fresh.split(';').next().unwrap().to_owned();
    assert_ne!(fresh, csrf_cookie);
    let csrf = fresh.trim_start_matches("parley_csrf=").to_owned();
    (format!("{session}; {fresh}"), csrf)
}

both_backends! {
    async fn the_session_cookie_works_like_a_token_and_state_changes_need_the_csrf_token(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["Hi", " there"])]).await;
        let (app, _admin) = app_with_model(backend, &fake).await;
        let user = app.signup("cookie@example.com").await;
        let (cookie, csrf) = cookie_session(&app, &user).await;
        let http = &app.client;

        let me: Value = http.get(app.url("/api/users/me/")).header(COOKIE, &cookie).send().await.unwrap().json().await.unwrap();
        assert_eq!(me["email"], "cookie@example.com");

        // Without the token a cookie-authenticated POST is refused, with it accepted.
        let body = json!({"message": "hello"});
        let res = http.post(app.url("/api/llm/chat/")).header(COOKIE, &cookie).json(&body).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "csrf_failed").await;
        let res = http.post(app.url("/api/llm/chat/")).header(COOKIE, &cookie).header("x-csrf-token", "wrong").json(&body).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "csrf_failed").await;
        let res = http.post(app.url("/api/llm/chat/")).header(COOKIE, &cookie).header("x-csrf-token", &csrf).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let accepted: Value = res.json().await.unwrap();

        // The job's event stream takes the cookie (an EventSource cannot send a bearer header).
        let stream = http
            .get(app.url(&format!("/api/jobs/{}/events/", accepted["job_id"].as_str().unwrap())))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        let text = tokio::time::timeout(Duration::from_secs(20), stream.text()).await.expect("the stream ends").unwrap();
        assert!(text.contains("event: done"), "{text}");
        assert!(text.contains("\"Hi\"") && text.contains("\" there\""), "{text}");

        // A forged cookie is nobody.
        let forged = cookie.replacen("parley_session=", "parley_session=0", 1);
        let res = http.get(app.url("/api/users/me/")).header(COOKIE, forged).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        // Signing out needs the token too, then ends the session the cookie names.
        let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let res = no_redirect.post(app.url("/signout")).header(COOKIE, &cookie).form(&[("csrf", "nope")]).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = no_redirect.post(app.url("/signout")).header(COOKIE, &cookie).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(cookies_of(&res).iter().any(|c| c == "parley_session="), "the cookie is cleared");
        let res = http.get(app.url("/api/users/me/")).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    async fn a_browser_session_records_its_use_and_ends_after_the_idle_timeout(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_SESSION_IDLE_TIMEOUT_SECS", "600")]).await;
        let user = app.signup("idle@example.com").await;
        let (cookie, _) = cookie_session(&app, &user).await;
        let me = |cookie: String| {
            let req = app.client.get(app.url("/api/users/me/")).header(COOKIE, cookie);
            async move { req.send().await.unwrap().status() }
        };
        let last_used = |ago_secs: i64| {
            let at = parley_shared::time::now_ms() - ago_secs * 1000;
            sqlx::query("update sessions set last_used_at = $1").bind(at).execute(&app.state.db.writer)
        };
        // Used five minutes ago: this request counts as use.
        last_used(300).await.unwrap();
        assert_eq!(me(cookie.clone()).await, StatusCode::OK);
        let sessions: Value = app.get_json("/api/auth/sessions/", &user.access).await;
        let used = chrono::DateTime::parse_from_rfc3339(sessions["items"][0]["last_used_at"].as_str().unwrap()).unwrap();
        assert!(chrono::Utc::now().signed_duration_since(used).num_seconds() < 60, "{sessions}");
        // Idle longer than the timeout: the session ends, for the cookie and the token alike.
        last_used(601).await.unwrap();
        assert_eq!(me(cookie).await, StatusCode::UNAUTHORIZED);
        assert_eq!(app.me(&user.access).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn with_an_https_public_url_the_cookies_are_secure_and_the_session_form_needs_its_token(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_PUBLIC_URL", "https://parley.example.com")]).await;
        let user = app.signup("secure@example.com").await;
        let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let page = no_redirect.get(app.url("/signin")).send().await.unwrap();
        let set = page.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        let csrf = set.iter().find(|c| c.starts_with("parley_csrf=")).expect("a CSRF cookie");
        assert!(csrf.contains("; Secure") && csrf.contains("HttpOnly"), "{csrf}");
        let token = csrf.split(';').next().unwrap().trim_start_matches("parley_csrf=").to_owned();
        let res = no_redirect
            .post(app.url("/session"))
            .header(COOKIE, format!("parley_csrf={token}"))
            .form(&[("csrf", token.as_str()), ("access_token", user.access.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let session = res.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).find(|c| c.starts_with("parley_session=")).unwrap();
        assert!(session.contains("; Secure") && session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
        // Without the CSRF cookie (a form posted from another site) the form is refused.
        let res = no_redirect
            .post(app.url("/session"))
            .form(&[("csrf", token.as_str()), ("access_token", user.access.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(res.headers().get(SET_COOKIE).is_none_or(|c| !c.to_str().unwrap().starts_with("parley_session")));
        // A token that is not an access token starts nothing.
        let res = no_redirect
            .post(app.url("/session"))
            .header(COOKIE, format!("parley_csrf={token}"))
            .form(&[("csrf", token.as_str()), ("access_token", user.refresh.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()["location"], "/signin");
        assert!(res.headers().get(SET_COOKIE).is_none());
    }

    async fn pages_carry_a_strict_policy_and_admin_pages_answer_403_to_other_users(backend: Backend) {
        let fake = FakeLlm::openai(vec![Step::reply(&["x"])]).await;
        let (app, admin) = app_with_model(backend, &fake).await;
        let user = app.signup("plain@example.com").await;
        let (cookie, _) = cookie_session(&app, &user).await;
        let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

        let res = no_redirect.get(app.url("/chat")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed out: to the sign-in page");
        assert_eq!(res.headers()["location"], "/signin");

        let res = no_redirect.get(app.url("/chat")).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert!(res.headers().contains_key("referrer-policy"));
        let html = res.text().await.unwrap();
        assert!(!html.contains("<script>") && html.contains("<script src=\"/static/chat.js\""), "no inline script");

        for page in ["/admin", "/admin/jobs", "/admin/models", "/admin/stats", "/admin/exports"] {
            let res = no_redirect.get(app.url(page)).header(COOKIE, &cookie).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{page}");
        }
        let (admin_cookie, _) = cookie_session(&app, &admin).await;
        for page in ["/admin", "/admin/jobs", "/admin/models", "/admin/stats", "/admin/exports"] {
            let res = no_redirect.get(app.url(page)).header(COOKIE, &admin_cookie).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{page}");
        }
        let res = no_redirect.get(app.url("/static/chat.js")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    }
}

/// Starts a no-op job as the admin; its id.
async fn noop(app: &TestApp, admin: &Account, body: Value) -> String {
    let res = app.post_json("/api/admin/jobs/noop/", &body, Some(&admin.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned()
}

async fn queue_stats(app: &TestApp, admin: &Account) -> Value {
    app.get_json("/api/admin/queues/", &admin.access).await
}

/// Jobs of the one-slot `default` queue: a success, a fatal failure and a success after a
/// failed attempt have ended; a long no-op runs and another waits behind it. The ids of
/// the running and the waiting job.
async fn busy_default_queue(app: &TestApp, admin: &Account) -> (String, String) {
    let ok = noop(app, admin, json!({})).await;
    app.wait_for_status(&admin.access, &ok, "succeeded").await;
    let failed = noop(app, admin, json!({"fail_times": 1, "fatal": true})).await;
    app.wait_for_status(&admin.access, &failed, "failed").await;
    let second_try = noop(app, admin, json!({"fail_times": 1})).await;
    let job = app.wait_for_status(&admin.access, &second_try, "succeeded").await;
    assert_eq!(job["attempts"], 2, "{job}");
    let running = noop(app, admin, json!({"sleep_ms": 120_000})).await;
    app.wait_for_status(&admin.access, &running, "running").await;
    let waiting = noop(app, admin, json!({})).await;
    // It waits (the queue's one slot is taken), due for a minute and a half.
    let due = parley_shared::time::now_ms() - 90_000;
    sqlx::query("update parley_jobs set run_after = $1, created_at = $1 where id = $2")
        .bind(due)
        .bind(&waiting)
        .execute(&app.state.db.writer)
        .await
        .unwrap();
    assert_eq!(app.job(&admin.access, &waiting).await["status"], "queued");
    (running, waiting)
}

both_backends! {
    async fn the_queue_stats_give_each_queues_load_and_the_last_hours_outcomes_per_kind(backend: Backend) {
        let app = spawn_app_with(backend, &[("PARLEY_ADMIN_EMAIL", ADMIN.0), ("PARLEY_ADMIN_PASSWORD", ADMIN.1),
            ("PARLEY_WORKER_CONCURRENCY", "1")]).await;
        let admin = app.signin(ADMIN.0, ADMIN.1).await;
        let user = app.signup("counted@example.com").await;
        let res = app.client.get(app.url("/api/admin/queues/")).bearer_auth(&user.access).send().await.unwrap();
        assert_error(res, StatusCode::FORBIDDEN, "forbidden").await;

        // Before any job of its kind: every queue listed, idle; no noop outcome.
        let stats = queue_stats(&app, &admin).await;
        let names: Vec<&str> = stats["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["interactive", "default", "bulk"], "{stats}");
        assert!(stats["last_hour"].as_array().unwrap().iter().all(|k| k["kind"] != "noop"), "{stats}");

        let (running, waiting) = busy_default_queue(&app, &admin).await;
        let stats = queue_stats(&app, &admin).await;
        let default = stats["queues"].as_array().unwrap().iter().find(|q| q["name"] == "default").unwrap().clone();
        assert_eq!((default["waiting"].as_i64(), default["running"].as_i64()), (Some(1), Some(1)), "{stats}");
        let oldest = default["oldest_waiting_secs"].as_i64().expect("a due waiting job");
        assert!((90..120).contains(&oldest), "{stats}");
        let bulk = stats["queues"].as_array().unwrap().iter().find(|q| q["name"] == "bulk").unwrap().clone();
        assert_eq!(bulk, json!({"name": "bulk", "waiting": 0, "running": 0, "oldest_waiting_secs": null}));
        let noop_row = |stats: &Value| {
            stats["last_hour"].as_array().unwrap().iter().find(|k| k["kind"] == "noop").cloned().expect("a noop row")
        };
        assert_eq!(
            noop_row(&stats),
            json!({"kind": "noop", "queue": "default", "succeeded": 2, "failed": 1, "cancelled": 0, "retried": 1})
        );
        // The old counts stay as they were.
        assert_eq!((stats["jobs"]["running"].as_i64(), stats["jobs"]["failed"].as_i64()), (Some(1), Some(1)), "{stats}");

        // Cancelling both: the waiting one ends at once, the running one when its worker stops it.
        for id in [&waiting, &running] {
            let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &Value::Null, Some(&admin.access)).await;
            assert!(res.status().is_success(), "{}", res.status());
        }
        app.wait_for_status(&admin.access, &running, "cancelled").await;
        let stats = queue_stats(&app, &admin).await;
        assert_eq!(noop_row(&stats)["cancelled"], 2, "{stats}");
        let default = stats["queues"].as_array().unwrap().iter().find(|q| q["name"] == "default").unwrap().clone();
        assert_eq!(default, json!({"name": "default", "waiting": 0, "running": 0, "oldest_waiting_secs": null}));

        // Jobs that ended more than an hour ago are out of the window.
        sqlx::query("update parley_jobs set finished_at = finished_at - 3600001 where kind = 'noop'")
            .execute(&app.state.db.writer)
            .await
            .unwrap();
        let stats = queue_stats(&app, &admin).await;
        assert!(stats["last_hour"].as_array().unwrap().iter().all(|k| k["kind"] != "noop"), "{stats}");
    }
}

// ---- in a real browser

/// One browser journey at a time: the machine has two cores.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `chromedriver` process on a free port, killed on drop.
struct Driver {
    child: std::process::Child,
    url: String,
    /// Where the browsers save downloads.
    downloads: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PARLEY_<var>`, or `name` found on the `PATH`, or `/usr/bin/<name>`.
fn program(var: &str, name: &str) -> String {
    if let Some(path) = std::env::var(var).ok().filter(|p| !p.is_empty()) {
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| std::path::Path::new("/usr/bin").join(name))
        .display()
        .to_string()
}

fn chromedriver_path() -> Option<String> {
    let path = program("PARLEY_CHROMEDRIVER", "chromedriver");
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "CI is set but chromedriver is missing ({path}): .ci/run installs it");
    eprintln!("{path} is missing; skipping the browser journeys (apt-get install chromium chromium-driver)");
    None
}

async fn driver() -> Option<Driver> {
    let path = chromedriver_path()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}"), downloads: tempfile::tempdir().unwrap() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/status", driver.url)).await.map(|r| !r.status().is_success()).unwrap_or(true) {
        assert!(Instant::now() < deadline, "chromedriver never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(driver)
}

/// A new headless browser (its own profile: its own cookies), `width` pixels wide.
async fn browser(driver: &Driver, width: u32) -> Client {
    let binary = program("PARLEY_CHROMIUM", "chromium");
    let downloads = driver.downloads.path().display().to_string();
    let caps = json!({"goog:chromeOptions": {"binary": binary, "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        format!("--window-size={width},900")],
        "prefs": {"download.default_directory": downloads, "download.prompt_for_download": false}}});
    let Value::Object(caps) = caps else { unreachable!() };
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session");
    // The command line's window size has a floor above 375 px; this does not.
    c.set_window_size(width, 900).await.unwrap();
    c
}

/// Evaluates `expr` in the page until it is truthy (30 s deadline); returns its value.
async fn until(c: &Client, what: &str, expr: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = c.execute(&format!("return ({expr});"), vec![]).await.unwrap_or(Value::Null);
        let truthy = match &value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what} ({expr}); last value {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn path_is(c: &Client, path: &str) {
    until(c, &format!("the page {path}"), &format!("window.location.pathname === {path:?}")).await;
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

async fn sign_in(c: &Client, app: &TestApp, email: &str, password: &str) {
    c.goto(&app.url("/signin")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    click(c, "#signin-form button[type=submit]").await;
    path_is(c, "/chat").await;
}

/// Sends `text` from the chat page's composer.
async fn send_message(c: &Client, text: &str) {
    until(c, "the model picker", "document.querySelectorAll('#model option').length > 0").await;
    fill(c, "#message", text).await;
    click(c, "#send").await;
}

const LAST_REPLY: &str = "document.querySelector('#messages li.assistant:last-of-type')";

/// The page fits `width` pixels without sideways scrolling, and every form control has a
/// label (or an `aria-label`).
async fn fits_and_is_labelled(c: &Client, width: u32) {
    let viewport = c.execute("return window.innerWidth", vec![]).await.unwrap();
    assert_eq!(viewport, width, "the window is {width} px wide");
    let overflow = c.execute("return document.documentElement.scrollWidth", vec![]).await.unwrap();
    let wide = c
        .execute(
            "return [...document.querySelectorAll('body *')]
               .filter(e => e.getBoundingClientRect().right + window.scrollX > window.innerWidth)
               .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + e.getBoundingClientRect().right)",
            vec![],
        )
        .await
        .unwrap();
    assert!(overflow.as_u64().unwrap() <= u64::from(width), "the page is {overflow} px wide at {width} px: {wide}");
    let unlabelled = c
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!([]), "controls without a label");
}

/// Saves a screenshot for the README when `PARLEY_SCREENSHOTS_DIR` is set.
async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("PARLEY_SCREENSHOTS_DIR") {
        let png = c.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_signs_up_verifies_the_email_from_the_outbox_and_signs_in() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![Step::reply(&["x"])]).await;
    let (app, _admin) = app_with_model(Backend::Sqlite, &fake).await;
    let c = browser(&driver, 375).await;

    c.goto(&app.url("/signup")).await.unwrap();
    fill(&c, "#email", "newcomer@example.com").await;
    fill(&c, "#display_name", "New <b>comer</b>").await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "#signup-form button[type=submit]").await;
    path_is(&c, "/chat").await;
    let who = until(&c, "the signed-in name", "document.querySelector('.who').textContent").await;
    assert_eq!(who, "New <b>comer</b>", "the name is text, not markup");

    let mail = common::mail::wait_for(&app.mail_dir(), 1).await;
    let token = common::mail::token(&mail[0].text);
    c.goto(&app.url(&format!("/verify-email?token={token}"))).await.unwrap();
    until(&c, "the verified notice", "document.getElementById('verify-status').textContent.includes('is verified')")
        .await;

    // Sign out, then sign in again.
    click(&c, "#signout").await;
    path_is(&c, "/signin").await;
    fits_and_is_labelled(&c, 375).await;
    c.goto(&app.url("/chat")).await.unwrap();
    path_is(&c, "/signin").await;
    // By keyboard alone: type, Tab to the next field, Enter submits.
    c.goto(&app.url("/signin")).await.unwrap();
    let tab = char::from(fantoccini::key::Key::Tab);
    let enter = char::from(fantoccini::key::Key::Enter);
    c.find(Locator::Css("#email")).await.unwrap().send_keys(&format!("newcomer@example.com{tab}")).await.unwrap();
    until(&c, "focus on the password", "document.activeElement.id === 'password'").await;
    c.active_element().await.unwrap().send_keys(&format!("{PASSWORD}{enter}")).await.unwrap();
    path_is(&c, "/chat").await;
    fits_and_is_labelled(&c, 375).await;
    c.goto(&app.url("/account")).await.unwrap();
    until(&c, "the profile", "document.getElementById('profile-verified').textContent === '(verified)'").await;
    fits_and_is_labelled(&c, 375).await;

    // Forgot the password: the reset link from the outbox sets a new one.
    click(&c, "#signout").await;
    path_is(&c, "/signin").await;
    c.goto(&app.url("/forgot-password")).await.unwrap();
    fill(&c, "#email", "newcomer@example.com").await;
    click(&c, "#forgot-form button[type=submit]").await;
    until(&c, "the notice", "document.getElementById('notice').textContent.includes('reset link')").await;
    let mail = common::mail::wait_for(&app.mail_dir(), 2).await;
    let token = common::mail::token(&mail[1].text);
    c.goto(&app.url(&format!("/reset-password?token={token}"))).await.unwrap();
    fill(&c, "#password", "a brand new passphrase").await;
    click(&c, "#reset-form button[type=submit]").await;
    until(&c, "the notice", "document.getElementById('notice').textContent.includes('password is changed')").await;
    sign_in(&c, &app, "newcomer@example.com", "a brand new passphrase").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_streams_token_by_token_markup_stays_text_and_stop_ends_one_mid_stream() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let chunks: Vec<String> = (1..=40).map(|i| format!("w{i} ")).collect();
    let slow: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let fake = FakeLlm::openai(vec![
        Step::reply_with_delays(
            &["Hello", " **world**", " <img src=x onerror=alert(1)>", "\n\n```\n<script>x()</script>\n```"],
            100,
            400,
        ),
        // The title job's request, then the reply that is stopped.
        Step::reply(&["<script>window.pwned = 1</script> title"]),
        Step::reply_with_delays(&slow, 50, 250),
    ])
    .await;
    let (app, _admin) = app_with_model(Backend::Sqlite, &fake).await;
    app.signup("chatter@example.com").await;
    let c = browser(&driver, 1440).await;
    sign_in(&c, &app, "chatter@example.com", PASSWORD).await;

    send_message(&c, "<script>window.pwned = 1</script> hi").await;
    // Token by token: some text shows while the reply is still streaming.
    until(
        &c,
        "a partial reply",
        &format!(
            "{LAST_REPLY} && {LAST_REPLY}.dataset.status === 'streaming' && {LAST_REPLY}.textContent.includes('Hello')"
        ),
    )
    .await;
    until(&c, "the finished reply", &format!("{LAST_REPLY}.dataset.status === 'complete'")).await;
    let user_text =
        until(&c, "the user's message", "document.querySelector('#messages li.user .body').textContent").await;
    assert_eq!(user_text, "<script>window.pwned = 1</script> hi");
    let strong = c.execute(&format!("return {LAST_REPLY}.querySelector('strong').textContent"), vec![]).await.unwrap();
    assert_eq!(strong, "world", "Markdown is rendered");
    let code = c.execute(&format!("return {LAST_REPLY}.querySelector('pre code').textContent"), vec![]).await.unwrap();
    assert_eq!(code, "<script>x()</script>");
    let injected = c
        .execute(
            &format!("return [window.pwned === undefined, {LAST_REPLY}.querySelectorAll('img, script').length]"),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!([true, 0]), "model output and user text are never markup");
    // The title the model wrote shows as text in the sidebar.
    until(
        &c,
        "the generated title",
        "[...document.querySelectorAll('.session-link')].some(b => b.textContent.startsWith('<script>window.pwned = 1</script> title'))",
    )
    .await;
    assert_eq!(c.execute("return document.querySelectorAll('#sessions script').length", vec![]).await.unwrap(), 0);
    until(
        &c,
        "the heading",
        "document.getElementById('chat-title').textContent.startsWith('<script>window.pwned = 1</script> title')",
    )
    .await;
    assert_eq!(c.execute("return document.querySelectorAll('script:not([src])').length", vec![]).await.unwrap(), 0);
    screenshot(&c, "chat.png").await;

    // Tags (asked in a prompt), the tag filter, and an export made in the page.
    click(&c, "#tags").await;
    c.send_alert_text("work, <b>ideas</b>").await.unwrap();
    c.accept_alert().await.unwrap();
    until(&c, "the tags", "document.getElementById('chat-tags').textContent === 'Tags: work, <b>ideas</b>'").await;
    fill(&c, "#tag-filter", "nothing-has-this").await;
    until(&c, "an empty filtered list", "document.querySelectorAll('.session-link').length === 0").await;
    fill(&c, "#tag-filter", "work").await;
    until(&c, "the tagged session", "document.querySelectorAll('.session-link').length === 1").await;
    click(&c, "#export-json").await;
    let name = until(&c, "the download", "document.getElementById('download-link').download").await;
    let file = driver.downloads.path().join(name.as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(Instant::now() < deadline, "{} was never downloaded", file.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported["messages"][0]["content"], "<script>window.pwned = 1</script> hi");
    assert_eq!(exported["messages"].as_array().unwrap().len(), 2);

    send_message(&c, "count slowly").await;
    until(&c, "the second reply's first words", &format!("{LAST_REPLY}.textContent.includes('w2 ')")).await;
    click(&c, "#stop").await;
    until(&c, "the stopped reply", &format!("{LAST_REPLY}.dataset.status === 'cancelled'")).await;
    let text = c.execute(&format!("return {LAST_REPLY}.querySelector('.body').textContent"), vec![]).await.unwrap();
    assert!(!text.as_str().unwrap().contains("w40"), "stopped before the end: {text}");
    assert!(c.find(Locator::Css("#stop")).await.unwrap().attr("hidden").await.unwrap().is_some());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_mid_reply_resumes_the_stream_without_repeating_text() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let chunks: Vec<String> = (1..=20).map(|i| format!("part{i} ")).collect();
    let slow: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let fake = FakeLlm::openai(vec![Step::reply_with_delays(&slow, 50, 300)]).await;
    let (app, _admin) = app_with_model(Backend::Sqlite, &fake).await;
    app.signup("reloader@example.com").await;
    let c = browser(&driver, 375).await;
    sign_in(&c, &app, "reloader@example.com", PASSWORD).await;

    send_message(&c, "tell me a long story").await;
    until(&c, "the first parts", &format!("{LAST_REPLY} && {LAST_REPLY}.textContent.includes('part3 ')")).await;
    c.refresh().await.unwrap();
    until(&c, "the reply after the reload", &format!("{LAST_REPLY} && {LAST_REPLY}.dataset.status === 'streaming'"))
        .await;
    until(&c, "the finished reply", &format!("{LAST_REPLY}.dataset.status === 'complete'")).await;
    let text = c.execute(&format!("return {LAST_REPLY}.querySelector('.body').textContent"), vec![]).await.unwrap();
    assert_eq!(text.as_str().unwrap().trim(), chunks.concat().trim(), "every part once, in order");
    fits_and_is_labelled(&c, 375).await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_retries_a_failed_job_and_deactivates_a_user_whose_open_page_signs_out() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake =
        FakeLlm::openai(vec![Step::error(400, "the prompt is malformed", None), Step::reply(&["it works now"])]).await;
    let (app, admin) = app_with_model(Backend::Sqlite, &fake).await;
    let user = app.signup("member@example.com").await;
    let res = app.post_json("/api/llm/chat/", &json!({"message": "fail please"}), Some(&user.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job_id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&admin.access, &job_id, "failed").await;

    let member = browser(&driver, 375).await;
    sign_in(&member, &app, "member@example.com", PASSWORD).await;
    // A non-admin opening an admin page is refused.
    member.goto(&app.url("/admin/jobs")).await.unwrap();
    let heading = until(&member, "the refusal", "document.querySelector('h1').textContent").await;
    assert_eq!(heading, "Admins only");
    // A POST without the CSRF token is refused, from the page itself.
    let status = member
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/llm/chat/', {method: 'POST', headers: {'Content-Type': 'application/json'},
               body: JSON.stringify({message: 'no token'})}).then(r => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    member.goto(&app.url("/chat")).await.unwrap();

    let root = browser(&driver, 1440).await;
    sign_in(&root, &app, ADMIN.0, ADMIN.1).await;
    root.goto(&app.url("/admin/jobs")).await.unwrap();
    let row = format!("document.querySelector('#failed-body tr[data-job-id=\"{job_id}\"]')");
    until(&root, "the failed job", &row).await;
    screenshot(&root, "queues.png").await;
    click(&root, &format!("#failed-body tr[data-job-id=\"{job_id}\"] button.retry")).await;
    app.wait_for_status(&admin.access, &job_id, "succeeded").await;
    until(&root, "the retried job leaves the failed list", &format!("!{row}")).await;

    // Models: one added with a key, which the page never shows again, then edited.
    root.goto(&app.url("/admin/models")).await.unwrap();
    fill(&root, "#m-name", "second").await;
    fill(&root, "#m-model", "second-model").await;
    fill(&root, "#m-base-url", &fake.base_url()).await;
    fill(&root, "#m-key", "sk-very-secret-key").await;
    root.find(Locator::Css("#m-provider")).await.unwrap().select_by_value("openai_compatible").await.unwrap();
    click(&root, "#m-submit").await;
    let second = "[...document.querySelectorAll('#models-body tr')].find(r => r.children[0].textContent === 'second')";
    until(&root, "the new model", &format!("{second} && {second}.children[3].textContent === 'yes'")).await;
    click(&root, "#models-body button[aria-label='Edit second']").await;
    fill(&root, "#m-model", "renamed-model").await;
    click(&root, "#m-submit").await;
    until(&root, "the edited model", &format!("{second} && {second}.children[2].textContent === 'renamed-model'"))
        .await;
    root.refresh().await.unwrap();
    until(&root, "the models", second).await;
    let html = root.source().await.unwrap();
    assert!(!html.contains("sk-very-secret-key"), "the key is write-only");
    assert_eq!(
        root.execute(&format!("return {second}.children[3].textContent"), vec![]).await.unwrap(),
        "yes",
        "the edit kept the key"
    );

    // The audit log, filtered to failures, shows a wrong password.
    assert_eq!(app.login("member@example.com", "not the password").await.status(), StatusCode::UNAUTHORIZED);
    root.goto(&app.url("/admin/audit")).await.unwrap();
    until(&root, "audit entries", "document.querySelectorAll('#audit-body tr').length > 1").await;
    root.find(Locator::Css("#f-result")).await.unwrap().select_by_value("failure").await.unwrap();
    fill(&root, "#f-action", "auth.login").await;
    click(&root, "#audit-filter button[type=submit]").await;
    until(
        &root,
        "only the failed sign-in",
        "(() => { const rows = [...document.querySelectorAll('#audit-body tr')];
                  return rows.length === 1 && rows[0].children[1].textContent === 'auth.login'
                    && rows[0].children[2].textContent === 'failure'; })()",
    )
    .await;

    root.goto(&app.url("/admin")).await.unwrap();
    let user_row = "#users-body tr[data-email=\"member@example.com\"]";
    until(&root, "the member's row", &format!("document.querySelector('{user_row}')")).await;
    click(&root, &format!("{user_row} button[aria-label^=\"Deactivate\"]")).await;
    until(
        &root,
        "the deactivated row",
        &format!("document.querySelector('{user_row} td:nth-child(3)').textContent === 'no'"),
    )
    .await;
    for width in [1440, 375] {
        root.set_window_size(width, 900).await.unwrap();
        for page in ["/admin", "/admin/jobs", "/admin/models", "/admin/audit", "/account", "/chat"] {
            root.goto(&app.url(page)).await.unwrap();
            fits_and_is_labelled(&root, width).await;
        }
    }
    // The member's open page notices within seconds and goes to the sign-in page.
    path_is(&member, "/signin").await;
    let res = app.me(&user.access).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    member.close().await.unwrap();
    root.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_ends_a_session_and_sets_up_two_factor_which_sign_in_then_asks_for() {
    use parley_shared::usecases::mfa::{code_at, now_secs};
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![Step::reply(&["x"])]).await;
    let (app, _admin) = app_with_model(Backend::Sqlite, &fake).await;
    let user = app.signup("careful@example.com").await;
    parley_shared::store::users::mark_email_verified(&app.state.db.writer, user.id.parse().unwrap()).await.unwrap();
    let c = browser(&driver, 1440).await;
    sign_in(&c, &app, "careful@example.com", PASSWORD).await;

    // The sign-up's session is listed beside this browser's; "End" ends it.
    c.goto(&app.url("/account")).await.unwrap();
    until(&c, "two sessions", "document.querySelectorAll('#sessions-body tr').length === 2").await;
    click(&c, "#sessions-body button").await;
    until(&c, "one session", "document.querySelectorAll('#sessions-body tr').length === 1").await;
    assert_eq!(app.me(&user.access).await.status(), StatusCode::UNAUTHORIZED);

    // An avatar: the upload's job is followed until the processed image shows.
    let png = driver.downloads.path().join("me.png");
    image::RgbImage::from_pixel(300, 200, image::Rgb([200, 30, 30])).save(&png).unwrap();
    c.find(Locator::Css("#avatar-file")).await.unwrap().send_keys(png.to_str().unwrap()).await.unwrap();
    click(&c, "#avatar-form button[type=submit]").await;
    until(&c, "the processed avatar", "document.getElementById('avatar').naturalWidth === 256").await;
    assert_eq!(
        c.execute("return document.getElementById('avatar-status').textContent", vec![]).await.unwrap(),
        "Done."
    );

    // Two-factor setup: the QR code (a data: image the page policy allows), then a code.
    let into = now_secs() % 30;
    if into >= 20 {
        tokio::time::sleep(Duration::from_millis((30 - into) * 1000 + 200)).await;
    }
    let t = now_secs();
    click(&c, "#mfa-start").await;
    until(&c, "the QR code", "document.getElementById('mfa-qr').naturalWidth > 0").await;
    let secret = until(&c, "the secret", "document.getElementById('mfa-secret').textContent").await;
    let secret = secret.as_str().unwrap().to_owned();
    fill(&c, "#mfa-code", &code_at(&secret, t - 30).unwrap()).await;
    click(&c, "#mfa-confirm button[type=submit]").await;
    until(&c, "the recovery codes", "document.getElementById('mfa-codes').textContent.split('\\n').length === 10")
        .await;
    until(&c, "the status", "document.getElementById('mfa-status').textContent.startsWith('On')").await;

    // Signing in now asks for the code after the password.
    click(&c, "#signout").await;
    path_is(&c, "/signin").await;
    fill(&c, "#email", "careful@example.com").await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "#signin-form button[type=submit]").await;
    until(&c, "the code step", "!document.getElementById('mfa-form').hidden").await;
    assert_eq!(c.execute("return window.location.pathname", vec![]).await.unwrap(), "/signin");
    fill(&c, "#mfa-code", "000000").await;
    click(&c, "#mfa-form button[type=submit]").await;
    until(&c, "the refusal", "document.getElementById('error').textContent").await;
    fill(&c, "#mfa-code", &code_at(&secret, t).unwrap()).await;
    click(&c, "#mfa-form button[type=submit]").await;
    path_is(&c, "/chat").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_starts_over_after_a_failed_attempt_drops_that_attempts_text() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let overloaded = json!({"message": "overloaded", "type": "server_error", "code": null});
    let fake = FakeLlm::openai(vec![
        Step::stream_error(&["half an ", "answer "], overloaded),
        Step::reply_with_delays(&["the ", "whole ", "answer"], 50, 100),
    ])
    .await;
    let (app, _admin) = app_with_model(Backend::Sqlite, &fake).await;
    app.signup("patient@example.com").await;
    let c = browser(&driver, 1440).await;
    sign_in(&c, &app, "patient@example.com", PASSWORD).await;
    send_message(&c, "answer me").await;
    until(&c, "the finished reply", &format!("{LAST_REPLY} && {LAST_REPLY}.dataset.status === 'complete'")).await;
    let text = c.execute(&format!("return {LAST_REPLY}.querySelector('.body').textContent"), vec![]).await.unwrap();
    assert_eq!(text, "the whole answer");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_button_signs_in_through_the_provider_and_back() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = fake_idp::FakeIdp::start("parley-client").await;
    // The sign-in page is the return address, so the app's port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{port}");
    let vars = [
        ("PARLEY_BIND", format!("127.0.0.1:{port}")),
        ("PARLEY_PUBLIC_URL", origin.clone()),
        ("PARLEY_OAUTH_REDIRECT_URIS", format!("{origin}/signin")),
        ("PARLEY_OAUTH_GITHUB_CLIENT_ID", "parley-client".into()),
        ("PARLEY_OAUTH_GITHUB_CLIENT_SECRET", "gh-secret".into()),
        ("PARLEY_OAUTH_GITHUB_AUTHORIZE_URL", format!("{}/login/oauth/authorize", fake.base)),
        ("PARLEY_OAUTH_GITHUB_TOKEN_URL", format!("{}/login/oauth/access_token", fake.base)),
        ("PARLEY_OAUTH_GITHUB_API_URL", format!("{}/api", fake.base)),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_with(Backend::Sqlite, &vars).await;
    let c = browser(&driver, 375).await;

    c.goto(&app.url("/signin")).await.unwrap();
    until(&c, "the provider button", "document.querySelector('#providers a')").await;
    click(&c, "#providers a").await;
    // The browser is at the provider's authorization page (the fake has none): the
    // provider signs the user in and sends the browser back to the callback.
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let url = c.current_url().await.unwrap();
        if url.as_str().starts_with(&fake.base) {
            break url;
        }
        assert!(Instant::now() < deadline, "never at the provider: {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    let mut grant = fake_idp::Grant::new("4242", "octo@example.com", true);
    grant.challenge = query["code_challenge"].clone();
    fake.grant("code-from-github", grant);
    let back = format!("/api/auth/oauth/github/callback/?code=code-from-github&state={}", query["state"]);
    c.goto(&app.url(&back)).await.unwrap();
    path_is(&c, "/chat").await;
    let who = until(&c, "the signed-in name", "document.querySelector('.who').textContent").await;
    assert_eq!(who, "octo@example.com");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cancels_a_running_job_from_the_queue_page() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![Step::stall_forever(&["tick "])]).await;
    let (app, admin) = app_with_model(Backend::Sqlite, &fake).await;
    let user = app.signup("waiting@example.com").await;
    let res = app.post_json("/api/llm/chat/", &json!({"message": "take your time"}), Some(&user.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job_id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&admin.access, &job_id, "running").await;

    let root = browser(&driver, 1440).await;
    sign_in(&root, &app, ADMIN.0, ADMIN.1).await;
    root.goto(&app.url("/admin/jobs")).await.unwrap();
    let row = format!("#running-body tr[data-job-id=\"{job_id}\"]");
    until(&root, "the running job", &format!("document.querySelector('{row}')")).await;
    let running = root.execute("return document.querySelector('#queue-counts').textContent", vec![]).await.unwrap();
    assert!(running.as_str().unwrap().contains("running1"), "{running}");
    click(&root, &format!("{row} button")).await;
    app.wait_for_status(&admin.access, &job_id, "cancelled").await;
    until(&root, "the job leaves the running list", &format!("!document.querySelector('{row}')")).await;
    root.close().await.unwrap();
}

/// Waits for `name` in the browsers' download folder; its bytes.
async fn downloaded(driver: &Driver, name: &str) -> Vec<u8> {
    let file = driver.downloads.path().join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Chromium writes `<name>.crdownload` first and renames it when done.
        if file.exists() {
            return std::fs::read(&file).unwrap();
        }
        assert!(Instant::now() < deadline, "{} was never downloaded", file.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches `url` from the page (with its cookie): `[status, content type, body]`.
async fn fetch_in_page(c: &Client, url: &str) -> Value {
    c.execute_async(
        "const [url, done] = [arguments[0], arguments[arguments.length - 1]];
         fetch(url, {credentials: 'same-origin'}).then(async r => done([r.status, r.headers.get('content-type'), await r.text()]))
           .catch(e => done([0, '', String(e)]));",
        vec![json!(url)],
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_watches_each_queues_depth_and_the_last_hour_live_on_the_queue_page() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![Step::reply(&["x"])]).await;
    let (app, admin) = app_with_model_and(Backend::Sqlite, &fake, &[("PARLEY_WORKER_CONCURRENCY", "1")]).await;
    let (running, waiting) = busy_default_queue(&app, &admin).await;

    let root = browser(&driver, 1440).await;
    sign_in(&root, &app, ADMIN.0, ADMIN.1).await;
    root.goto(&app.url("/admin/jobs")).await.unwrap();
    let cells = |selector: &str| {
        format!(
            "[...(document.querySelector('{selector}') || {{children: []}}).children].map(c => c.textContent).join('|')"
        )
    };
    let default = until(
        &root,
        "the default queue's row",
        &format!("{0}.startsWith('default|1|1|') && {0}", cells("#queues-body tr[data-queue=default]")),
    )
    .await;
    let oldest = default.as_str().unwrap().rsplit('|').next().unwrap().to_owned();
    assert!(oldest.starts_with("1 min "), "the oldest waiting job's age, from 90 s: {oldest}");
    let bulk = root.execute(&format!("return {}", cells("#queues-body tr[data-queue=bulk]")), vec![]).await.unwrap();
    assert_eq!(bulk, "bulk|0|0|none due");
    until(
        &root,
        "the last hour's noop outcomes",
        &format!("{} === 'noop|default|2|1|0|1'", cells("#last-hour-body tr[data-kind=noop]")),
    )
    .await;

    // Live: the page shows what happens next without a reload.
    for id in [&waiting, &running] {
        let res = app.post_json(&format!("/api/jobs/{id}/cancel/"), &Value::Null, Some(&admin.access)).await;
        assert!(res.status().is_success());
    }
    until(
        &root,
        "the cancelled jobs",
        &format!("{} === 'noop|default|2|1|2|1'", cells("#last-hour-body tr[data-kind=noop]")),
    )
    .await;
    until(
        &root,
        "the idle default queue",
        &format!("{} === 'default|0|0|none due'", cells("#queues-body tr[data-queue=default]")),
    )
    .await;
    root.set_window_size(375, 900).await.unwrap();
    fits_and_is_labelled(&root, 375).await;
    root.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_sets_a_users_quota_and_downloads_a_users_csv_export_from_the_link() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![Step::reply(&["x"])]).await;
    let (app, admin, model) =
        common::app_with_model(Backend::Sqlite, &fake.base_url(), json!({"api_key": "sk-test"}), &[]).await;
    let user = app.signup("=cmd|quoted@example.com").await;
    let root = browser(&driver, 1440).await;
    sign_in(&root, &app, ADMIN.0, ADMIN.1).await;

    // Quotas: budgets and one allowed model, saved through the account's PATCH.
    root.goto(&app.url("/admin")).await.unwrap();
    let row = "#users-body tr[data-email=\"=cmd|quoted@example.com\"]";
    until(&root, "the user's row", &format!("document.querySelector('{row}')")).await;
    click(&root, &format!("{row} button.quota")).await;
    until(
        &root,
        "the quota form",
        "!document.getElementById('quota-card').hidden && document.querySelectorAll('#q-models input').length === 1",
    )
    .await;
    assert_eq!(root.execute("return document.getElementById('q-all-models').checked", vec![]).await.unwrap(), true);
    fill(&root, "#q-daily", "1000").await;
    fill(&root, "#q-monthly", "20000").await;
    click(&root, "#q-all-models").await;
    click(&root, "#q-models input").await;
    click(&root, "#q-save").await;
    until(&root, "the saved notice", "document.getElementById('notice').textContent.includes('was saved')").await;
    let user_id = app.me(&user.access).await.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let seen: Value = app.get_json(&format!("/api/admin/users/{user_id}/"), &admin.access).await;
    assert_eq!(
        seen["quota"],
        json!({"token_budget_daily": 1000, "token_budget_monthly": 20000, "allowed_config_ids": [model["id"]]})
    );
    // Reopened, the form shows what is set; emptied, the budgets go back to the default.
    click(&root, &format!("{row} button.quota")).await;
    until(&root, "the stored budget", "document.getElementById('q-daily').value === '1000'").await;
    fill(&root, "#q-daily", "").await;
    click(&root, "#q-all-models").await;
    click(&root, "#q-save").await;
    until(&root, "the quota form closes", "document.getElementById('quota-card').hidden").await;
    let seen: Value = app.get_json(&format!("/api/admin/users/{user_id}/"), &admin.access).await;
    assert_eq!(
        seen["quota"],
        json!({"token_budget_daily": null, "token_budget_monthly": 20000, "allowed_config_ids": null})
    );
    fits_and_is_labelled(&root, 1440).await;

    // The export: started, followed to its end, then its link serves the file.
    root.goto(&app.url("/admin/exports")).await.unwrap();
    root.find(Locator::Css("#x-kind")).await.unwrap().select_by_value("users").await.unwrap();
    root.find(Locator::Css("#x-format")).await.unwrap().select_by_value("csv").await.unwrap();
    click(&root, "#x-start").await;
    let link = "document.querySelector('#exports-body tr[data-status=succeeded] a.download')";
    let href = until(&root, "the download link", &format!("{link} && {link}.getAttribute('href')")).await;
    let href = href.as_str().unwrap().to_owned();
    assert!(href.starts_with("/api/exports/") && href.ends_with("/download/"), "{href}");
    let fetched = fetch_in_page(&root, &href).await;
    assert_eq!(fetched[0], 200, "{fetched}");
    assert!(fetched[1].as_str().unwrap().starts_with("text/csv"), "{fetched}");
    let csv = fetched[2].as_str().unwrap();
    assert!(csv.starts_with("id,email"), "{csv}");
    assert!(
        csv.contains(ADMIN.0) && csv.contains("'=cmd|quoted@example.com"),
        "every account, formulas escaped: {csv}"
    );
    // Clicking the link saves the file (the browser's cookie is its only credential).
    let name = root.execute(&format!("return {link}.textContent"), vec![]).await.unwrap();
    let name = name.as_str().unwrap().split(" (").next().unwrap().to_owned();
    click(&root, "#exports-body tr[data-status=succeeded] a.download").await;
    assert_eq!(String::from_utf8(downloaded(&driver, &name).await).unwrap(), csv);
    // Someone else's browser is refused the same link.
    let other = app.client.get(app.url(&href)).bearer_auth(&user.access).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    root.set_window_size(375, 900).await.unwrap();
    fits_and_is_labelled(&root, 375).await;
    root.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_page_draws_its_charts_and_lists_usage_after_a_chat() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![Step::reply(&["one ", "two ", "three"]), Step::reply(&["A title"])]).await;
    let (app, admin) = app_with_model(Backend::Sqlite, &fake).await;
    let user = app.signup("stats@example.com").await;
    let res = app.post_json("/api/llm/chat/", &json!({"message": "count to three"}), Some(&user.access)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let job_id = res.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    app.wait_for_status(&admin.access, &job_id, "succeeded").await;

    let root = browser(&driver, 1440).await;
    sign_in(&root, &app, ADMIN.0, ADMIN.1).await;
    root.goto(&app.url("/admin/stats")).await.unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let bar = |chart: &str| format!("document.querySelector('#{chart} svg g.bar[data-day=\"{today}\"]')");
    let messages_bar = bar("messages-chart");
    until(
        &root,
        "today's bar of messages",
        &format!("{messages_bar} && {messages_bar}.querySelector('rect').getAttribute('height') > 0"),
    )
    .await;
    let bars =
        root.execute("return document.querySelectorAll('#messages-chart svg g.bar').length", vec![]).await.unwrap();
    assert_eq!(bars, 30, "one bar per day of the range, days without messages too");
    let label =
        root.execute(&format!("return {messages_bar}.querySelector('title').textContent"), vec![]).await.unwrap();
    assert_eq!(label, format!("{today}: 2 messages"));
    let tokens_bar = bar("tokens-chart");
    let heights = root
        .execute(
            &format!(
                "return [...{tokens_bar}.querySelectorAll('rect')].map(r => Number(r.getAttribute('height')) > 0)"
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(heights, json!([true, true]), "prompt and completion tokens stacked");
    let day = until(&root, "today's row", "[...document.querySelectorAll('#days-body tr')].map(r => [...r.children].map(c => c.textContent).join('|')).join('\\n')").await;
    assert!(
        day.as_str().unwrap().starts_with(&format!("{today}|2|1|1|2|")),
        "the admin and the user joined today: {day}"
    );
    // Usage rows name the account by its email.
    until(&root, "the usage row", "[...document.querySelectorAll('#usage-body tr')].some(r => r.children[1].textContent === 'stats@example.com' && r.children[3].textContent === 'chat' && r.children[6].textContent === '10')").await;
    assert_eq!(root.execute("return document.querySelectorAll('script:not([src])').length", vec![]).await.unwrap(), 0);
    root.set_window_size(375, 900).await.unwrap();
    fits_and_is_labelled(&root, 375).await;
    root.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_link_shows_the_conversation_to_anyone_as_text_until_revoked_and_the_account_exports_its_data() {
    let _one = BROWSER.lock().await;
    let Some(driver) = driver().await else { return };
    let fake = FakeLlm::openai(vec![
        Step::reply(&["Hello **there** <img src=x onerror=window.pwned=1>"]),
        Step::reply(&["<script>window.pwned = 1</script> title"]),
    ])
    .await;
    let (app, _admin) = app_with_model(Backend::Sqlite, &fake).await;
    app.signup("sharer@example.com").await;
    let c = browser(&driver, 375).await;
    sign_in(&c, &app, "sharer@example.com", PASSWORD).await;
    send_message(&c, "<b>bold?</b> hi").await;
    until(&c, "the finished reply", &format!("{LAST_REPLY} && {LAST_REPLY}.dataset.status === 'complete'")).await;
    until(&c, "the generated title", "document.getElementById('chat-title').textContent.startsWith('<script>')").await;

    click(&c, "#share").await;
    let url = until(
        &c,
        "the share link",
        "!document.getElementById('share-box').hidden && document.getElementById('share-url').value",
    )
    .await;
    let url = url.as_str().unwrap().to_owned();
    assert!(url.starts_with(&app.url("/shared/")), "{url}");
    fits_and_is_labelled(&c, 375).await;

    // Anyone (a browser never signed in) reads it.
    let visitor = browser(&driver, 375).await;
    visitor.goto(&url).await.unwrap();
    let title = until(&visitor, "the shared title", "document.getElementById('shared-title').textContent.includes('title') && document.getElementById('shared-title').textContent").await;
    assert_eq!(title, "<script>window.pwned = 1</script> title");
    let texts = until(&visitor, "the messages", "document.querySelectorAll('#messages li').length === 2 && [...document.querySelectorAll('#messages .body')].map(b => b.textContent)").await;
    assert_eq!(texts, json!(["<b>bold?</b> hi", "Hello there <img src=x onerror=window.pwned=1>"]));
    let strong = visitor
        .execute("return document.querySelector('#messages li.assistant strong').textContent", vec![])
        .await
        .unwrap();
    assert_eq!(strong, "there", "replies are rendered as Markdown");
    let injected = visitor
        .execute("return [window.pwned === undefined, document.querySelectorAll('main script, main img, main b').length, document.querySelectorAll('script:not([src])').length]", vec![])
        .await
        .unwrap();
    assert_eq!(injected, json!([true, 0, 0]), "nothing shared is markup");
    assert_eq!(visitor.execute("return document.body.dataset.signedIn === undefined", vec![]).await.unwrap(), true);
    fits_and_is_labelled(&visitor, 375).await;
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-robots-tag"], "noindex");
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");

    // The account page lists the link; revoking it ends it for the visitor too.
    c.goto(&app.url("/account")).await.unwrap();
    let share_id = url.rsplit('/').next().unwrap().to_owned();
    let row = format!("#shares-body tr[data-share-id=\"{share_id}\"]");
    let listed = until(
        &c,
        "the listed link",
        &format!("document.querySelector('{row}') && document.querySelector('{row} td').textContent"),
    )
    .await;
    assert_eq!(listed, "<script>window.pwned = 1</script> title");
    click(&c, &format!("{row} button.revoke")).await;
    until(&c, "no links left", "document.querySelectorAll('#shares-body tr').length === 0").await;
    visitor.refresh().await.unwrap();
    until(
        &visitor,
        "the dead link",
        "document.getElementById('shared-title').textContent === 'This link does not work'",
    )
    .await;

    // One's data: the export's job is followed until its zip's link shows.
    click(&c, "#data-export").await;
    let href = until(
        &c,
        "the data download link",
        "document.getElementById('data-download') && document.getElementById('data-download').getAttribute('href')",
    )
    .await;
    let fetched = c
        .execute_async(
            "const [url, done] = [arguments[0], arguments[arguments.length - 1]];
             fetch(url, {credentials: 'same-origin'}).then(async r => done([r.status, r.headers.get('content-type'),
               new Uint8Array(await r.arrayBuffer()).slice(0, 2).join(',')]));",
            vec![href.clone()],
        )
        .await
        .unwrap();
    assert_eq!(fetched, json!([200, "application/zip", "80,75"]), "a zip ('PK') for {href}");
    fits_and_is_labelled(&c, 375).await;
    visitor.close().await.unwrap();
    c.close().await.unwrap();
}
