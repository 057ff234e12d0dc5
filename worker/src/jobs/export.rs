//! `export`: writes an export file on the bulk queue. Rows are read a page at a time and
//! written straight to a scratch file (a zip, CSV or JSON), so memory stays flat whatever
//! the size; `progress` events say how many rows or sessions are done, of how many. The file
//! is then handed to the export storage under a server-made name and expires after
//! `PARLEY_EXPORT_TTL_HOURS`.

use super::{CancelSignal, JobError, Outcome, RunJob};
use crate::WorkerContext;
use chrono::{NaiveDate, Utc};
use parley_shared::audit::{AuditAction, AuditResult};
use parley_shared::avatar::avatar_files;
use parley_shared::events::StreamWriter;
use parley_shared::exports::{self, ExportFilters, csv_cell};
use parley_shared::ids::{AuditEventId, ChatSessionId, MessageId, UserId};
use parley_shared::jobs::ExportData;
use parley_shared::store::audit::{self, AuditFilter};
use parley_shared::store::chat::{self, Session};
use parley_shared::store::exports::{self as export_store, Export, ExportFormat, ExportKind};
use parley_shared::store::job_events::EventType;
use parley_shared::store::jobs::Job;
use parley_shared::store::usage::{self, Period, UsageFilter};
use parley_shared::store::users::{self, UserFilter};
use serde_json::{Value, json};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Rows read per query.
const PAGE: i64 = 500;

impl RunJob for ExportData {
    async fn run(self, ctx: &WorkerContext, job: &Job, cancel: CancelSignal) -> Outcome {
        export(self, ctx, job, cancel).await.into()
    }
}

async fn export(p: ExportData, ctx: &WorkerContext, job: &Job, mut cancel: CancelSignal) -> Result<Outcome, JobError> {
    let store = exports::store(&ctx.config);
    // Until a schedule does it, each export sweeps the files that expired.
    if let Err(e) = parley_shared::usecases::exports::prune_expired(&ctx.db, store.as_ref()).await {
        tracing::warn!(error = %e, "deleting expired exports");
    }
    let Some(export) = export_store::get(&ctx.db.pool, p.export_id).await? else {
        return Ok(Outcome::Succeeded(json!({"skipped": "the export was deleted"})));
    };
    if export.storage_key.is_some() {
        return Ok(Outcome::Succeeded(result(&export)));
    }
    let scratch = store.scratch_dir();
    tokio::fs::create_dir_all(&scratch).await.map_err(anyhow::Error::from)?;
    let path = scratch.join(parley_shared::media::new_key("", "part"));
    let mut events = ctx.open_stream(job.id).await?;
    // A cancel stops the writing between two rows; the partial file is removed.
    let written = tokio::select! {
        written = write(ctx, &export, &path, &mut events) => Some(written),
        _ = async {
            if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
                // No cancel can come any more: the writing decides.
                std::future::pending::<()>().await;
            }
        } => None,
    };
    let closed = events.close().await;
    if !matches!(written, Some(Ok(()))) || closed.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    let Some(written) = written else {
        tracing::info!(export.id = %export.id, "export cancelled; its partial file was removed");
        return Ok(Outcome::Cancelled);
    };
    written?;
    closed?;
    let size = tokio::fs::metadata(&path).await.map_err(anyhow::Error::from)?.len();
    let key = parley_shared::media::new_key("exports", export.format.as_str());
    store.put_file(&key, &path).await?;
    let file_name =
        format!("parley-{}-{}.{}", export.kind.as_str(), Utc::now().format("%Y%m%d-%H%M%S"), export.format.as_str());
    let ttl_ms = i64::try_from(ctx.config.export_ttl_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    let expires_at = parley_shared::time::now_ms().saturating_add(ttl_ms);
    export_store::set_file(&ctx.db.writer, export.id, &key, &file_name, size as i64, expires_at).await?;
    let export =
        export_store::get(&ctx.db.pool, export.id).await?.ok_or_else(|| JobError::fatal("the export was deleted"))?;
    tracing::info!(export.id = %export.id, size_bytes = size, "export written");
    Ok(Outcome::Succeeded(result(&export)))
}

/// The job's result: where to download the file, and until when.
fn result(export: &Export) -> Value {
    json!({
        "export_id": export.id,
        "download_url": format!("/api/exports/{}/download/", export.id),
        "file_name": export.file_name,
        "size_bytes": export.size_bytes,
        "expires_at": export.expires_at,
    })
}

async fn write(ctx: &WorkerContext, export: &Export, path: &Path, events: &mut StreamWriter) -> Result<(), JobError> {
    let filters: ExportFilters =
        serde_json::from_str(&export.filters).map_err(|e| JobError::fatal(format!("malformed filters: {e}")))?;
    match export.kind {
        ExportKind::Personal => personal(ctx, export.user_id, path, events).await,
        ExportKind::Users => users_list(ctx, &filters, export.format, path, events).await,
        ExportKind::Usage => usage_list(ctx, &filters, export.format, path, events).await,
        ExportKind::Audit => audit_list(ctx, &filters, export.format, path, events).await,
    }
}

fn progress(events: &mut StreamWriter, done: i64, total: i64) -> Result<(), JobError> {
    events.emit(EventType::Progress, json!({"done": done, "total": total}))?;
    Ok(())
}

fn io(e: impl Into<anyhow::Error>) -> JobError {
    JobError::Retryable { error: e.into(), retry_after: None }
}

/// One's own data in a zip: `profile.json`, `sessions/<id>.json` and `.md`, the avatar and
/// `activity.json`. Progress counts sessions.
async fn personal(
    ctx: &WorkerContext,
    user_id: UserId,
    path: &Path,
    events: &mut StreamWriter,
) -> Result<(), JobError> {
    let pool = &ctx.db.pool;
    let Some(user) = users::by_id(pool, user_id).await? else { return Err(JobError::fatal("the account was deleted")) };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let profile = json!({
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "display_name": user.display_name,
        "bio": user.bio,
        "email_verified": user.email_verified,
        "is_admin": user.is_admin,
        "date_joined": user.date_joined,
        "last_login": user.last_login,
    });
    zip.start_file("profile.json", options).map_err(io)?;
    serde_json::to_writer_pretty(&mut zip, &profile).map_err(io)?;

    let total = export_store::count_sessions(pool, user.id).await?;
    let mut done = 0;
    progress(events, done, total)?;
    let mut before: Option<ChatSessionId> = None;
    loop {
        let sessions = chat::list_sessions(pool, user.id, None, None, before, 100).await?;
        let Some(last) = sessions.last() else { break };
        before = Some(last.id);
        for session in &sessions {
            session_files(ctx, &mut zip, options, session).await?;
            done += 1;
            progress(events, done, total)?;
        }
    }

    if let Some(key) = &user.avatar_key {
        let [large, _] = avatar_files(key);
        if let Some(bytes) = ctx.media.get(&large).await? {
            zip.start_file("avatar.png", options).map_err(io)?;
            zip.write_all(&bytes).map_err(io)?;
        }
    }

    zip.start_file("activity.json", options).map_err(io)?;
    zip.write_all(b"[").map_err(io)?;
    let filter = AuditFilter { involving: Some(user.id), ..AuditFilter::default() };
    let (mut cursor, mut first): (Option<AuditEventId>, bool) = (None, true);
    loop {
        let entries = audit::list(pool, &filter, cursor, PAGE).await?;
        let Some(last) = entries.last() else { break };
        cursor = Some(last.id);
        for e in &entries {
            if !std::mem::take(&mut first) {
                zip.write_all(b",\n").map_err(io)?;
            }
            serde_json::to_writer(&mut zip, &audit_json(e)).map_err(io)?;
        }
    }
    zip.write_all(b"]\n").map_err(io)?;
    zip.finish().map_err(io)?.flush().map_err(io)?;
    Ok(())
}

/// A session as `sessions/<id>.json` and `sessions/<id>.md`, its messages read a page at a
/// time (twice: once per file).
async fn session_files<W: Write + std::io::Seek>(
    ctx: &WorkerContext,
    zip: &mut zip::ZipWriter<W>,
    options: zip::write::SimpleFileOptions,
    session: &Session,
) -> Result<(), JobError> {
    zip.start_file(format!("sessions/{}.json", session.id), options).map_err(io)?;
    let head = exports::session_json(session).to_string();
    // The head object, opened to take its messages.
    zip.write_all(head.trim_end_matches('}').as_bytes()).map_err(io)?;
    zip.write_all(b",\"messages\":[").map_err(io)?;
    let mut first = true;
    for_each_message(ctx, session.id, |m| {
        if !std::mem::take(&mut first) {
            zip.write_all(b",")?;
        }
        serde_json::to_writer(&mut *zip, &exports::message_json(m))?;
        Ok(())
    })
    .await?;
    zip.write_all(b"]}\n").map_err(io)?;

    zip.start_file(format!("sessions/{}.md", session.id), options).map_err(io)?;
    zip.write_all(exports::session_markdown(session).as_bytes()).map_err(io)?;
    for_each_message(ctx, session.id, |m| Ok(zip.write_all(exports::message_markdown(m).as_bytes())?)).await
}

async fn for_each_message(
    ctx: &WorkerContext,
    session: ChatSessionId,
    mut f: impl FnMut(&chat::Message) -> anyhow::Result<()>,
) -> Result<(), JobError> {
    let mut after: Option<MessageId> = None;
    loop {
        let messages = chat::list_messages(&ctx.db.pool, session, after, PAGE).await?;
        let Some(last) = messages.last() else { return Ok(()) };
        after = Some(last.id);
        for m in &messages {
            f(m).map_err(io)?;
        }
    }
}

fn audit_json(e: &audit::AuditEntry) -> Value {
    json!({
        "id": e.id,
        "occurred_at": e.created_at,
        "actor_id": e.actor_id,
        "target_id": e.target_id,
        "action": e.action.as_str(),
        "result": e.result.as_str(),
        "client_address": e.ip,
        "user_agent": e.user_agent,
        "details": e.details.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
    })
}

/// Rows to a CSV (with a header, each cell escaped against formula injection) or a JSON
/// array of objects, written as they come.
enum Rows {
    Csv(Box<csv::Writer<BufWriter<std::fs::File>>>),
    Json { out: BufWriter<std::fs::File>, first: bool },
}

impl Rows {
    fn create(format: ExportFormat, path: &Path, columns: &[&str]) -> Result<Self, JobError> {
        let out = BufWriter::new(std::fs::File::create(path).map_err(io)?);
        match format {
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(columns).map_err(io)?;
                Ok(Rows::Csv(Box::new(w)))
            }
            ExportFormat::Json => {
                let mut out = out;
                out.write_all(b"[").map_err(io)?;
                Ok(Rows::Json { out, first: true })
            }
            ExportFormat::Zip => Err(JobError::fatal("a list is exported as CSV or JSON")),
        }
    }

    fn row(&mut self, row: &[(&str, Value)]) -> Result<(), JobError> {
        match self {
            Rows::Csv(w) => {
                let cells = row.iter().map(|(_, v)| match v {
                    Value::Null => String::new(),
                    Value::String(s) => csv_cell(s).into_owned(),
                    other => csv_cell(&other.to_string()).into_owned(),
                });
                w.write_record(cells).map_err(io)
            }
            Rows::Json { out, first } => {
                if !std::mem::take(first) {
                    out.write_all(b",\n").map_err(io)?;
                }
                let object: serde_json::Map<String, Value> =
                    row.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
                serde_json::to_writer(&mut *out, &object).map_err(io)
            }
        }
    }

    fn finish(self) -> Result<(), JobError> {
        match self {
            Rows::Csv(mut w) => w.flush().map_err(io),
            Rows::Json { mut out, .. } => {
                out.write_all(b"]\n").map_err(io)?;
                out.flush().map_err(io)
            }
        }
    }
}

/// Reports progress every this many rows.
const PROGRESS_EVERY: i64 = 1000;

async fn users_list(
    ctx: &WorkerContext,
    f: &ExportFilters,
    format: ExportFormat,
    path: &Path,
    events: &mut StreamWriter,
) -> Result<(), JobError> {
    let search = f.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let filter = UserFilter { search, is_active: f.is_active, is_admin: f.is_admin };
    let total = export_store::count_users(&ctx.db.pool, &filter).await?;
    let columns = [
        "id",
        "email",
        "username",
        "display_name",
        "is_active",
        "is_admin",
        "email_verified",
        "date_joined",
        "last_login",
    ];
    let mut rows = Rows::create(format, path, &columns)?;
    let (mut before, mut done) = (None, 0);
    progress(events, 0, total)?;
    loop {
        let page = users::list(&ctx.db.pool, &filter, before, PAGE).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for u in &page {
            rows.row(&[
                ("id", json!(u.id)),
                ("email", json!(u.email)),
                ("username", json!(u.username)),
                ("display_name", json!(u.display_name)),
                ("is_active", json!(u.is_active)),
                ("is_admin", json!(u.is_admin)),
                ("email_verified", json!(u.email_verified)),
                ("date_joined", json!(u.date_joined)),
                ("last_login", json!(u.last_login)),
            ])?;
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                progress(events, done, total)?;
            }
        }
    }
    rows.finish()?;
    progress(events, done, total)
}

fn day(d: Option<NaiveDate>, default: NaiveDate) -> String {
    d.unwrap_or(default).format("%Y-%m-%d").to_string()
}

async fn usage_list(
    ctx: &WorkerContext,
    f: &ExportFilters,
    format: ExportFormat,
    path: &Path,
    events: &mut StreamWriter,
) -> Result<(), JobError> {
    let (from, to) =
        (day(f.from, NaiveDate::MIN), day(f.to, NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX)));
    let period = if f.group_by.as_deref() == Some("month") { Period::Month } else { Period::Day };
    let filter = UsageFilter { user: f.user_id, model: f.model.as_deref(), from: &from, to: &to, period };
    let total = usage::count_grouped(&ctx.db.pool, &filter).await?;
    let columns =
        ["period", "user_id", "model", "kind", "prompt_tokens", "completion_tokens", "total_tokens", "requests"];
    let mut rows = Rows::create(format, path, &columns)?;
    let (mut after, mut done): (Option<String>, i64) = (None, 0);
    progress(events, 0, total)?;
    loop {
        let page = usage::grouped(&ctx.db.pool, &filter, after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.position.clone());
        for r in &page {
            rows.row(&[
                ("period", json!(r.period)),
                ("user_id", json!(r.user_id)),
                ("model", json!(r.model)),
                ("kind", json!(r.kind)),
                ("prompt_tokens", json!(r.prompt_tokens)),
                ("completion_tokens", json!(r.completion_tokens)),
                ("total_tokens", json!(r.prompt_tokens + r.completion_tokens)),
                ("requests", json!(r.requests)),
            ])?;
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                progress(events, done, total)?;
            }
        }
    }
    rows.finish()?;
    progress(events, done, total)
}

/// The later of two optional bounds (either alone when the other is unset).
fn later(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

/// The earlier of two optional bounds (either alone when the other is unset).
fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn audit_list(
    ctx: &WorkerContext,
    f: &ExportFilters,
    format: ExportFormat,
    path: &Path,
    events: &mut StreamWriter,
) -> Result<(), JobError> {
    let start_of = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis());
    let filter = AuditFilter {
        actor: f.actor_id,
        target: f.target_id,
        action: f.action.as_deref().and_then(AuditAction::parse),
        result: f.result.clone().and_then(|r| AuditResult::try_from(r).ok()),
        since: later(f.from.and_then(start_of), f.since.map(|t| t.timestamp_millis())),
        until: earlier(f.to.and_then(|d| d.succ_opt()).and_then(start_of), f.until.map(|t| t.timestamp_millis())),
        ..AuditFilter::default()
    };
    // An action that does not exist matches nothing.
    let matches_nothing = f.action.is_some() && filter.action.is_none();
    let total = if matches_nothing { 0 } else { export_store::count_audit(&ctx.db.pool, &filter).await? };
    let columns =
        ["id", "occurred_at", "actor_id", "target_id", "action", "result", "client_address", "user_agent", "details"];
    let mut rows = Rows::create(format, path, &columns)?;
    let (mut cursor, mut done): (Option<AuditEventId>, i64) = (None, 0);
    progress(events, 0, total)?;
    loop {
        let page = if matches_nothing { Vec::new() } else { audit::list(&ctx.db.pool, &filter, cursor, PAGE).await? };
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        for e in &page {
            let Value::Object(entry) = audit_json(e) else { continue };
            let row: Vec<(&str, Value)> =
                columns.iter().map(|c| (*c, entry.get(*c).cloned().unwrap_or(Value::Null))).collect();
            rows.row(&row)?;
            done += 1;
            if done % PROGRESS_EVERY == 0 {
                progress(events, done, total)?;
            }
        }
    }
    rows.finish()?;
    progress(events, done, total)
}
