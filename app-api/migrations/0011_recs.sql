-- Trained recommendation models: the latest serves, the one before stays for comparison.
CREATE TABLE rec_models (
    id BIGINT PRIMARY KEY,
    trained_ms BIGINT NOT NULL,
    factors BIGINT NOT NULL,
    users BIGINT NOT NULL,
    tracks BIGINT NOT NULL,
    plays BIGINT NOT NULL,
    params TEXT NOT NULL
);

-- One factor vector per user ('user') and track ('track') of a model: little-endian f32,
-- base64.
CREATE TABLE rec_vectors (
    model_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    vector TEXT NOT NULL,
    PRIMARY KEY (model_id, kind, id)
);
