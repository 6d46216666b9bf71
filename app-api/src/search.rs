//! Search over tracks, albums and artists with tantivy: an index on disk, rebuilt from
//! the database at start (the database is the truth; the index is a view of it) and
//! updated on every catalog write before the write is acknowledged.
//!
//! Ranking: each query word must match a name, artist or album, exactly (weighted
//! highest), as a prefix of the last word (as the user types), or within one or two
//! edits (typos; longer words tolerate more). The text score is then multiplied by
//! log2(2 + popularity), so among similar matches the popular one wins. A track's
//! popularity is its number of likes (play counts join it with the play-counting work).

use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use sqlx::{AnyPool, Row};
use tantivy::collector::TopDocs;
use tantivy::directory::error::OpenReadError;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, Value, FAST, STORED, STRING, TEXT};
use tantivy::{
    doc, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument, TantivyError,
    Term,
};

use crate::error::Error;

/// Writer heap: plenty for a catalog's metadata.
const WRITER_HEAP: usize = 64 << 20;
/// Longest query accepted (bytes) and most words used.
const MAX_QUERY: usize = 256;
const MAX_WORDS: usize = 8;
/// Attempts at opening the newest commit when a merge retires a segment under us.
const RELOAD_RETRIES: u32 = 5;

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    kind: Field,
    name: Field,
    artist: Field,
    album: Field,
    popularity: Field,
}

pub struct Search {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub artist: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub album: String,
    pub score: f32,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Database(format!("search index: {e}"))
}

impl Search {
    /// A fresh index in `dir` (what was there is replaced: it is rebuilt from the DB).
    pub fn create(dir: &Path) -> Result<Self, Error> {
        let mut b = Schema::builder();
        let f = Fields {
            id: b.add_text_field("id", STRING | STORED),
            kind: b.add_text_field("kind", STRING | STORED),
            name: b.add_text_field("name", TEXT | STORED),
            artist: b.add_text_field("artist", TEXT | STORED),
            album: b.add_text_field("album", TEXT | STORED),
            popularity: b.add_u64_field("popularity", FAST | STORED),
        };
        let schema = b.build();
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let index = Index::create_in_dir(dir, schema).map_err(err)?;
        let writer = index.writer_with_num_threads(1, WRITER_HEAP).map_err(err)?;
        // Reloads happen in `put`, under the writer lock, right after each commit: a second,
        // file-watching reloader would only race them.
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
        Ok(Search { index, reader, writer: Mutex::new(writer), f })
    }

    /// Index every track, album and artist in the database.
    pub async fn rebuild(&self, pool: &AnyPool) -> Result<usize, Error> {
        let tracks = sqlx::query(
            "SELECT t.id, t.title, al.title AS album, \
             (SELECT a.name FROM track_artists ta JOIN artists a ON a.id = ta.artist_id \
              WHERE ta.track_id = t.id ORDER BY ta.position LIMIT 1) AS artist, \
             (SELECT COUNT(*) FROM likes l WHERE l.track_id = t.id) AS likes \
             FROM tracks t JOIN albums al ON al.id = t.album_id",
        )
        .fetch_all(pool)
        .await?;
        let albums =
            sqlx::query("SELECT al.id, al.title, ar.name FROM albums al JOIN artists ar ON ar.id = al.artist_id")
                .fetch_all(pool)
                .await?;
        let artists = sqlx::query("SELECT id, name FROM artists").fetch_all(pool).await?;
        let mut docs = Vec::with_capacity(tracks.len() + albums.len() + artists.len());
        for r in &tracks {
            docs.push(Entry {
                kind: "track",
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                album: r.try_get(2)?,
                artist: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                popularity: r.try_get::<i64, _>(4)?.max(0) as u64,
            });
        }
        for r in &albums {
            docs.push(Entry {
                kind: "album",
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                artist: r.try_get(2)?,
                album: String::new(),
                popularity: 0,
            });
        }
        for r in &artists {
            docs.push(Entry {
                kind: "artist",
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                artist: String::new(),
                album: String::new(),
                popularity: 0,
            });
        }
        let n = docs.len();
        self.put(docs)?;
        Ok(n)
    }

    /// Add or replace entries, committed and visible to searches when this returns.
    pub fn put(&self, entries: Vec<Entry>) -> Result<(), Error> {
        let mut w = self.writer.lock().map_err(|_| err("writer lock poisoned"))?;
        for e in entries {
            w.delete_term(Term::from_field_text(self.f.id, &e.id));
            w.add_document(doc!(
                self.f.id => e.id,
                self.f.kind => e.kind,
                self.f.name => e.name,
                self.f.artist => e.artist,
                self.f.album => e.album,
                self.f.popularity => e.popularity,
            ))
            .map_err(err)?;
        }
        w.commit().map_err(|e| err(format!("commit: {e}")))?;
        self.reload()
    }

    /// Opens the newest commit. Under concurrent commits and background merges tantivy has
    /// been seen (in CI) to report a just-retired segment's file as missing while opening;
    /// each attempt re-reads meta.json, so a missing file is retried rather than failing a
    /// write the database has already made.
    fn reload(&self) -> Result<(), Error> {
        let mut attempt = 0;
        loop {
            match self.reader.reload() {
                Ok(()) => return Ok(()),
                Err(TantivyError::OpenReadError(OpenReadError::FileDoesNotExist(path))) if attempt < RELOAD_RETRIES => {
                    attempt += 1;
                    tracing::debug!(path = %path.display(), attempt, "search index: segment retired while opening; retrying");
                }
                Err(e) => return Err(err(format!("reload: {e}"))),
            }
        }
    }

    /// Up to `limit` hits for `q` among `kinds` (empty: all), best first.
    pub fn search(&self, q: &str, kinds: &[&str], limit: usize) -> Result<Vec<Hit>, Error> {
        if q.len() > MAX_QUERY {
            return Err(Error::BadRequest(format!("q is over {MAX_QUERY} bytes")));
        }
        let mut analyzer = self.index.tokenizer_for_field(self.f.name).map_err(err)?;
        let mut words = Vec::new();
        let mut stream = analyzer.token_stream(q);
        while stream.advance() {
            if words.len() < MAX_WORDS {
                words.push(stream.token().text.clone());
            }
        }
        if words.is_empty() {
            return Err(Error::BadRequest("q has no words to search for".into()));
        }
        let last = words.len() - 1;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (i, word) in words.iter().enumerate() {
            let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            let typos: u8 = match word.chars().count() {
                0..=3 => 0,
                4..=7 => 1,
                _ => 2,
            };
            for (field, weight) in [(self.f.name, 3.0), (self.f.artist, 1.5), (self.f.album, 1.0)] {
                let term = Term::from_field_text(field, word);
                let boosted = |q: Box<dyn Query>, b: f32| -> (Occur, Box<dyn Query>) {
                    (Occur::Should, Box::new(BoostQuery::new(q, b * weight)))
                };
                any.push(boosted(Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)), 4.0));
                if i == last {
                    any.push(boosted(Box::new(FuzzyTermQuery::new_prefix(term.clone(), 0, true)), 2.0));
                }
                // Typos are looked for in names and artists (album titles match exactly
                // or by prefix): each fuzzy clause walks the term dictionary, the main
                // cost of a query.
                if typos > 0 && field != self.f.album {
                    any.push(boosted(Box::new(FuzzyTermQuery::new(term.clone(), typos, true)), 1.0));
                    // A typo inside a prefix being typed, once it is long enough to say much.
                    if i == last && word.chars().count() >= 5 {
                        any.push(boosted(Box::new(FuzzyTermQuery::new_prefix(term, 1, true)), 0.5));
                    }
                }
            }
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if !kinds.is_empty() {
            let of_kind: Vec<(Occur, Box<dyn Query>)> = kinds
                .iter()
                .map(|k| {
                    let q: Box<dyn Query> =
                        Box::new(TermQuery::new(Term::from_field_text(self.f.kind, k), IndexRecordOption::Basic));
                    (Occur::Should, q)
                })
                .collect();
            must.push((Occur::Must, Box::new(BooleanQuery::new(of_kind))));
        }
        let query = BooleanQuery::new(must);
        let collector = TopDocs::with_limit(limit.clamp(1, 100)).tweak_score(move |segment: &SegmentReader| {
            let pop = segment.fast_fields().u64("popularity").ok().map(|c| c.first_or_default_col(0));
            move |doc: DocId, score: Score| {
                let p = pop.as_ref().map_or(0, |c| c.get_val(doc));
                score * ((2 + p) as Score).log2()
            }
        });
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &collector).map_err(err)?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr).map_err(err)?;
            let text = |f: Field| d.get_first(f).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            hits.push(Hit {
                kind: text(self.f.kind),
                id: text(self.f.id),
                name: text(self.f.name),
                artist: text(self.f.artist),
                album: text(self.f.album),
                score,
            });
        }
        // Equal matches in a stable order (by name): the scores of equal matches differ in
        // their last bits with the index's segment layout, which clients should not see.
        let key = |h: &Hit| (h.score * 1000.0).round() as i64;
        hits.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name)).then_with(|| a.id.cmp(&b.id)));
        Ok(hits)
    }
}

/// One indexed thing.
pub struct Entry {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub artist: String,
    pub album: String,
    pub popularity: u64,
}

impl Entry {
    /// A track (liked `likes` times), its album and its artists, as entries.
    pub fn for_track(t: &crate::catalog::Track, likes: u64) -> Vec<Entry> {
        let first = t.artists.first().map(|a| a.name.clone()).unwrap_or_default();
        let mut out = vec![
            Entry {
                kind: "track",
                id: t.id.clone(),
                name: t.title.clone(),
                artist: first,
                album: t.album.title.clone(),
                popularity: likes,
            },
            Entry {
                kind: "album",
                id: t.album.id.clone(),
                name: t.album.title.clone(),
                artist: t.album.artist.name.clone(),
                album: String::new(),
                popularity: 0,
            },
        ];
        for a in t.artists.iter().chain(std::iter::once(&t.album.artist)) {
            if !out.iter().any(|e| e.id == a.id) {
                out.push(Entry {
                    kind: "artist",
                    id: a.id.clone(),
                    name: a.name.clone(),
                    artist: String::new(),
                    album: String::new(),
                    popularity: 0,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: usize, pop: u64) -> Entry {
        Entry {
            kind: "track",
            id: format!("trk_{id:012}"),
            name: format!("song number {id}"),
            artist: "someone".into(),
            album: "an album".into(),
            popularity: pop,
        }
    }

    #[test]
    fn concurrent_replacements_and_searches_never_fail() {
        let dir = std::env::temp_dir().join(format!("segue-search-test-{}", std::process::id()));
        let search = std::sync::Arc::new(Search::create(&dir).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = search.clone();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        s.put(vec![entry((i * 7 + t) % 10, i as u64), entry(100 + t, i as u64)]).unwrap();
                        s.search("song", &[], 10).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(search.search("number", &["track"], 50).unwrap().len(), 14);
        std::fs::remove_dir_all(&dir).ok();
    }
}
