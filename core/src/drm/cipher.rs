//! The encrypted variant of an object (`enc/{cid}/{tier}.ogg`).
//!
//! Layout: the bytes of `audio/{cid}/{tier}.ogg`, XORed with the AES-128-CTR keystream of
//! the content's key. The 16-byte counter block of the byte at offset `o` is
//! `nonce(cid, tier) || be64(o / 16)`, and the byte is XORed with byte `o % 16` of that
//! block's encryption. So
//! - the encrypted object has the plain one's length, and the seek table's byte offsets
//!   apply to it unchanged;
//! - any range decrypts on its own: no byte before it is needed (unlike CBC);
//! - one key serves every tier of a content: each tier has its own nonce, the first 8
//!   bytes of SHA-256(`segue/enc/v1` NUL cid NUL tier), so no two tiers share keystream,
//!   and the 64-bit counter cannot wrap inside an object.

use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ids::ContentId;
use crate::tier::Tier;

type Aes128Ctr = ctr::Ctr64BE<aes::Aes128>;

pub const KEY_LEN: usize = 16;

/// A content key. Never printed: `Debug` shows nothing of it, and it is wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct ContentKey([u8; KEY_LEN]);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

impl ContentKey {
    pub fn generate() -> Self {
        ContentKey(super::random())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(ContentKey(bytes.try_into().ok()?))
    }

    /// The raw key, for wrapping and sealing only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// The per-tier half of the counter block.
pub fn nonce(cid: &ContentId, tier: Tier) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"segue/enc/v1\0");
    h.update(cid.to_string().as_bytes());
    h.update(b"\0");
    h.update(tier.as_str().as_bytes());
    let d = h.finalize();
    let mut n = [0u8; 8];
    n.copy_from_slice(&d[..8]);
    n
}

/// The keystream of one object, positioned anywhere. Encrypting and decrypting are the
/// same operation.
pub struct ObjectCipher {
    ctr: Aes128Ctr,
}

impl ObjectCipher {
    pub fn new(key: &ContentKey, cid: &ContentId, tier: Tier) -> Self {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&nonce(cid, tier));
        ObjectCipher { ctr: Aes128Ctr::new(&key.0.into(), &iv.into()) }
    }

    /// XOR `buf`, which holds the object's bytes from `offset`, with the keystream.
    pub fn apply(&mut self, offset: u64, buf: &mut [u8]) {
        self.ctr.seek(offset);
        self.ctr.apply_keystream(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_decrypts_alone_and_tiers_differ() {
        let key = ContentKey::from_bytes(&[7u8; 16]).unwrap();
        let cid = ContentId::digest(b"master");
        let plain: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut whole = plain.clone();
        ObjectCipher::new(&key, &cid, Tier::High).apply(0, &mut whole);
        assert_ne!(whole, plain);
        // Ranges that start and end mid-block decrypt alone, in any order.
        let mut c = ObjectCipher::new(&key, &cid, Tier::High);
        for (start, end) in [(4097, 5003), (3, 17), (9_990, 10_000), (0, 1)] {
            let mut part = whole[start..end].to_vec();
            c.apply(start as u64, &mut part);
            assert_eq!(part, plain[start..end], "{start}..{end}");
        }
        // Another tier of the same content gets another keystream.
        let mut other = plain.clone();
        ObjectCipher::new(&key, &cid, Tier::Low).apply(0, &mut other);
        assert_ne!(other, whole);
        assert_eq!(format!("{key:?}"), "ContentKey(..)");
    }

    #[test]
    fn the_layout_is_aes_128_ctr_with_the_documented_counter_block() {
        // An independent computation of the first block: AES-128(key, nonce || 0).
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        let key = ContentKey::from_bytes(&[0x2b; 16]).unwrap();
        let cid = ContentId::digest(b"x");
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&nonce(&cid, Tier::Normal));
        block[15] = 1; // the second block: bytes 16..32
        let aes = aes::Aes128::new(&[0x2b; 16].into());
        let mut b = block.into();
        aes.encrypt_block(&mut b);
        let mut zeros = [0u8; 16];
        ObjectCipher::new(&key, &cid, Tier::Normal).apply(16, &mut zeros);
        assert_eq!(zeros.as_slice(), b.as_slice());
    }
}
