//! Audio features measured at ingest (`segue ingest --json`), checked against librosa on
//! synthetic signals made with sox: a 120 BPM click track, a C major chord, a 1 kHz sine.

mod common;

use common::*;

/// `sox` with `args`, making `out`.
fn sox(out: &std::path::Path, args: &[&str]) {
    let run = std::process::Command::new("sox")
        .args(["-n", "-r", "44100", "-c", "2", "-b", "16"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(run.status.success(), "sox: {}", String::from_utf8_lossy(&run.stderr));
}

/// librosa's tempo, mean chroma and mean spectral centroid of each file at 22.05 kHz
/// (one process: importing librosa takes seconds). Its tempo comes from an onset
/// envelope at a hop of 256: at its default 512 the lag grid alone is 117.5 or 123 BPM
/// around 120.
fn librosa(files: &[&std::path::Path]) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys, warnings
warnings.filterwarnings("ignore")
import librosa, numpy as np
for f in sys.argv[1:]:
    y, sr = librosa.load(f, sr=22050, mono=True)
    onset = librosa.onset.onset_strength(y=y, sr=sr, hop_length=256)
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=256))[0])
    chroma = librosa.feature.chroma_stft(y=y, sr=sr).mean(axis=1)
    centroid = float(librosa.feature.spectral_centroid(y=y, sr=sr).mean())
    print(json.dumps({"tempo": tempo, "chroma": [float(c) for c in chroma], "centroid": centroid}))
"#;
    let run = std::process::Command::new("python3").args(["-c", script]).args(files).output().unwrap();
    assert!(run.status.success(), "librosa: {}", String::from_utf8_lossy(&run.stderr));
    String::from_utf8_lossy(&run.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The three strongest pitch classes of a chroma vector, sorted.
fn top3(chroma: &serde_json::Value) -> Vec<usize> {
    let v: Vec<f64> = chroma.as_array().unwrap().iter().map(|c| c.as_f64().unwrap()).collect();
    let mut idx: Vec<usize> = (0..12).collect();
    idx.sort_by(|a, b| v[*b].total_cmp(&v[*a]));
    let mut top = idx[..3].to_vec();
    top.sort_unstable();
    top
}

#[test]
fn tempo_chroma_and_centroid_agree_with_librosa_on_synthetic_signals() {
    let dir = tempfile::tempdir().unwrap();
    let (click, chord, tone) =
        (dir.path().join("click.wav"), dir.path().join("chord.wav"), dir.path().join("sine.wav"));
    // 120 BPM: a 30 ms burst of noise every 0.5 s, for 20 s.
    sox(&click, &["synth", "0.03", "whitenoise", "vol", "0.8", "pad", "0", "0.47", "repeat", "39"]);
    sox(&chord, &["synth", "6", "sine", "C4", "sine", "E4", "sine", "G4", "remix", "1-3", "1-3", "vol", "0.3"]);
    sox(&tone, &["synth", "6", "sine", "1000", "vol", "0.5"]);
    let store = dir.path().join("store");
    let run =
        segue().args(["ingest", "--json", "--data-dir"]).arg(&store).args([&click, &chord, &tone]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ours: std::collections::HashMap<String, serde_json::Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let name =
                std::path::Path::new(v["file"].as_str().unwrap()).file_stem().unwrap().to_string_lossy().into_owned();
            (name, v["features"].clone())
        })
        .collect();

    let refs = librosa(&[&click, &chord, &tone]);
    let (ref_click, ref_chord, ref_tone) = (&refs[0], &refs[1], &refs[2]);
    eprintln!(
        "ours: tempo {}, chord {:?}, centroid {}",
        ours["click"]["tempo_bpm"], ours["chord"]["chroma"], ours["sine"]["centroid_hz"]
    );
    eprintln!(
        "librosa: tempo {}, chord {}, centroid {}",
        ref_click["tempo"], ref_chord["chroma"], ref_tone["centroid"]
    );
    let tempo = ours["click"]["tempo_bpm"].as_f64().unwrap();
    let ref_tempo = ref_click["tempo"].as_f64().unwrap();
    assert!((tempo - 120.0).abs() <= 2.0, "our tempo {tempo}");
    assert!((ref_tempo - 120.0).abs() <= 2.0, "librosa's tempo {ref_tempo}: the reference itself is off");
    assert!((tempo - ref_tempo).abs() <= 2.0, "ours {tempo}, librosa {ref_tempo}");
    // C, E, G are pitch classes 0, 4 and 7, for both.
    assert_eq!(top3(&ours["chord"]["chroma"]), [0, 4, 7]);
    assert_eq!(top3(&ref_chord["chroma"]), [0, 4, 7]);
    assert_eq!((ours["chord"]["key"].as_str(), ours["chord"]["mode"].as_str()), (Some("C"), Some("major")));
    let centroid = ours["sine"]["centroid_hz"].as_f64().unwrap();
    let ref_centroid = ref_tone["centroid"].as_f64().unwrap();
    assert!((centroid - 1000.0).abs() < 50.0, "our centroid {centroid}");
    assert!((centroid - ref_centroid).abs() / ref_centroid < 0.05, "ours {centroid}, librosa {ref_centroid}");
    // A fixed-size embedding for every track.
    for f in ours.values() {
        assert_eq!(f["embedding"].as_array().map(Vec::len), Some(49), "{f}");
    }
}
