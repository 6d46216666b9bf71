//! The play log: where an event is made durable before the client is told so. This is
//! the seam between the embedded default and the at-scale pipeline.
//!
//! - **Embedded**: one writer task applies every waiting batch to the database in one
//!   transaction (group commit: one fsync for many requests) and then answers them all.
//! - **NATS JetStream**: each event is published with message id `user/event_id` and the
//!   client is answered once the server has stored it; the server drops a retry inside
//!   its deduplication window. `segue plays consume` (`consume`) applies the stream to
//!   the database with the same idempotent `play_store::apply` and acks only after the
//!   commit, so a crash anywhere means a redelivery, never a loss or a double count.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, PlayLogKind};
use crate::error::Error;
use crate::play_store::{self, Applied};
use crate::plays::Play;

/// Events applied in one embedded transaction at most (more wait for the next).
const GROUP_MAX: usize = 20_000;

pub enum PlayLog {
    Embedded(mpsc::Sender<Job>),
    Nats(Box<JetStream>),
}

pub struct Job {
    plays: Vec<Play>,
    reply: oneshot::Sender<Result<Vec<Applied>, String>>,
}

/// How far the pipeline is behind: events acknowledged but not yet in the database.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Lag {
    pub events: u64,
    /// Age of the oldest of them, seconds.
    pub seconds: f64,
}

impl Lag {
    pub fn record(&self) {
        metrics::gauge!("plays_pipeline_lag_events").set(self.events as f64);
        metrics::gauge!("plays_pipeline_lag_seconds").set(self.seconds);
    }
}

impl PlayLog {
    pub async fn open(config: &Config, pool: AnyPool) -> Result<PlayLog, Error> {
        match config.plays.log {
            PlayLogKind::Embedded => {
                let (tx, rx) = mpsc::channel(4096);
                tokio::spawn(writer(pool, rx));
                Lag::default().record();
                Ok(PlayLog::Embedded(tx))
            }
            PlayLogKind::Nats => {
                let js = JetStream::connect(config, pool).await?;
                // Keep the lag gauges fresh for /metrics even while no report is asked.
                let watcher = js.clone();
                tokio::spawn(async move {
                    loop {
                        match watcher.lag().await {
                            Ok(lag) => lag.record(),
                            Err(e) => tracing::warn!(error = %e, "cannot read the play pipeline's lag"),
                        }
                        tokio::time::sleep(LAG_EVERY).await;
                    }
                });
                Ok(PlayLog::Nats(Box::new(js)))
            }
        }
    }

    /// Make `plays` durable. Per event: new, a duplicate, or a conflict.
    pub async fn append(&self, plays: Vec<Play>) -> Result<Vec<Applied>, Error> {
        match self {
            PlayLog::Embedded(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send(Job { plays, reply })
                    .await
                    .map_err(|_| Error::Unavailable("the play writer stopped".into()))?;
                answer.await.map_err(|_| Error::Unavailable("the play writer stopped".into()))?.map_err(Error::Database)
            }
            PlayLog::Nats(js) => js.publish(plays).await,
        }
    }

    pub async fn lag(&self) -> Result<Lag, Error> {
        match self {
            PlayLog::Embedded(_) => Ok(Lag::default()),
            PlayLog::Nats(js) => js.lag().await,
        }
    }
}

/// The embedded log's single writer: group commit.
async fn writer(pool: AnyPool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut n = jobs[0].plays.len();
        while n < GROUP_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.plays.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut all = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.plays.len(), job.reply));
            all.extend(job.plays);
        }
        metrics::histogram!("plays_group_commit_events").record(all.len() as f64);
        match play_store::apply(&pool, &all).await {
            Ok(flags) => {
                let mut rest = flags.as_slice();
                for (len, reply) in replies {
                    let (mine, more) = rest.split_at(len.min(rest.len()));
                    rest = more;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = all.len(), "play events not stored");
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// How often the lag gauges are refreshed.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// The JetStream side of the log: publishing (app-api) and the stream both sides share.
#[derive(Clone)]
pub struct JetStream {
    js: jetstream::Context,
    stream: String,
    subject: String,
    pool: AnyPool,
}

fn nats_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("NATS {what}: {e}"))
}

impl JetStream {
    /// Connect and make sure the stream exists: file storage, work-queue retention (a
    /// message stays until the consumer has applied it), the configured dedup window.
    pub async fn connect(config: &Config, pool: AnyPool) -> Result<JetStream, Error> {
        let n = &config.plays.nats;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(&n.url)
            .await
            .map_err(|e| nats_error(&format!("connect to {}", n.url), e))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(jetstream::stream::Config {
            name: n.stream.clone(),
            subjects: vec![n.subject.clone()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(n.duplicate_window_secs),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error(&format!("stream {}", n.stream), e))?;
        Ok(JetStream { js, stream: n.stream.clone(), subject: n.subject.clone(), pool })
    }

    async fn publish(&self, plays: Vec<Play>) -> Result<Vec<Applied>, Error> {
        // Events already in the database are duplicates (or conflicts) whatever the dedup
        // window says (an offline device re-syncing days later).
        let stored = play_store::already_logged(&self.pool, &plays.iter().collect::<Vec<_>>()).await?;
        let mut acks = Vec::with_capacity(plays.len());
        let mut conflicts = Vec::new();
        for p in &plays {
            let verdict = play_store::judge(p, stored.get(&(p.user.clone(), p.event_id.clone())));
            if verdict != Applied::New {
                if verdict == Applied::Conflict {
                    conflicts.push(p);
                }
                acks.push(Err(verdict));
                continue;
            }
            let payload = serde_json::to_vec(p).map_err(|e| Error::BadRequest(e.to_string()))?;
            // The message id covers the payload too: a retry is dropped by the dedup window,
            // while the same id with another payload reaches the consumer, which finds the
            // first one logged and keeps this one as a conflict.
            let msg = jetstream::message::PublishMessage::build()
                .message_id(format!("{}/{}/{}", p.user, p.event_id, play_store::Fingerprint::of(p).digest()))
                .payload(payload.into());
            let ack = self.js.send_publish(self.subject.clone(), msg).await.map_err(|e| nats_error("publish", e))?;
            acks.push(Ok(ack));
        }
        if !conflicts.is_empty() {
            play_store::conflicts_found(&self.pool, &conflicts).await?;
        }
        let mut out = Vec::with_capacity(acks.len());
        for ack in acks {
            out.push(match ack {
                Err(verdict) => verdict,
                Ok(ack) => match ack.await.map_err(|e| nats_error("publish ack", e))?.duplicate {
                    true => Applied::Duplicate,
                    false => Applied::New,
                },
            });
        }
        Ok(out)
    }

    /// With work-queue retention, the messages in the stream are exactly the events not
    /// yet applied.
    pub async fn lag(&self) -> Result<Lag, Error> {
        let stream = self.js.get_stream(&self.stream).await.map_err(|e| nats_error("stream", e))?;
        let info = stream.get_info().await.map_err(|e| nats_error("stream info", e))?;
        let seconds = if info.state.messages == 0 {
            0.0
        } else {
            (time::OffsetDateTime::now_utc() - info.state.first_timestamp).as_seconds_f64().max(0.0)
        };
        Ok(Lag { events: info.state.messages, seconds })
    }
}

/// Apply the stream to the database until `shutdown`: fetch a batch, apply it in one
/// transaction, then ack it. Serves `/metrics` and `/healthz` on
/// `plays.nats.consumer_listen`.
pub async fn consume(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
    let listener = segue_core::server::bind(config.plays.nats.consumer_listen)
        .await
        .map_err(|e| Error::BadRequest(format!("cannot listen on {}: {e}", config.plays.nats.consumer_listen)))?;
    let pool = crate::catalog::open(&config.database).await?;
    let js = JetStream::connect(&config, pool.clone()).await?;
    let n = &config.plays.nats;
    let stream = js.js.get_stream(&n.stream).await.map_err(|e| nats_error("stream", e))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &n.consumer,
            jetstream::consumer::pull::Config {
                durable_name: Some(n.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: (n.consumer_batch * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| nats_error(&format!("consumer {}", n.consumer), e))?;
    tracing::info!(
        stream = %n.stream, consumer = %n.consumer,
        database = %segue_core::sql::redact(&config.database), "plays consumer up"
    );

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let metrics_server = tokio::spawn({
        let mut stop = stop.clone();
        let opts = crate::server_options(&config);
        async move {
            let handler = |req: http::Request<segue_core::server::ReqBody>, _| async move {
                match req.uri().path() {
                    "/metrics" => segue_core::server::metrics_response(),
                    "/healthz" => segue_core::server::health_response(),
                    _ => segue_core::server::json_error(http::StatusCode::NOT_FOUND, "not_found", "no such path"),
                }
            };
            segue_core::server::serve(listener, opts, handler, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        }
    });
    let lag_task = tokio::spawn({
        let mut stop = stop.clone();
        let js_lag = js.clone();
        async move {
            loop {
                if let Ok(lag) = js_lag.lag().await {
                    lag.record();
                }
                tokio::select! {
                    _ = tokio::time::sleep(LAG_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    });

    let mut stop_wait = stop.clone();
    let work = async {
        loop {
            if let Err(e) = consume_batch(&consumer, &pool, n.consumer_batch).await {
                tracing::warn!(error = %e, "plays consumer: batch not applied; retrying");
                metrics::counter!("plays_consumer_errors_total").increment(1);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = shutdown => {}
        _ = stop_wait.wait_for(|s| *s) => {}
    }
    let _ = stop_tx.send(true);
    let _ = metrics_server.await;
    let _ = lag_task.await;
    pool.close().await;
    tracing::info!("plays consumer stopped");
    Ok(())
}

/// One fetch-apply-ack round. A message that is not a play (written by something else)
/// is terminated, not retried forever.
async fn consume_batch(consumer: &jetstream::consumer::PullConsumer, pool: &AnyPool, max: usize) -> Result<(), Error> {
    use futures_util::StreamExt;
    let mut batch = consumer
        .batch()
        .max_messages(max)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .map_err(|e| nats_error("fetch", e))?;
    let mut messages = Vec::new();
    let mut plays = Vec::new();
    while let Some(m) = batch.next().await {
        let m = m.map_err(|e| nats_error("fetch", e))?;
        match serde_json::from_slice::<Play>(&m.payload) {
            Ok(p) => {
                plays.push(p);
                messages.push(m);
            }
            Err(e) => {
                tracing::error!(error = %e, subject = %m.subject, "not a play event; dropped");
                metrics::counter!("plays_consumer_poison_total").increment(1);
                let _ = m.ack_with(jetstream::AckKind::Term).await;
            }
        }
    }
    if plays.is_empty() {
        return Ok(());
    }
    let flags = play_store::apply(pool, &plays).await?;
    let new = flags.iter().filter(|f| **f == Applied::New).count() as u64;
    metrics::counter!("plays_consumer_applied_total").increment(new);
    metrics::counter!("plays_consumer_duplicates_total").increment(flags.len() as u64 - new);
    for m in messages {
        m.ack().await.map_err(|e| nats_error("ack", e))?;
    }
    Ok(())
}
