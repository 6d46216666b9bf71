//! Lyrics per track and language, set by the catalog's admins as LRC (`[mm:ss.xx]` line
//! stamps: synced) or plain text (unsynced), served to the app and to Subsonic players
//! (the `songLyrics` extension).

use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::error::Error;

/// Largest lyrics text accepted, lines in it, and characters in one line.
const MAX_BYTES: usize = 64 << 10;
const MAX_LINES: usize = 2_000;
const MAX_LINE_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// Where the line starts, ms from the track's start (synced lyrics only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lyrics {
    pub lang: String,
    pub synced: bool,
    /// Milliseconds to add to every stamp (LRC's `[offset:]`, whose positive values
    /// show lines earlier).
    pub offset_ms: i64,
    pub lines: Vec<Line>,
}

/// `PUT /v1/admin/tracks/ID/lyrics/LANG`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLyrics {
    pub text: String,
}

/// A language tag as Subsonic clients use them: ISO 639 (two or three lowercase letters),
/// or `und` / `xxx` for unknown.
pub fn check_lang(lang: &str) -> Result<(), Error> {
    if (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase()) {
        return Ok(());
    }
    Err(Error::BadRequest(format!("language {lang:?} must be an ISO 639 code of 2-3 lowercase letters (eng, sv, und)")))
}

/// `[mm:ss]`, `[mm:ss.x]`, `[mm:ss.xx]` or `[mm:ss.xxx]` as ms.
fn stamp(tag: &str) -> Option<i64> {
    let (m, s) = tag.split_once(':')?;
    let (s, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(m) || !digits(s) || s.len() != 2 || (!frac.is_empty() && (!digits(frac) || frac.len() > 3)) {
        return None;
    }
    let (m, s): (i64, i64) = (m.parse().ok()?, s.parse().ok()?);
    if s >= 60 {
        return None;
    }
    let frac_ms = if frac.is_empty() { 0 } else { frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32) };
    Some(m.checked_mul(60_000)? + s * 1000 + frac_ms)
}

/// Parse LRC or plain text. Synced when every line with words carries a stamp; a line
/// may carry several (a repeated chorus). ID tags (`[ar:]`, `[ti:]`...) are dropped;
/// `[offset:]` is kept.
pub fn parse(lang: &str, text: &str) -> Result<Lyrics, Error> {
    check_lang(lang)?;
    if text.len() > MAX_BYTES {
        return Err(Error::BadRequest(format!("text: at most {MAX_BYTES} bytes")));
    }
    let mut offset_ms = 0;
    let mut stamped = Vec::new();
    let mut plain = Vec::new();
    let mut all_stamped = true;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(Error::BadRequest(format!("text: line {} holds a control character", n + 1)));
        }
        let mut rest = line.trim_start();
        let mut starts = Vec::new();
        let mut id_tag = false;
        while let Some(inner) = rest.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            let tag = &inner[..end];
            match stamp(tag) {
                Some(ms) => starts.push(ms),
                None => match tag.split_once(':') {
                    Some((key, v)) if key.bytes().all(|b| b.is_ascii_alphabetic()) && starts.is_empty() => {
                        id_tag = true;
                        if key.eq_ignore_ascii_case("offset") {
                            offset_ms = v.trim().parse().map_err(|_| {
                                Error::BadRequest(format!("text: line {}: offset {v:?} is not milliseconds", n + 1))
                            })?;
                        }
                    }
                    _ => break,
                },
            }
            rest = &inner[end + 1..];
        }
        let value = rest.trim().to_owned();
        if value.chars().count() > MAX_LINE_CHARS {
            return Err(Error::BadRequest(format!("text: line {} is over {MAX_LINE_CHARS} characters", n + 1)));
        }
        if id_tag && starts.is_empty() {
            continue;
        }
        if starts.is_empty() {
            if !value.is_empty() {
                all_stamped = false;
            }
            plain.push(Line { start_ms: None, value });
        } else {
            let shown = if id_tag { String::new() } else { value };
            stamped.extend(starts.into_iter().map(|s| Line { start_ms: Some(s), value: shown.clone() }));
            plain.push(Line { start_ms: None, value: rest.trim().to_owned() });
        }
    }
    let synced = all_stamped && !stamped.is_empty();
    let mut lines = if synced {
        stamped.sort_by_key(|l| l.start_ms);
        stamped
    } else {
        // Plain text: stamps, if some lines had them, are dropped; blank lines between
        // verses stay, leading and trailing ones do not.
        let first = plain.iter().position(|l| !l.value.is_empty()).unwrap_or(plain.len());
        let last = plain.iter().rposition(|l| !l.value.is_empty()).map_or(first, |p| p + 1);
        plain[first..last].to_vec()
    };
    if lines.iter().all(|l| l.value.is_empty()) {
        return Err(Error::BadRequest("text: no lyrics in it".into()));
    }
    if lines.len() > MAX_LINES {
        return Err(Error::BadRequest(format!("text: at most {MAX_LINES} lines")));
    }
    lines.shrink_to_fit();
    Ok(Lyrics { lang: lang.to_owned(), synced, offset_ms, lines })
}

/// Store `lyrics` of `track` (replacing its lyrics in that language).
pub async fn put(pool: &AnyPool, track: &str, lyrics: &Lyrics, now_ms: i64) -> Result<(), Error> {
    let lines = serde_json::to_string(&lyrics.lines).map_err(|e| Error::Database(e.to_string()))?;
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM track_lyrics WHERE track_id = $1 AND lang = $2")
        .bind(track)
        .bind(&lyrics.lang)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO track_lyrics (track_id, lang, synced, offset_ms, lines, updated_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(track)
    .bind(&lyrics.lang)
    .bind(lyrics.synced as i64)
    .bind(lyrics.offset_ms)
    .bind(&lines)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Remove `track`'s lyrics in `lang`; whether there were any.
pub async fn remove(pool: &AnyPool, track: &str, lang: &str) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM track_lyrics WHERE track_id = $1 AND lang = $2")
        .bind(track)
        .bind(lang)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every language's lyrics of `track`, synced ones first.
pub async fn of_track(pool: &AnyPool, track: &str) -> Result<Vec<Lyrics>, Error> {
    let rows = sqlx::query(
        "SELECT lang, synced, offset_ms, lines FROM track_lyrics WHERE track_id = $1 ORDER BY synced DESC, lang",
    )
    .bind(track)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let lines: String = r.try_get(3)?;
            Ok(Lyrics {
                lang: r.try_get(0)?,
                synced: r.try_get::<i64, _>(1)? != 0,
                offset_ms: r.try_get(2)?,
                lines: serde_json::from_str(&lines).map_err(|e| Error::Database(format!("lyrics of {track}: {e}")))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lrc_is_synced_in_time_order_with_repeats_and_offset() {
        let lrc = "[ar:Segue Demo]\n[ti:Part 1]\n[offset:+250]\n[00:12.5]First line\n\
                   [00:01.00][00:30.250]Chorus\n[01:02]Last";
        let l = parse("eng", lrc).unwrap();
        assert!(l.synced);
        assert_eq!(l.offset_ms, 250);
        let got: Vec<(Option<i64>, &str)> = l.lines.iter().map(|x| (x.start_ms, x.value.as_str())).collect();
        assert_eq!(
            got,
            [(Some(1_000), "Chorus"), (Some(12_500), "First line"), (Some(30_250), "Chorus"), (Some(62_000), "Last")]
        );
    }

    #[test]
    fn plain_text_is_unsynced_and_bad_input_says_why() {
        let l = parse("sv", "\n\nVerse one\nstill one\n\nVerse two\n\n").unwrap();
        assert!(!l.synced);
        let got: Vec<&str> = l.lines.iter().map(|x| x.value.as_str()).collect();
        assert_eq!(got, ["Verse one", "still one", "", "Verse two"]);
        // A lyric with some stamps and some bare lines is plain text without the stamps.
        let mixed = parse("eng", "[00:01.00]one\ntwo").unwrap();
        assert!(!mixed.synced);
        assert_eq!(mixed.lines.iter().map(|x| x.value.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert!(parse("English", "x").is_err());
        assert!(parse("eng", "\n  \n").is_err());
        assert!(parse("eng", "[offset:soon]\n[00:01.00]x").is_err());
        assert!(parse("eng", "bell\u{7}").is_err());
        assert!(parse("eng", &"la ".repeat(30_000)).is_err());
        // Not a stamp: seconds past 59, or letters.
        assert!(!parse("eng", "[00:61.00]x").unwrap().synced);
    }
}
