//! Format conversion for a track joining a queue that plays at another format: the low
//! tier is 22.05 kHz mono, the others are at the master's rate in stereo. Channels are
//! mixed (stereo to mono averages, mono to stereo copies) and the rate converted by a
//! band-limited resampler (rubato), streaming as the decoded samples arrive. The filter's
//! delay is dropped from the front and its tail flushed at the end, so the converted
//! track has exactly `round(frames × to / from)` frames and starts on time: the boundary
//! to the next track stays gapless.

use rubato::{FftFixedInOut, Resampler};

use crate::Error;

/// Input frames per resampler call: about 23 ms at 44.1 kHz.
const CHUNK: usize = 1024;

pub(crate) struct Convert {
    from: (u32, u16),
    to: (u32, u16),
    /// `None` when only the channels change.
    resampler: Option<FftFixedInOut<f32>>,
    /// Input not resampled yet, planar, at the fewer of the two channel counts.
    pending: Vec<Vec<f32>>,
    /// Output frames of filter delay still to drop.
    skip: usize,
    /// Output frames in all, and sent so far.
    want: u64,
    sent: u64,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Decode(format!("resampler: {e}"))
}

impl Convert {
    /// A conversion of `frames` frames at `from` (rate, channels) to `to`.
    pub fn new(from: (u32, u16), to: (u32, u16), frames: u64) -> Result<Convert, Error> {
        if !matches!(from.1, 1 | 2) || !matches!(to.1, 1 | 2) || from.0 == 0 || to.0 == 0 {
            return Err(Error::Decode(format!(
                "no conversion from {} Hz x{} to {} Hz x{}",
                from.0, from.1, to.0, to.1
            )));
        }
        let mid = usize::from(from.1.min(to.1));
        let resampler = if from.0 == to.0 {
            None
        } else {
            Some(FftFixedInOut::<f32>::new(from.0 as usize, to.0 as usize, CHUNK, mid).map_err(err)?)
        };
        let skip = resampler.as_ref().map_or(0, |r| r.output_delay());
        let want = (u128::from(frames) * u128::from(to.0) + u128::from(from.0) / 2) / u128::from(from.0);
        Ok(Convert { from, to, resampler, pending: vec![Vec::new(); mid], skip, want: want as u64, sent: 0 })
    }

    /// Frames the converted track has.
    pub fn frames(&self) -> u64 {
        self.want
    }

    /// Convert interleaved `pcm` at the input format, appending to `out`.
    pub fn push(&mut self, pcm: &[i16], out: &mut Vec<i16>) -> Result<(), Error> {
        let cin = usize::from(self.from.1);
        let mid = self.pending.len();
        for frame in pcm.chunks_exact(cin) {
            if mid < cin {
                let sum: f32 = frame.iter().map(|s| f32::from(*s)).sum();
                self.pending[0].push(sum / cin as f32 / 32768.0);
            } else {
                for (c, s) in frame.iter().enumerate() {
                    self.pending[c].push(f32::from(*s) / 32768.0);
                }
            }
        }
        let Some(r) = self.resampler.as_mut() else {
            let planar = std::mem::replace(&mut self.pending, vec![Vec::new(); mid]);
            self.emit(&planar, out);
            return Ok(());
        };
        let mut at = 0;
        let mut done = Vec::new();
        while self.pending[0].len() - at >= r.input_frames_next() {
            let n = r.input_frames_next();
            let chunk: Vec<&[f32]> = self.pending.iter().map(|p| &p[at..at + n]).collect();
            done.push(r.process(&chunk, None).map_err(err)?);
            at += n;
        }
        for p in &mut self.pending {
            p.drain(..at);
        }
        for planar in done {
            self.emit(&planar, out);
        }
        Ok(())
    }

    /// The input has ended: flush the filter, and end on exactly the promised frames.
    pub fn finish(&mut self, out: &mut Vec<i16>) -> Result<(), Error> {
        let mid = self.pending.len();
        if let Some(r) = self.resampler.as_mut() {
            let mut done = Vec::new();
            if !self.pending[0].is_empty() {
                done.push(r.process_partial(Some(&self.pending), None).map_err(err)?);
                self.pending = vec![Vec::new(); mid];
            }
            let mut have = self.sent + done.iter().map(|d| d[0].len() as u64).sum::<u64>();
            while have < self.want + self.skip as u64 {
                let tail = r.process_partial::<Vec<f32>>(None, None).map_err(err)?;
                if tail[0].is_empty() {
                    break;
                }
                have += tail[0].len() as u64;
                done.push(tail);
            }
            for planar in done {
                self.emit(&planar, out);
            }
        }
        // Whatever the filter left short (never more than a few frames) is silence.
        let short = self.want.saturating_sub(self.sent) as usize;
        out.extend(std::iter::repeat_n(0, short * usize::from(self.to.1)));
        self.sent = self.want;
        Ok(())
    }

    /// Interleave planar output at the output channel count, after the delay and never
    /// past the promised frames.
    fn emit(&mut self, planar: &[Vec<f32>], out: &mut Vec<i16>) {
        let len = planar.first().map_or(0, Vec::len);
        let from = self.skip.min(len);
        self.skip -= from;
        let room = usize::try_from(self.want - self.sent).unwrap_or(usize::MAX);
        let to = len.min(from + room);
        let cout = usize::from(self.to.1);
        let q = |x: f32| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        // Planar is at the fewer channels: mono copied to each output channel, or stereo.
        match planar {
            [m] => m[from..to].iter().for_each(|s| out.extend(std::iter::repeat_n(q(*s), cout))),
            [l, r, ..] => l[from..to].iter().zip(&r[from..to]).for_each(|(a, b)| out.extend([q(*a), q(*b)])),
            [] => {}
        }
        self.sent += (to - from) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 kHz tone at `rate`, `frames` long, in `channels`.
    fn tone(rate: u32, channels: u16, frames: usize) -> Vec<i16> {
        let mut v = Vec::new();
        for f in 0..frames {
            let s = (2.0 * std::f64::consts::PI * 1000.0 * f as f64 / f64::from(rate)).sin();
            for _ in 0..channels {
                v.push((s * 16_000.0) as i16);
            }
        }
        v
    }

    fn convert(pcm: &[i16], from: (u32, u16), to: (u32, u16), piece: usize) -> Vec<i16> {
        let frames = pcm.len() / usize::from(from.1);
        let mut c = Convert::new(from, to, frames as u64).unwrap();
        let mut out = Vec::new();
        for p in pcm.chunks(piece * usize::from(from.1)) {
            c.push(p, &mut out).unwrap();
        }
        c.finish(&mut out).unwrap();
        assert_eq!(out.len() as u64, c.frames() * u64::from(to.1));
        out
    }

    #[test]
    fn mono_22k_becomes_stereo_44k_of_the_same_length_and_phase() {
        let input = tone(22_050, 1, 22_051);
        let out = convert(&input, (22_050, 1), (44_100, 2), 777);
        assert_eq!(out.len(), 44_102 * 2, "round(22051 × 2) frames, two channels");
        let want = tone(44_100, 2, 44_102);
        // On time (no delay left in): the tone matches sample for sample away from the edges.
        let err = (2000..42_000).map(|i| (i32::from(out[i]) - i32::from(want[i])).abs()).max().unwrap();
        assert!(err < 300, "largest error {err} of 16000");
        assert!(out.chunks(2).all(|f| f[0] == f[1]), "both channels the same");
    }

    #[test]
    fn stereo_downmixes_and_a_same_rate_track_only_changes_channels() {
        let mut input = tone(44_100, 2, 1000);
        for f in input.chunks_mut(2) {
            f[1] = 0;
        }
        let out = convert(&input, (44_100, 2), (44_100, 1), 300);
        assert_eq!(out.len(), 1000);
        assert!(out.iter().zip(input.chunks(2)).all(|(m, f)| (i32::from(*m) - i32::from(f[0]) / 2).abs() <= 1));
        assert!(Convert::new((44_100, 6), (44_100, 2), 10).is_err());
    }
}
