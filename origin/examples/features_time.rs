//! Time the audio feature analysis of masters, the way packaging runs it (downmix,
//! resampling to 22.05 kHz, analysis), for scripts/bench-features.sh.
//!
//!   cargo run --release -p segue-origin --example features_time -- FILE...

fn main() {
    for path in std::env::args().skip(1) {
        let master = match segue_origin::master::decode_file(std::path::Path::new(&path)) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
        let started = std::time::Instant::now();
        match segue_origin::features::of_master(&master) {
            Ok(f) => println!(
                "{{\"file\": {path:?}, \"seconds\": {:.4}, \"tempo_bpm\": {}, \"key\": \"{} {}\"}}",
                started.elapsed().as_secs_f64(),
                f.tempo_bpm,
                f.key,
                f.mode
            ),
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        }
    }
}
