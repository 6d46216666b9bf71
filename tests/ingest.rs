//! `segue ingest` as release managers run it, including kill -9 at any point.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use segue_core::manifest::Manifest;
use segue_core::seek_table::SeekTable;

fn segue() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segue"));
    c.env("RUST_LOG", "warn");
    c
}

/// A stereo 16-bit WAV of `secs` seconds of broadband, music-like noise and tones.
fn write_master(path: &Path, secs: u32, seed: u32) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let mut x = 0x1234_5678u32 ^ seed;
    for i in 0..secs * 44_100 {
        let t = f64::from(i) / 44_100.0;
        for ch in 0..2 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = f64::from(x) / f64::from(u32::MAX) - 0.5;
            let tone = (std::f64::consts::TAU * (220.0 + 110.0 * f64::from(ch)) * t).sin();
            w.write_sample(((tone * 0.3 + noise * 0.4) * 20_000.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

fn ingest(store: &Path, args: &[&Path], json: bool) -> std::process::Output {
    let mut c = segue();
    c.arg("ingest").arg("--data-dir").arg(store);
    if json {
        c.arg("--json");
    }
    c.args(args).output().unwrap()
}

/// Every manifest's objects exist, are complete and valid; every object present is
/// complete (CRC-valid pages / parseable seek table), whatever moment the writer died.
fn assert_store_consistent(store: &Path) -> usize {
    let mut manifests = 0;
    if let Ok(entries) = std::fs::read_dir(store.join("manifest")) {
        for e in entries {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let m: Manifest = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).expect("complete manifest");
            for t in m.tiers.values() {
                let audio = std::fs::read(store.join(&t.key)).expect("manifest names an existing audio object");
                assert_eq!(audio.len() as u64, t.bytes);
                let seek = SeekTable::from_json(&std::fs::read(store.join(&t.seek_key)).unwrap()).unwrap();
                assert_eq!(seek.total_bytes, t.bytes);
            }
            manifests += 1;
        }
    }
    for dir in ["audio", "seek"] {
        let Ok(cids) = std::fs::read_dir(store.join(dir)) else { continue };
        for cid in cids {
            for f in std::fs::read_dir(cid.unwrap().path()).unwrap() {
                let f = f.unwrap();
                if f.file_name().to_string_lossy().starts_with('.') {
                    continue; // an interrupted write's temp file: never served, swept at start-up
                }
                let bytes = std::fs::read(f.path()).unwrap();
                if dir == "audio" {
                    segue_origin::ogg::pages(&bytes).unwrap_or_else(|e| panic!("partial object {:?}: {e}", f.path()));
                } else {
                    SeekTable::from_json(&bytes).unwrap_or_else(|e| panic!("partial seek table {:?}: {e}", f.path()));
                }
            }
        }
    }
    manifests
}

#[test]
fn ingest_reports_json_skips_repeats_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let masters = dir.path().join("masters");
    std::fs::create_dir_all(masters.join("disc2")).unwrap();
    write_master(&masters.join("01.wav"), 3, 1);
    let flac = masters.join("disc2/01-again.flac");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(masters.join("01.wav"))
        .args(["-c:a", "flac"])
        .arg(&flac)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    write_master(&masters.join("02.wav"), 2, 2);
    std::fs::write(masters.join("disc2/broken.wav"), b"RIFF....WAVEfmt garbage").unwrap();
    let store = dir.path().join("store");

    let out = ingest(&store, &[&masters], true);
    assert_eq!(out.status.code(), Some(1), "one master is bad");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.wav") && stderr.contains("bad WAV"), "{stderr}");
    assert!(stderr.contains("2 packaged, 1 already stored, 1 failed"), "{stderr}");
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(reports.len(), 3);
    for r in &reports {
        let tiers = r["tiers"].as_array().unwrap();
        assert_eq!(tiers.len(), 5);
        for t in tiers {
            for field in ["key", "bytes", "samples", "sample_rate", "seek_key"] {
                assert!(!t[field].is_null(), "{field} missing in {t}");
            }
        }
    }
    let same: Vec<_> = reports.iter().filter(|r| r["file"].as_str().unwrap().contains("01")).collect();
    assert_eq!(same[0]["content_id"], same[1]["content_id"], "WAV and FLAC of one master share a content id");
    assert_eq!(assert_store_consistent(&store), 2);

    // A repeat writes nothing.
    let snapshot = |p: &Path| -> Vec<(String, std::time::SystemTime)> {
        let mut v = Vec::new();
        for d in ["audio", "seek", "manifest"] {
            for e in walk(&p.join(d)) {
                v.push((e.display().to_string(), std::fs::metadata(&e).unwrap().modified().unwrap()));
            }
        }
        v.sort();
        v
    };
    let before = snapshot(&store);
    let out = ingest(&store, &[&masters.join("01.wav"), &masters.join("02.wav")], false);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 packaged, 2 already stored, 0 failed"));
    assert_eq!(snapshot(&store), before);

    let out = ingest(&store, &[&dir.path().join("nope")], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn kill_9_at_any_point_leaves_no_partial_content() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.wav");
    write_master(&master, 12, 3);

    // How long a whole ingest takes here, to spread the kills over it.
    let t = Instant::now();
    assert!(ingest(&dir.path().join("timing"), &[&master], false).status.success());
    let full = t.elapsed();

    for i in 1..=8u32 {
        let store = dir.path().join(format!("store-{i}"));
        let mut child = segue()
            .arg("ingest")
            .arg("--data-dir")
            .arg(&store)
            .arg(&master)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(f64::from(i) / 9.0));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let before = assert_store_consistent(&store);
        assert!(before <= 1);

        // Running again completes the content.
        assert!(ingest(&store, &[&master], false).status.success());
        assert_eq!(assert_store_consistent(&store), 1);
    }
}
