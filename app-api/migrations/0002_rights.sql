-- Territorial rights, denormalized: one row per (track, country) with its validity window
-- and release time. A stream is allowed when a row exists and now is within
-- [max(valid_from, release_at), valid_until).
CREATE TABLE rights (
    track_id TEXT NOT NULL REFERENCES tracks (id),
    country TEXT NOT NULL,
    valid_from_ms BIGINT NOT NULL,
    valid_until_ms BIGINT NOT NULL,   -- 9223372036854775807: open-ended
    release_at_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (track_id, country)
);
