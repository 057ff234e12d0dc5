//! The SQLite claim's pick, in a test binary of its own: its pool's `tracing` events would
//! otherwise race the pool-wait metric test in the library's unit tests (the callsites'
//! interest is process-wide).

use parley_shared::Db;
use parley_shared::ids::JobId;
use parley_shared::jobs::{JobStatus, Noop, QueueName};
use parley_shared::store::jobs::{enqueue, start_due_in_one_script};
use parley_shared::time::now_ms;

/// A migrated SQLite database in a temporary directory (kept while the guard lives).
async fn migrated_sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}", dir.path().join("test.db").display()), 2).await.unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

#[tokio::test]
async fn a_claim_picked_under_the_write_lock_takes_due_jobs_oldest_first_up_to_its_limit() {
    let (db, _dir) = migrated_sqlite().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(enqueue(&db.writer, None, &Noop::default()).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // The first two due at the same moment: the tie is broken the same way by both
    // statements of the claim, so the one it starts is the one that gets the event.
    sqlx::query("update parley_jobs set run_after = (select min(run_after) from parley_jobs) where id = $1")
        .bind(ids[1].to_string())
        .execute(&db.writer)
        .await
        .unwrap();
    let tied = start_due_in_one_script(&db, QueueName::Default, 1, 30_000).await.unwrap();
    assert_eq!(tied.len(), 1);
    let tied_event: Vec<String> =
        sqlx::query_scalar("select job_id from job_events").fetch_all(&db.pool).await.unwrap();
    assert_eq!(tied_event, vec![tied[0].job.id.to_string()]);
    assert_eq!(tied[0].job.id, ids[0], "ties go to the earlier row");
    sqlx::query("update parley_jobs set status = 'queued', attempts = 0 where id = $1")
        .bind(ids[0].to_string())
        .execute(&db.writer)
        .await
        .unwrap();
    sqlx::query("delete from job_events").execute(&db.writer).await.unwrap();
    // Not due yet: left alone.
    let later = enqueue(&db.writer, None, &Noop::default()).await.unwrap();
    sqlx::query("update parley_jobs set run_after = $2 where id = $1")
        .bind(later.to_string())
        .bind(now_ms() + 60_000)
        .execute(&db.writer)
        .await
        .unwrap();
    // A due job with a cancel request is not started (nor given an event); one retrying
    // with an event stream already continues it.
    let cancelled = enqueue(&db.writer, None, &Noop::default()).await.unwrap();
    sqlx::query("update parley_jobs set cancel_requested = true, run_after = 0 where id = $1")
        .bind(cancelled.to_string())
        .execute(&db.writer)
        .await
        .unwrap();
    let retried = enqueue(&db.writer, None, &Noop::default()).await.unwrap();
    sqlx::query("update parley_jobs set status = 'retrying', attempts = 2, run_after = $2 where id = $1")
        .bind(retried.to_string())
        .bind(now_ms() + 60_000)
        .execute(&db.writer)
        .await
        .unwrap();
    for seq in 1..=3 {
        sqlx::query("insert into job_events (job_id, seq, event, data, created_at) values ($1, $2, 'status', '{}', 0)")
            .bind(retried.to_string())
            .bind(seq)
            .execute(&db.writer)
            .await
            .unwrap();
    }
    let other_queue = start_due_in_one_script(&db, QueueName::Interactive, 10, 30_000).await.unwrap();
    let first = start_due_in_one_script(&db, QueueName::Default, 2, 30_000).await.unwrap();
    let rest = start_due_in_one_script(&db, QueueName::Default, 10, 30_000).await.unwrap();
    assert!(other_queue.is_empty());
    assert_eq!(first.len(), 2);
    let mut first_ids: Vec<JobId> = first.iter().map(|s| s.job.id).collect();
    first_ids.sort();
    assert_eq!(first_ids, ids[..2]);
    assert_eq!(rest.iter().map(|s| s.job.id).collect::<Vec<_>>(), vec![ids[2]]);
    assert!(first.iter().chain(&rest).all(|s| s.job.status == JobStatus::Running && s.job.attempts == 1 && s.seq == 1));
    let events: Vec<(String, i64, String)> = sqlx::query_as(
        "select job_id, seq, data from job_events where event = 'status' and data != '{}' order by job_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut expected: Vec<(String, i64, String)> =
        ids.iter().map(|id| (id.to_string(), 1, r#"{"status":"running","attempt":1}"#.to_owned())).collect();
    expected.sort();
    assert_eq!(events, expected);

    sqlx::query("update parley_jobs set run_after = 0 where id = $1")
        .bind(retried.to_string())
        .execute(&db.writer)
        .await
        .unwrap();
    let again = start_due_in_one_script(&db, QueueName::Default, 10, 30_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].job.id, again[0].job.attempts, again[0].seq), (retried, 3, 4));
    let data: String = sqlx::query_scalar("select data from job_events where job_id = $1 and seq = 4")
        .bind(retried.to_string())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(data, r#"{"status":"running","attempt":3}"#);
    let cancelled_status: String = sqlx::query_scalar("select status from parley_jobs where id = $1")
        .bind(cancelled.to_string())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(cancelled_status, "queued");
    assert!(start_due_in_one_script(&db, QueueName::Default, 10, 30_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_and_its_audit_entry_are_written_together_or_not_at_all() {
    use parley_shared::audit::{AuditAction, AuditEvent};
    use parley_shared::store::jobs::enqueue_recorded;
    let (db, _dir) = migrated_sqlite().await;
    let event = |job: JobId| {
        let mut event = AuditEvent::new(AuditAction::AdminJobCreate, "127.0.0.1", "test");
        event.details = Some(serde_json::json!({"job_id": job}));
        event
    };
    let count = |table: &'static str| {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(&db.pool)
                .await
                .unwrap();
            n
        }
    };
    let id = enqueue_recorded(&db, None, &Noop::default(), event).await.unwrap();
    assert_eq!((count("parley_jobs").await, count("audit_events").await), (1, 1));
    let details: String = sqlx::query_scalar("select details from audit_events").fetch_one(&db.pool).await.unwrap();
    assert!(details.contains(&id.to_string()), "{details}");
    // The entry's insert fails: the job is not written either, and the writer is left
    // without an open transaction (the next writes go through).
    sqlx::query("alter table audit_events rename to audit_events_gone").execute(&db.writer).await.unwrap();
    assert!(enqueue_recorded(&db, None, &Noop::default(), event).await.is_err());
    assert_eq!(count("parley_jobs").await, 1);
    let mut tx = db.begin_write().await.unwrap();
    enqueue(&mut *tx, None, &Noop::default()).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query("alter table audit_events_gone rename to audit_events").execute(&db.writer).await.unwrap();
    enqueue_recorded(&db, None, &Noop::default(), event).await.unwrap();
    assert_eq!((count("parley_jobs").await, count("audit_events").await), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_write_whose_caller_goes_away_leaves_the_writer_usable() {
    // A client that hangs up drops its request while the job is being written: the job and
    // its entry are written both or neither, and the writer takes the next write as usual.
    use parley_shared::audit::{AuditAction, AuditEvent};
    use parley_shared::store::jobs::enqueue_recorded;
    let (db, _dir) = migrated_sqlite().await;
    // The job's insert takes a while, so the caller is gone before the script's next statement.
    sqlx::query(
        "create trigger slow_insert after insert on parley_jobs begin
             select count(*) from (with recursive c(x) as (select 1 union all select x + 1 from c where x < 2000000)
                                   select x from c);
         end",
    )
    .execute(&db.writer)
    .await
    .unwrap();
    let event = |_job: JobId| AuditEvent::new(AuditAction::AdminJobCreate, "127.0.0.1", "test");
    let noop = Noop::default();
    let write = enqueue_recorded(&db, None, &noop, event);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(20), write).await.is_err(),
        "the write was quicker than the test needs"
    );
    sqlx::query("drop trigger slow_insert").execute(&db.writer).await.unwrap();
    let mut tx = db.begin_write().await.unwrap();
    enqueue(&mut *tx, None, &noop).await.unwrap();
    tx.commit().await.unwrap();
    let jobs: i64 = sqlx::query_scalar("select count(*) from parley_jobs").fetch_one(&db.pool).await.unwrap();
    let entries: i64 = sqlx::query_scalar("select count(*) from audit_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!((jobs, entries), (2, 1));
}

#[tokio::test]
async fn a_message_posted_in_one_script_keeps_the_limit_of_replies_in_progress() {
    use parley_shared::ids::{ChatSessionId, LlmConfigId, MessageId, UserId};
    use parley_shared::jobs::LlmCompletion;
    use parley_shared::store::chat::{NewPost, SessionWrite, post_in_one_script};
    let (db, _dir) = migrated_sqlite().await;
    let user = UserId::new();
    sqlx::query(
        "insert into users (id, email, email_lower, password_hash, date_joined, created_at, updated_at)
         values ($1, 'a@example.com', 'a@example.com', 'x', 0, 0, 0)",
    )
    .bind(user.to_string())
    .execute(&db.writer)
    .await
    .unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool).await.unwrap() }
    };
    let (session, config) = (ChatSessionId::new(), LlmConfigId::new());
    let post = |write: SessionWrite<'static>| {
        let (job, reply) = (JobId::new(), MessageId::new());
        let payload = Box::leak(Box::new(LlmCompletion { message_id: reply, session_id: Some(session) }));
        NewPost {
            user,
            session,
            session_write: write,
            job: payload,
            job_id: job,
            question: MessageId::new(),
            text: "hello",
            reply,
            model: "m",
            max_active_replies: 2,
        }
    };
    // The config does not exist (deleted meanwhile): the session is written without one.
    assert!(post_in_one_script(&db, &post(SessionWrite::Create { config, title: "t" })).await.unwrap());
    assert!(post_in_one_script(&db, &post(SessionWrite::Touch)).await.unwrap());
    assert_eq!(count("select count(*) from chat_messages").await, 4);
    // Two replies in progress: the third writes nothing, not even its session's time.
    let updated: i64 = count("select updated_at from chat_sessions").await;
    assert!(!post_in_one_script(&db, &post(SessionWrite::SetConfig(config))).await.unwrap());
    assert_eq!(count("select count(*) from parley_jobs").await, 2);
    assert_eq!(count("select count(*) from chat_messages").await, 4);
    assert_eq!(count("select updated_at from chat_sessions").await, updated);
    // One finished: there is room again.
    sqlx::query("update parley_jobs set status = 'succeeded' where id = (select min(id) from parley_jobs)")
        .execute(&db.writer)
        .await
        .unwrap();
    assert!(post_in_one_script(&db, &post(SessionWrite::Touch)).await.unwrap());
    assert_eq!(count("select count(*) from chat_messages where job_id is not null").await, 3);
    // The session became another user's (as if the reads had found another's): not written to.
    sqlx::query(
        "insert into users (id, email, email_lower, password_hash, date_joined, created_at, updated_at)
         values ('someone else', 'b@example.com', 'b@example.com', 'x', 0, 0, 0)",
    )
    .execute(&db.writer)
    .await
    .unwrap();
    sqlx::query("update chat_sessions set user_id = 'someone else'").execute(&db.writer).await.unwrap();
    let updated: i64 = count("select updated_at from chat_sessions").await;
    assert!(!post_in_one_script(&db, &post(SessionWrite::Touch)).await.unwrap());
    assert!(!post_in_one_script(&db, &post(SessionWrite::SetConfig(config))).await.unwrap());
    assert_eq!(count("select updated_at from chat_sessions").await, updated);
    // A session deleted meanwhile: nothing written either.
    sqlx::query("delete from chat_sessions").execute(&db.writer).await.unwrap();
    assert!(!post_in_one_script(&db, &post(SessionWrite::Touch)).await.unwrap());
    assert_eq!(count("select count(*) from parley_jobs").await, 3);
    assert_eq!(count("select count(*) from chat_messages").await, 0);
}

#[tokio::test]
async fn stream_events_of_several_jobs_are_stored_together_and_a_failing_stream_stops_alone() {
    use parley_shared::events::{EventBus, EventQueue, StreamWriter};
    use parley_shared::store::job_events::EventType;
    let (db, _dir) = migrated_sqlite().await;
    let (bus, queue) = (EventBus::local(), EventQueue::default());
    let a = enqueue(&db.writer, None, &Noop::default()).await.unwrap();
    let b = enqueue(&db.writer, None, &Noop::default()).await.unwrap();
    let mut watch_b = bus.subscribe(b);
    let mut wa = StreamWriter::open(&db, &bus, &queue, a).await.unwrap();
    let mut wb = StreamWriter::open(&db, &bus, &queue, b).await.unwrap();
    // Another attempt took `a`'s next seq meanwhile (this one lost the job).
    sqlx::query("insert into job_events (job_id, seq, event, data, created_at) values ($1, 1, 'status', '{}', 0)")
        .bind(a.to_string())
        .execute(&db.writer)
        .await
        .unwrap();
    for n in 0..3 {
        wa.emit(EventType::Delta, serde_json::json!({"text": n})).unwrap();
        wb.emit(EventType::Delta, serde_json::json!({"text": n})).unwrap();
    }
    let (closed_a, closed_b) = tokio::join!(wa.close(), wb.close());
    assert!(closed_a.is_err(), "the stream that lost its seq reports it");
    closed_b.unwrap();
    let seqs = |job: JobId| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select seq from job_events where job_id = $1 order by seq")
                .bind(job.to_string())
                .fetch_all(&db.pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(seqs(a).await, vec![1], "nothing of the failed stream is stored");
    assert_eq!(seqs(b).await, vec![1, 2, 3]);
    // `b`'s events were published once stored, in order.
    for seq in 1..=3 {
        assert_eq!(watch_b.try_recv().unwrap().seq, seq);
    }
    // A writer dropped without closing (its attempt cut off) stores nothing more.
    let mut wb = StreamWriter::open(&db, &bus, &queue, b).await.unwrap();
    let mut wc = StreamWriter::open(&db, &bus, &queue, a).await.unwrap();
    wc.emit(EventType::Delta, serde_json::json!({"text": "c"})).unwrap();
    wb.emit(EventType::Delta, serde_json::json!({"text": "late"})).unwrap();
    drop(wb);
    wc.close().await.unwrap();
    assert_eq!(seqs(b).await, vec![1, 2, 3]);
    assert_eq!(seqs(a).await, vec![1, 2]);
    // The database cannot be reached: every stream of the batch stops.
    let mut wa = StreamWriter::open(&db, &bus, &queue, a).await.unwrap();
    let mut wb = StreamWriter::open(&db, &bus, &queue, b).await.unwrap();
    db.writer.close().await;
    wa.emit(EventType::Delta, serde_json::json!({"text": "d"})).unwrap();
    wb.emit(EventType::Delta, serde_json::json!({"text": "d"})).unwrap();
    let (closed_a, closed_b) = tokio::join!(wa.close(), wb.close());
    assert!(closed_a.is_err() && closed_b.is_err());
}

#[tokio::test]
async fn successes_written_in_one_script_record_only_attempts_that_still_own_their_job() {
    use parley_shared::store::jobs::{Success, succeed_many_in_one_script};
    let (db, _dir) = migrated_sqlite().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(enqueue(&db.writer, None, &Noop::default()).await.unwrap());
    }
    let started = start_due_in_one_script(&db, QueueName::Default, 10, 30_000).await.unwrap();
    assert_eq!(started.len(), 3);
    let success = |id: JobId, attempt: i64| Success {
        id,
        attempt,
        result: r#"{"n":1}"#.into(),
        data: format!(r#"{{"status":"succeeded","job":"{id}"}}"#),
    };
    // The second's attempt is not the one running (it lost the job); the third is not in the batch.
    let batch = [success(ids[0], 1), success(ids[1], 2)];
    let finished = succeed_many_in_one_script(&db, &batch).await.unwrap();
    assert_eq!(finished.iter().map(|(n, seq, _)| (*n, *seq)).collect::<Vec<_>>(), vec![(0, 2)]);
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("select id, status, result from parley_jobs order by id").fetch_all(&db.pool).await.unwrap();
    let status = |id: JobId| rows.iter().find(|r| r.0 == id.to_string()).cloned().unwrap();
    assert_eq!((status(ids[0]).1.as_str(), status(ids[0]).2.as_deref()), ("succeeded", Some(r#"{"n":1}"#)));
    assert_eq!(status(ids[1]).1, "running");
    assert_eq!(status(ids[2]).1, "running");
    let done: Vec<(String, i64, String)> =
        sqlx::query_as("select job_id, seq, data from job_events where event = 'done'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(done, vec![(ids[0].to_string(), 2, batch[0].data.clone())]);
    // Reported again: nothing more is written.
    assert!(succeed_many_in_one_script(&db, &batch[..1]).await.unwrap().is_empty());
    let events: i64 = sqlx::query_scalar("select count(*) from job_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(events, 4);
}
