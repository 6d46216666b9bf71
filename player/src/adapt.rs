//! The tier of each next track, from the measured bandwidth: the listener's tier while
//! the network sustains it with margin, else the best one it does, down to the 24 kbps
//! tier. Chosen only when a track starts loading, never mid-track: a track plays at one
//! tier from its first sample to its last.

use segue_core::Tier;
use serde::Serialize;

/// A track that plays at another tier than the one before it, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierChange {
    /// Its place in the queue, and its id.
    pub index: usize,
    pub track: String,
    pub from: Tier,
    pub to: Tier,
    /// The bandwidth estimate it was chosen by, kbit/s.
    pub kbps: f64,
    pub reason: String,
}

/// Picks tiers for a session.
#[derive(Debug, Clone)]
pub struct Chooser {
    /// The listener's tier: never exceeded.
    pub wanted: Tier,
    /// False: always `wanted`.
    pub adaptive: bool,
    /// A tier needs this many times its bitrate.
    pub margin: f64,
}

impl Chooser {
    /// The tier for a track about to load, given the estimate (kbit/s, `None` before any
    /// fetch: then the listener's tier).
    pub fn choose(&self, kbps: Option<f64>) -> Tier {
        match kbps {
            Some(kbps) if self.adaptive => Tier::ALL
                .into_iter()
                .rev()
                .filter(|t| *t <= self.wanted)
                .find(|t| f64::from(t.kbps()) * self.margin <= kbps)
                .unwrap_or(Tier::Low),
            _ => self.wanted,
        }
    }

    /// Why track `index` plays at `to` after a track at `from`.
    pub fn change(&self, index: usize, track: &str, from: Tier, to: Tier, kbps: f64) -> TierChange {
        let reason = if to < from {
            format!(
                "measured {kbps:.0} kbit/s cannot sustain {from} ({} kbit/s with a margin of {}); {to} can",
                from.kbps(),
                self.margin
            )
        } else if to == self.wanted {
            format!("measured {kbps:.0} kbit/s sustains the chosen tier {to} again")
        } else {
            format!("measured {kbps:.0} kbit/s sustains {to}, not yet {}", self.wanted)
        };
        TierChange { index, track: track.to_owned(), from, to, kbps, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_tier_the_estimate_sustains_never_above_the_listeners() {
        let c = Chooser { wanted: Tier::High, adaptive: true, margin: 1.5 };
        assert_eq!(c.choose(None), Tier::High, "no estimate yet");
        assert_eq!(c.choose(Some(100_000.0)), Tier::High, "never above the listener's");
        assert_eq!(c.choose(Some(240.0)), Tier::High);
        assert_eq!(c.choose(Some(239.0)), Tier::Standard);
        assert_eq!(c.choose(Some(150.0)), Tier::Normal);
        assert_eq!(c.choose(Some(98.0)), Tier::Low);
        assert_eq!(c.choose(Some(5.0)), Tier::Low, "the lowest when nothing fits");
        let fixed = Chooser { adaptive: false, ..c.clone() };
        assert_eq!(fixed.choose(Some(5.0)), Tier::High);
        let down = c.change(2, "t", Tier::High, Tier::Low, 98.0);
        assert!(down.reason.contains("cannot sustain high"), "{down:?}");
        assert!(c.change(3, "t", Tier::Low, Tier::High, 9000.0).reason.contains("again"));
    }
}
