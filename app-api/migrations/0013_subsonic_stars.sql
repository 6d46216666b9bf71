-- Subsonic stars on albums and artists (`star?albumId=`, `star?artistId=`). A starred
-- song is a like (`likes`), the same as `PUT /v1/me/likes/TRACK`.
CREATE TABLE subsonic_stars (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,          -- 'album' or 'artist'
    item_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind, item_id)
);
