//! Quality tiers: the five Ogg Vorbis encodings every track is packaged into.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 24 kbps, 22.05 kHz mono: for the worst networks.
    Low,
    /// 96 kbps stereo.
    Normal,
    /// 128 kbps stereo.
    Standard,
    /// 160 kbps stereo.
    High,
    /// 320 kbps stereo.
    VeryHigh,
}

impl Tier {
    pub const ALL: [Tier; 5] = [Tier::Low, Tier::Normal, Tier::Standard, Tier::High, Tier::VeryHigh];

    /// Nominal bitrate in kbit/s.
    pub fn kbps(self) -> u32 {
        match self {
            Tier::Low => 24,
            Tier::Normal => 96,
            Tier::Standard => 128,
            Tier::High => 160,
            Tier::VeryHigh => 320,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Low => "low",
            Tier::Normal => "normal",
            Tier::Standard => "standard",
            Tier::High => "high",
            Tier::VeryHigh => "very_high",
        }
    }

    /// Channels of the encoding (the low tier is mono to make 24 kbps listenable).
    pub fn channels(self) -> u16 {
        if self == Tier::Low {
            1
        } else {
            2
        }
    }

    /// The output sample rate for a master at `source_rate` Hz: the low tier is 22.05 kHz
    /// (never upsampled), every other tier keeps the source rate.
    pub fn sample_rate(self, source_rate: u32) -> u32 {
        if self == Tier::Low {
            source_rate.min(22_050)
        } else {
            source_rate
        }
    }
}

impl FromStr for Tier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::invalid("tier", format!("{s:?} is not one of low, normal, standard, high, very_high"))
        })
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_and_display() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.as_str()));
        }
        assert_eq!(Tier::ALL.map(Tier::kbps), [24, 96, 128, 160, 320]);
        assert!("VeryHigh".parse::<Tier>().is_err());
        assert_eq!(Tier::Low.sample_rate(48_000), 22_050);
        assert_eq!(Tier::High.sample_rate(48_000), 48_000);
        assert_eq!(Tier::Low.sample_rate(8_000), 8_000);
    }
}
