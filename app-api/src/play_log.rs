//! The play log: where an event is made durable before the client is told so. This is
//! the seam between the embedded default and the at-scale pipeline.
//!
//! - **Embedded**: one writer task applies every waiting batch to the database in one
//!   transaction (group commit: one fsync for many requests) and then answers them all.
//! - **NATS JetStream** (`play_stream`): each event is published and the client is
//!   answered once the stream has stored it; `segue plays consume` applies the stream to
//!   the database with the same idempotent `play_store::apply` and acks only after the
//!   commit, so a crash anywhere means a redelivery, never a loss or a double count.

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, PlayLogKind};
use crate::error::Error;
use crate::play_store::{self, Applied};
use crate::play_stream::{JetStream, LAG_EVERY};
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
