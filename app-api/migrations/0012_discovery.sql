-- A model's map from audio embeddings to item factors (ridge regression, base64 f32,
-- '' when too few tracks had both): a track ingested after training gets factors from
-- its sound.
ALTER TABLE rec_models ADD COLUMN audio_map TEXT NOT NULL DEFAULT '';

-- What a listener's plays are looked up by: recommendations leave out what they heard.
CREATE INDEX play_events_by_user ON play_events (user_id, started_ms);

-- Discover Weekly as served: one list per listener per week (weeks start Monday 00:00
-- UTC), kept so it stays the same all week, and the impression log that exploration
-- learns from (`explore` = 1 for the slots given to cold-start tracks).
CREATE TABLE discover_weekly (
    user_id TEXT NOT NULL,
    week BIGINT NOT NULL,
    position BIGINT NOT NULL,
    track_id TEXT NOT NULL,
    explore BIGINT NOT NULL,
    model_id BIGINT NOT NULL,
    generated_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, week, position)
);
CREATE INDEX discover_weekly_explored ON discover_weekly (explore, track_id);

-- Exploration's feedback, counted by each training: per cold-start track shown in an
-- explore slot, how many listeners were shown it and how many then streamed it.
CREATE TABLE rec_explore (
    model_id BIGINT NOT NULL,
    track_id TEXT NOT NULL,
    impressions BIGINT NOT NULL,
    streams BIGINT NOT NULL,
    PRIMARY KEY (model_id, track_id)
);
