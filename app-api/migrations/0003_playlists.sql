-- Playlists and the library. A playlist's items are one JSON list (the order is the
-- data); every change is logged with its exact indices, which is what rebasing
-- concurrent edits needs. `version` counts logged changes.
CREATE TABLE playlists (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    collaborative BIGINT NOT NULL,
    version BIGINT NOT NULL,
    items TEXT NOT NULL,
    deleted BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX playlists_by_owner ON playlists (owner_id);

CREATE TABLE playlist_ops (
    playlist_id TEXT NOT NULL REFERENCES playlists (id),
    version BIGINT NOT NULL,          -- the version this change produced
    user_id TEXT NOT NULL,
    applied TEXT NOT NULL,            -- JSON of what was done, with indices
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (playlist_id, version)
);

CREATE TABLE playlist_editors (
    playlist_id TEXT NOT NULL REFERENCES playlists (id),
    user_id TEXT NOT NULL,
    PRIMARY KEY (playlist_id, user_id)
);

CREATE TABLE likes (
    user_id TEXT NOT NULL,
    track_id TEXT NOT NULL REFERENCES tracks (id),
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, track_id)
);
