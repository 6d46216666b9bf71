//! Decrypt throughput of the `enc/` layout (AES-128-CTR through the `aes` crate, AES-NI
//! where the CPU has it), the way the player reads: the file in 64 KiB reads, each
//! decrypted in place at its offset. For scripts/bench-drm.sh, beside
//! `openssl enc -aes-128-ctr` on the same file.
//!
//!   cargo run --release -p segue-core --example ctr_throughput -- FILE [ROUNDS]

use std::io::Read;

use segue_core::drm::cipher::{ContentKey, ObjectCipher};
use segue_core::{ContentId, Tier};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: ctr_throughput FILE [ROUNDS]");
        std::process::exit(2);
    };
    let rounds: u32 = args.next().and_then(|r| r.parse().ok()).unwrap_or(5);
    let key = ContentKey::from_bytes(&[0x42; 16]).unwrap_or_else(ContentKey::generate);
    let cid = ContentId::digest(b"bench");
    let mut buf = vec![0u8; 64 << 10];
    let (mut bytes, started) = (0u64, std::time::Instant::now());
    let mut check = 0u8;
    for _ in 0..rounds {
        let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut cipher = ObjectCipher::new(&key, &cid, Tier::High);
        let mut offset = 0u64;
        loop {
            let n = file.read(&mut buf).unwrap_or_else(|e| panic!("{path}: {e}"));
            if n == 0 {
                break;
            }
            cipher.apply(offset, &mut buf[..n]);
            check ^= buf[n - 1];
            offset += n as u64;
        }
        bytes += offset;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\": {bytes}, \"seconds\": {secs:.4}, \"mb_per_s\": {:.1}, \"check\": {check}}}",
        bytes as f64 / secs / 1e6
    );
}
