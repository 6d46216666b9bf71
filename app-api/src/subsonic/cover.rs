//! `getCoverArt`: a cover generated from the id (the catalog holds no artwork yet), so
//! every album and artist has a stable, distinct picture: a two-colour gradient behind a
//! record whose label takes the second colour. PNG, deterministic, cached.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::browse::db;
use super::{Failure, Params};
use crate::App;

/// Sizes clients may ask for (pixels per side); the default suits a phone's album view.
const MIN_SIZE: i64 = 16;
const MAX_SIZE: i64 = 1500;
const DEFAULT_SIZE: i64 = 512;

/// The PNG for `getCoverArt?id=&size=`: ids are album ids, `ar-` + an artist id, or a
/// song id (its album's cover).
pub async fn cover(app: &App, p: &Params) -> Result<Bytes, Failure> {
    let id = p.required("id")?;
    let size = p.number("size", DEFAULT_SIZE)?.clamp(MIN_SIZE, MAX_SIZE) as u32;
    let known = match id.strip_prefix("ar-") {
        Some(artist) => sqlx::query("SELECT 1 FROM artists WHERE id = $1")
            .bind(artist)
            .fetch_optional(&app.pool)
            .await
            .map_err(db)?
            .is_some(),
        None => crate::catalog::album_exists(&app.pool, id).await.map_err(Failure::from)?,
    };
    let seed = if known {
        id.to_owned()
    } else {
        // A song's cover is its album's.
        crate::catalog::track(&app.pool, id)
            .await
            .map_err(Failure::from)?
            .map(|t| t.album.id)
            .ok_or_else(|| Failure::new(70, format!("The requested data was not found: no cover art {id:?}")))?
    };
    cached(app, seed, size).await.map_err(|e| Failure::new(0, format!("cover art: {e}")))
}

/// The cover of `id` at `size` pixels, drawn once and then kept (`App::covers`).
pub async fn cached(app: &App, id: String, size: u32) -> Result<Bytes, tokio::task::JoinError> {
    let key = (id, size);
    if let Some(png) = app.covers.get(&key) {
        return Ok(png);
    }
    let seed = key.0.clone();
    let png =
        tokio::task::spawn_blocking(move || Bytes::from(render(&seed, size.clamp(MIN_SIZE as u32, MAX_SIZE as u32))))
            .await?;
    app.covers.insert(key, png.clone());
    Ok(png)
}

/// An HSL colour (h in turns, s and l in 0..1) as RGB.
fn hsl(h: f32, s: f32, l: f32) -> [f32; 3] {
    let a = s * l.min(1.0 - l);
    let f = |n: f32| {
        let k = (n + h * 12.0) % 12.0;
        l - a * (k - 3.0).min(9.0 - k).clamp(-1.0, 1.0)
    };
    [f(0.0), f(8.0), f(4.0)]
}

/// The cover of `id` as a `size` x `size` PNG.
pub fn render(id: &str, size: u32) -> Vec<u8> {
    let h = Sha256::digest(id.as_bytes());
    let hue = f32::from(u16::from_be_bytes([h[0], h[1]])) / 65536.0;
    let turn = 0.17 + f32::from(h[2]) / 255.0 * 0.33;
    let a = hsl(hue, 0.55, 0.52);
    let b = hsl((hue + turn) % 1.0, 0.6, 0.38);
    let label = hsl((hue + 0.5) % 1.0, 0.65, 0.6);
    let grooves = 60.0 + f32::from(h[3] % 40);
    let n = size as usize;
    let mut raw = Vec::with_capacity(n * (3 * n + 1));
    for y in 0..n {
        raw.push(0); // PNG filter: none
        for x in 0..n {
            let (fx, fy) = ((x as f32 + 0.5) / n as f32, (y as f32 + 0.5) / n as f32);
            let t = (fx + fy) / 2.0;
            let mut c = [0f32; 3];
            for k in 0..3 {
                c[k] = a[k] * (1.0 - t) + b[k] * t;
            }
            let r = ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
            if r < 0.12 {
                c = label;
            } else if r < 0.36 {
                // The record: near black, its grooves catching a little light.
                let shine = 0.08 + 0.04 * (r * grooves).sin();
                c = [shine, shine, shine * 1.1];
            }
            raw.extend(c.map(|v| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8));
        }
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(size.to_be_bytes());
    ihdr.extend(size.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter choice, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6));
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.finalize().to_be_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn covers_are_valid_pngs_distinct_per_id_and_stable() {
        let a = super::render("alb_1", 64);
        assert_eq!(&a[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&a[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(a[16..20].try_into().unwrap()), 64);
        // Every chunk's CRC holds, and the image data inflates to 64 rows of 1 + 64 * 3.
        let mut at = 8;
        let mut idat = Vec::new();
        while at < a.len() {
            let len = u32::from_be_bytes(a[at..at + 4].try_into().unwrap()) as usize;
            let body = &a[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(a[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32fast::hash(body), crc);
            if &body[..4] == b"IDAT" {
                idat.extend_from_slice(&body[4..]);
            }
            at += 12 + len;
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).unwrap();
        assert_eq!(raw.len(), 64 * (1 + 64 * 3));
        assert_eq!(super::render("alb_1", 64), a);
        assert_ne!(super::render("alb_2", 64), a);
    }
}
