-- Lyrics per track and language (ISO 639), set by admins as LRC or plain text. `lines` is
-- JSON: [{start_ms?, value}], in time order when synced.
CREATE TABLE track_lyrics (
    track_id TEXT NOT NULL REFERENCES tracks (id),
    lang TEXT NOT NULL,
    synced BIGINT NOT NULL,
    offset_ms BIGINT NOT NULL,
    lines TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (track_id, lang)
);
