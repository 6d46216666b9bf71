-- App-api catalog and users. Times are Unix milliseconds; flags are 0/1 integers, so
-- the same queries run on SQLite and PostgreSQL.
CREATE TABLE artists (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,   -- lowercased name: one artist per name
    created_ms BIGINT NOT NULL
);

CREATE TABLE albums (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    artist_id TEXT NOT NULL REFERENCES artists (id),
    title_key TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    UNIQUE (artist_id, title_key)
);

CREATE TABLE tracks (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    album_id TEXT NOT NULL REFERENCES albums (id),
    disc_number BIGINT NOT NULL,
    track_number BIGINT NOT NULL,
    genre TEXT NOT NULL,
    isrc TEXT NOT NULL,
    explicit BIGINT NOT NULL,
    content_id TEXT NOT NULL,
    samples BIGINT NOT NULL,         -- exact samples per channel of the master
    sample_rate BIGINT NOT NULL,
    loudness_lufs DOUBLE PRECISION NOT NULL,
    true_peak_dbtp DOUBLE PRECISION NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX tracks_by_album ON tracks (album_id, disc_number, track_number);
CREATE INDEX tracks_by_content ON tracks (content_id);

CREATE TABLE track_artists (
    track_id TEXT NOT NULL REFERENCES tracks (id),
    artist_id TEXT NOT NULL REFERENCES artists (id),
    position BIGINT NOT NULL,
    PRIMARY KEY (track_id, artist_id)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,  -- the API key is shown once and stored hashed
    admin BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
