//! The play log at scale: NATS JetStream.
//!
//! - **Publishing** (app API): each event goes to `SUBJECT.P`, P a stable hash of its
//!   track modulo `partitions`, with message id `user/event_id/payload digest`; the
//!   client is answered once the stream has stored it (on a quorum of `replicas` nodes).
//!   A retry inside the deduplication window is dropped by the server; the same id with
//!   another payload reaches the consumer, which keeps it as a conflict.
//! - **Consuming** (`segue plays consume`): one durable pull consumer per partition
//!   (`CONSUMER-pK`, filtered on `SUBJECT.K`), so partitions apply in parallel, in one
//!   process or several. A batch is applied in one transaction, then acked. A message
//!   that is not a play, or that the database refuses, is moved to the dead-letter
//!   stream with the reason in its headers: a failing batch is split in halves until the
//!   failing message is alone, so one bad message never stalls its partition. When every
//!   part fails the database is the problem, and the batch is retried as a whole.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use sqlx::AnyPool;

use crate::config::{Config, Nats};
use crate::error::Error;
use crate::play_log::Lag;
use crate::play_store::{self, Applied};
use crate::plays::Play;

/// How often the lag gauges are refreshed.
pub const LAG_EVERY: Duration = Duration::from_secs(2);

fn nats_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("NATS {what}: {e}"))
}

/// The partition of a track: FNV-1a (stable across builds and languages) modulo `n`.
pub fn partition(track: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in track.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}

/// How many times (a second apart) starting up retries what a cluster electing its
/// leaders answers with a timeout.
const STARTUP_RETRIES: u32 = 30;

/// The JetStream side of the log: publishing (app API) and the streams both sides share.
#[derive(Clone)]
pub struct JetStream {
    js: jetstream::Context,
    settings: Nats,
    pool: AnyPool,
}

async fn connect_client(n: &Nats) -> Result<async_nats::Client, Error> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None);
    if !n.credentials_file.is_empty() {
        opts = opts
            .credentials_file(&n.credentials_file)
            .await
            .map_err(|e| Error::BadRequest(format!("plays.nats.credentials_file {}: {e}", n.credentials_file)))?;
    }
    if !n.tls_ca_file.is_empty() {
        opts = opts.add_root_certificates(n.tls_ca_file.clone().into()).require_tls(true);
    }
    if n.tls_required {
        opts = opts.require_tls(true);
    }
    let servers: Vec<async_nats::ServerAddr> = n
        .url
        .split(',')
        .map(|u| u.trim().parse().map_err(|e| Error::BadRequest(format!("plays.nats.url {u:?}: {e}"))))
        .collect::<Result<_, _>>()?;
    tokio::time::timeout(Duration::from_secs(15), opts.connect(servers))
        .await
        .map_err(|_| nats_error(&format!("connect to {}", n.url), "no server answered within 15 s"))?
        .map_err(|e| nats_error(&format!("connect to {}", n.url), e))
}

impl JetStream {
    /// Connect and make sure both streams exist as configured: the plays (file storage,
    /// work-queue retention: a message stays until applied; `replicas` copies; the
    /// dedup window) and the dead letters (kept 30 days).
    pub async fn connect(config: &Config, pool: AnyPool) -> Result<JetStream, Error> {
        let n = &config.plays.nats;
        let js = jetstream::new(connect_client(n).await?);
        let plays = jetstream::stream::Config {
            name: n.stream.clone(),
            subjects: vec![format!("{}.*", n.subject)],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            num_replicas: n.replicas,
            duplicate_window: Duration::from_secs(n.duplicate_window_secs),
            ..Default::default()
        };
        let dead = jetstream::stream::Config {
            name: n.dead_letter_stream.clone(),
            subjects: vec![n.dead_letter_subject.clone()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: n.replicas,
            max_age: Duration::from_secs(30 * 86_400),
            ..Default::default()
        };
        for cfg in [plays, dead] {
            let name = cfg.name.clone();
            // A cluster that has just formed (or lost a node) answers with a timeout until
            // it has a meta leader: retry for a while rather than exit at start.
            let mut tries = 0;
            loop {
                match js.create_or_update_stream(cfg.clone()).await {
                    Ok(_) => break,
                    Err(e)
                        if tries < STARTUP_RETRIES
                            && matches!(
                                e.kind(),
                                jetstream::context::CreateStreamErrorKind::TimedOut
                                    | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                            ) =>
                    {
                        tries += 1;
                        tracing::warn!(stream = name, error = %e, "cannot create the stream yet; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(nats_error(&format!("stream {name}"), e)),
                }
            }
        }
        Ok(JetStream { js, settings: n.clone(), pool })
    }

    pub(crate) async fn publish(&self, plays: Vec<Play>) -> Result<Vec<Applied>, Error> {
        // Events already in the database are duplicates (or conflicts) whatever the dedup
        // window says (an offline device re-syncing days later).
        let mut conn = self.pool.acquire().await?;
        let stored = play_store::logged(&mut conn, &plays.iter().collect::<Vec<_>>()).await?;
        // The abuse limits, before the stream: once acknowledged, a play is counted. (They
        // see what the consumer has applied; plays still in the stream are not in them.)
        let mut refused = play_store::refusals(&mut conn, &plays, &stored).await?;
        drop(conn);
        let mut acks = Vec::with_capacity(plays.len());
        let mut conflicts = Vec::new();
        for (i, p) in plays.iter().enumerate() {
            if let Some(r) = refused.remove(&i) {
                acks.push(Err(Applied::Refused(r)));
                continue;
            }
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
            let subject = format!("{}.{}", self.settings.subject, partition(&p.track, self.settings.partitions));
            let ack = self.js.send_publish(subject, msg).await.map_err(|e| nats_error("publish", e))?;
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
        let stream = self.js.get_stream(&self.settings.stream).await.map_err(|e| nats_error("stream", e))?;
        let info = stream.get_info().await.map_err(|e| nats_error("stream info", e))?;
        let seconds = if info.state.messages == 0 {
            0.0
        } else {
            (time::OffsetDateTime::now_utc() - info.state.first_timestamp).as_seconds_f64().max(0.0)
        };
        Ok(Lag { events: info.state.messages, seconds })
    }

    /// Move `m` to the dead-letter stream with `why`, then take it off the plays stream.
    async fn dead_letter(&self, m: &jetstream::Message, why: &str) -> Result<(), Error> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Segue-Error", why.chars().filter(|c| !c.is_control()).take(500).collect::<String>().as_str());
        headers.insert("Segue-Subject", m.subject.as_str());
        if let Ok(info) = m.info() {
            headers.insert("Segue-Stream-Seq", info.stream_sequence.to_string().as_str());
        }
        self.js
            .publish_with_headers(self.settings.dead_letter_subject.clone(), headers, m.payload.clone())
            .await
            .map_err(|e| nats_error("dead-letter publish", e))?
            .await
            .map_err(|e| nats_error("dead-letter publish ack", e))?;
        m.ack().await.map_err(|e| nats_error("ack", e))?;
        tracing::error!(subject = %m.subject, why, "play message moved to the dead-letter stream");
        metrics::counter!("plays_consumer_dead_lettered_total").increment(1);
        Ok(())
    }
}

/// Apply the stream to the database until `shutdown`: for each partition (`only`, or
/// all), fetch a batch, apply it in one transaction, then ack it. Serves `/metrics` and
/// `/healthz` on `plays.nats.consumer_listen`.
pub async fn consume(
    config: Config,
    only: Vec<usize>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let n = config.plays.nats.clone();
    if let Some(p) = only.iter().find(|p| **p >= n.partitions) {
        return Err(Error::BadRequest(format!(
            "partition {p} does not exist (plays.nats.partitions = {})",
            n.partitions
        )));
    }
    let partitions: Vec<usize> = if only.is_empty() { (0..n.partitions).collect() } else { only };
    let listener = segue_core::server::bind(n.consumer_listen)
        .await
        .map_err(|e| Error::BadRequest(format!("cannot listen on {}: {e}", n.consumer_listen)))?;
    let pool = crate::catalog::open(&config.database).await?;
    let js = JetStream::connect(&config, pool.clone()).await?;
    let stream = js.js.get_stream(&n.stream).await.map_err(|e| nats_error("stream", e))?;
    let mut consumers = Vec::new();
    for k in &partitions {
        let name = format!("{}-p{k}", n.consumer);
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{}.{k}", n.subject),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: (n.consumer_batch * 4) as i64,
            num_replicas: n.replicas,
            ..Default::default()
        };
        // A cluster still electing the consumer's leader answers with a timeout: retry
        // for a while rather than give up at start.
        let mut tries = 0;
        let consumer: jetstream::consumer::PullConsumer = loop {
            match stream.get_or_create_consumer(&name, config.clone()).await {
                Ok(c) => break c,
                Err(e) if tries < STARTUP_RETRIES => {
                    tries += 1;
                    tracing::warn!(consumer = name, error = %e, "cannot create the consumer yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(nats_error(&format!("consumer {name}"), e)),
            }
        };
        consumers.push((*k, consumer));
    }
    tracing::info!(
        stream = %n.stream, partitions = ?partitions,
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

    let mut workers = Vec::new();
    for (k, consumer) in consumers {
        let (js, pool, mut stop, max) = (js.clone(), pool.clone(), stop.clone(), n.consumer_batch);
        workers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = consume_batch(&js, &consumer, &pool, max) => if let Err(e) = r {
                        tracing::warn!(partition = k, error = %e, "plays consumer: batch not applied; retrying");
                        metrics::counter!("plays_consumer_errors_total").increment(1);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    },
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                }
            }
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let _ = metrics_server.await;
    let _ = lag_task.await;
    pool.close().await;
    tracing::info!("plays consumer stopped");
    Ok(())
}

/// One fetch-apply-ack round.
async fn consume_batch(
    js: &JetStream,
    consumer: &jetstream::consumer::PullConsumer,
    pool: &AnyPool,
    max: usize,
) -> Result<(), Error> {
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
                metrics::counter!("plays_consumer_poison_total").increment(1);
                js.dead_letter(&m, &format!("not a play event: {e}")).await?;
            }
        }
    }
    if plays.is_empty() {
        return Ok(());
    }
    let results = apply_isolating(pool, &plays).await?;
    let mut new = 0u64;
    for (m, r) in messages.iter().zip(&results) {
        match r {
            Ok(a) => {
                new += u64::from(*a == Applied::New);
                if let Applied::Refused(r) = a {
                    // Acknowledged before the limits saw it (they lag the stream): counted
                    // nowhere, named here.
                    tracing::warn!(reason = r.reason, message = %r.message, "an acknowledged play is over a limit; not counted");
                    metrics::counter!("plays_consumer_refused_total", "reason" => r.reason).increment(1);
                }
                m.ack().await.map_err(|e| nats_error("ack", e))?;
            }
            Err(why) => js.dead_letter(m, &format!("the database refused it: {why}")).await?,
        }
    }
    metrics::counter!("plays_consumer_applied_total").increment(new);
    metrics::counter!("plays_consumer_duplicates_total").increment(results.len() as u64 - new);
    Ok(())
}

/// Apply `plays` in one transaction; if that fails, in halves, down to single events, so
/// the ones the database refuses are found and the rest are applied (in order). `Err`
/// when nothing at all could be applied: then the database, not the data, is failing.
async fn apply_isolating(pool: &AnyPool, plays: &[Play]) -> Result<Vec<Result<Applied, String>>, Error> {
    let first = match play_store::apply(pool, plays).await {
        Ok(flags) => return Ok(flags.into_iter().map(Ok).collect()),
        Err(e) => e,
    };
    // One probe of the database before splitting: if it is down, splitting only fails
    // more.
    if sqlx::query("SELECT 1").execute(pool).await.is_err() {
        return Err(first);
    }
    let mut results: Vec<Option<Result<Applied, String>>> = vec![None; plays.len()];
    let mut parts = vec![(plays.len() / 2, plays.len()), (0, plays.len() / 2)];
    if plays.len() == 1 {
        parts = vec![(0, 1)];
    }
    let mut applied_any = false;
    while let Some((a, b)) = parts.pop() {
        if a == b {
            continue;
        }
        match play_store::apply(pool, &plays[a..b]).await {
            Ok(flags) => {
                applied_any = true;
                for (i, f) in flags.into_iter().enumerate() {
                    results[a + i] = Some(Ok(f));
                }
            }
            Err(e) if b - a == 1 => results[a] = Some(Err(e.to_string())),
            Err(_) => {
                let mid = (a + b) / 2;
                // Pushed second half first, so the first half is applied first.
                parts.push((mid, b));
                parts.push((a, mid));
            }
        }
    }
    if !applied_any && plays.len() > 1 {
        return Err(first);
    }
    if plays.len() == 1 && results[0].as_ref().is_some_and(|r| r.is_err()) {
        // A lone event the database refuses while it answers a probe: the event is bad.
        tracing::warn!("a single play event is refused by the database");
    }
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err("not applied".into()))).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(super::partition("trk_0001", 1), 0);
        let p: Vec<usize> = (0..1000).map(|i| super::partition(&format!("trk_{i:04}"), 4)).collect();
        for k in 0..4 {
            let n = p.iter().filter(|x| **x == k).count();
            assert!((200..300).contains(&n), "partition {k}: {n} of 1000");
        }
        // Fixed: a track never moves between builds (FNV-1a of "a" is 0xaf63dc4c8601ec8c).
        assert_eq!(super::partition("a", 1 << 20), (0xaf63_dc4c_8601_ec8c_u64 % (1 << 20)) as usize);
    }
}
