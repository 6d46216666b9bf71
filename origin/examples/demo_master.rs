//! Writes a piece of the demo music (what `segue up` and the packaging tests encode) as a
//! 16-bit stereo 44.1 kHz WAV master, for the packaging benchmarks' reference set:
//!
//!   cargo run --release -p segue-origin --example demo_master -- PIECE SECS OUT.wav

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(piece), Some(secs), Some(out)) =
        (args.first().and_then(|a| a.parse().ok()), args.get(1).and_then(|a| a.parse().ok()), args.get(2))
    else {
        eprintln!("usage: demo_master PIECE SECS OUT.wav");
        return ExitCode::from(2);
    };
    let [l, r] = segue_origin::demo::music(piece, 0, secs);
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: segue_origin::demo::SOURCE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let written = hound::WavWriter::create(out, spec).and_then(|mut w| {
        for (a, b) in l.iter().zip(&r) {
            for s in [a, b] {
                w.write_sample((s.clamp(-1.0, 1.0) * 32_767.0) as i16)?;
            }
        }
        w.finalize()
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo_master: {out}: {e}");
            ExitCode::FAILURE
        }
    }
}
