//! The output side of a playback session: a sink fed interleaved 16-bit PCM in chunks,
//! paced like a sound device when asked (a real device consumes at its rate and cannot
//! wait), with silence while a deck refills and the session's counts.

use std::time::{Duration, Instant};

use crate::deck::Deck;
use crate::engine::Stats;
use crate::Error;

/// The output side of a session: the pacing clock, the sink and the counts.
pub(crate) struct Output<S> {
    pub(crate) clock: Pacer,
    pub(crate) sink: S,
    pub(crate) stats: Stats,
    pub(crate) channels: usize,
    /// Frames per write (20 ms).
    pub(crate) chunk: usize,
    /// Frames a paced deck must hold to (re)start.
    pub(crate) start_buffer: u64,
    /// Frames to play in all before stopping.
    pub(crate) limit: u64,
}

impl<S: FnMut(&[i16])> Output<S> {
    pub(crate) async fn emit(&mut self, samples: &[i16]) {
        let room = usize::try_from(self.limit - self.stats.frames.min(self.limit))
            .unwrap_or(usize::MAX)
            .saturating_mul(self.channels);
        let samples = &samples[..samples.len().min(room)];
        self.clock.emit(samples, self.channels, &mut self.sink).await;
        self.stats.frames += (samples.len() / self.channels) as u64;
    }

    pub(crate) fn done(&self) -> bool {
        self.stats.frames >= self.limit
    }

    /// Silence, a chunk at a time, until `deck` holds `frames` (or has failed).
    pub(crate) async fn silence_until(&mut self, deck: &mut Deck, frames: u64) {
        let silence = vec![0i16; self.chunk * self.channels];
        while !deck.ready(frames) && !self.done() {
            let before = self.stats.frames;
            self.emit(&silence).await;
            self.stats.silence_frames += self.stats.frames - before;
        }
    }

    /// Wait until `deck` holds `frames`. Paced, a deck that has run dry plays silence
    /// until it holds a start buffer beyond them: a sound device cannot wait.
    pub(crate) async fn fill(&mut self, deck: &mut Deck, frames: u64) -> Result<(), Error> {
        if self.clock.paced() && !deck.ready(frames) {
            self.stats.rebuffers += 1;
            self.silence_until(deck, frames + self.start_buffer).await;
        }
        deck.want(frames).await
    }
}

/// Paces output like a sound device consuming `rate` frames a second (times `speed`).
pub(crate) struct Pacer {
    speed: Option<f64>,
    rate: u32,
    start: Instant,
    frames: u64,
}

impl Pacer {
    pub(crate) fn new(speed: Option<f64>, rate: u32) -> Pacer {
        Pacer { speed: speed.filter(|s| *s > 0.0), rate, start: Instant::now(), frames: 0 }
    }

    pub(crate) fn paced(&self) -> bool {
        self.speed.is_some()
    }

    pub(crate) async fn emit(&mut self, samples: &[i16], ch: usize, sink: &mut impl FnMut(&[i16])) {
        sink(samples);
        self.frames += (samples.len() / ch.max(1)) as u64;
        if let Some(speed) = self.speed {
            let due = Duration::from_secs_f64(self.frames as f64 / f64::from(self.rate) / speed);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
