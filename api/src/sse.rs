//! A job's event stream as Server-Sent Events, resumable, for any route that answers one.

use crate::state::AppState;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use parley_shared::ids::JobId;
use parley_shared::store::job_events::{self, JobEvent};
use parley_shared::store::jobs;
use parley_shared::time::now_ms;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

/// How often a stream re-reads the table even without a live notification (covers a lost
/// pub/sub message).
const RESYNC: Duration = Duration::from_secs(1);

/// Whether the request asked for an event stream (`Accept: text/event-stream`): routes that
/// start a job then answer with its stream instead of the job's id.
pub fn wants_stream(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The SSE stream of `job` after `after`: stored events first, then live ones, in `seq`
/// order without gaps or repeats.
pub fn event_stream(state: AppState, job: JobId, after: i64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = tokio_stream::wrappers::ReceiverStream::new(event_feed(state, job, after));
    // Counted as open until the response body is dropped (the client went, or the end).
    let open = parley_shared::metrics::SseStream::open();
    let stream = futures::StreamExt::map(stream, move |event| {
        let _counted = &open;
        Ok(sse_event(&event))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The events of `job` after `after`, in `seq` order without gaps or repeats, until its final
/// event; the feed stops when the receiver is dropped.
pub fn event_feed(state: AppState, job: JobId, after: i64) -> tokio::sync::mpsc::Receiver<JobEvent> {
    let (tx, rx) = tokio::sync::mpsc::channel::<JobEvent>(256);
    let task = async move {
        let mut live = state.bus.subscribe(job);
        let mut last = after;
        let job_key = job.to_string();
        loop {
            let backlog = match job_events::after(&state.db.pool, job, last, 500).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "reading job events failed");
                    return;
                }
            };
            let full = backlog.len() == 500;
            if backlog.is_empty() && stream_over(&state, job, last).await {
                return;
            }
            for event in backlog {
                last = event.seq;
                let terminal = event.is_terminal();
                if tx.send(event).await.is_err() || terminal {
                    return;
                }
            }
            if full {
                continue;
            }
            // Wait for the next event of this job, or resync from the table.
            let deadline = tokio::time::Instant::now() + RESYNC;
            loop {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Ok(Ok(event)) if event.job_id == job_key && event.seq == last + 1 => {
                        last = event.seq;
                        let terminal = event.is_terminal();
                        if tx.send(event).await.is_err() || terminal {
                            return;
                        }
                    }
                    Ok(Ok(event)) if event.job_id == job_key && event.seq > last + 1 => break,
                    Ok(Ok(_)) => {}
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep(RESYNC).await;
                        break;
                    }
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    };
    // In the request's span: its lines carry the request id and the job id.
    tokio::spawn(task.instrument(tracing::info_span!("job_events", job.id = %job)));
    rx
}

/// Whether nothing can follow event `last`: it was the final event (a resume after the
/// end), or the job is gone or ended a while ago without one.
async fn stream_over(state: &AppState, job: JobId, last: i64) -> bool {
    if last > 0 && matches!(job_events::at(&state.db.pool, job, last).await, Ok(Some(e)) if e.is_terminal()) {
        return true;
    }
    // The final event is written just after the status changes: allow for that gap.
    match jobs::get(&state.db.pool, job).await {
        Ok(Some(j)) => j.status.is_terminal() && j.finished_at.is_some_and(|t| now_ms() - t.millis() > 5_000),
        Ok(None) => true,
        Err(_) => false,
    }
}

fn sse_event(event: &JobEvent) -> Event {
    Event::default().id(event.seq.to_string()).event(event.event.as_str()).data(event.data.clone())
}
