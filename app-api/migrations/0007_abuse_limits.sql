-- Gateways: keys that post plays for other users (a partner's backend), without being
-- admins.
ALTER TABLE users ADD COLUMN gateway BIGINT NOT NULL DEFAULT 0;

-- Listening per user per UTC day (by the plays' start), for the 24 h a day limit.
CREATE TABLE play_user_days (
    user_id TEXT NOT NULL,
    day TEXT NOT NULL,
    ms_played BIGINT NOT NULL,
    PRIMARY KEY (user_id, day)
);

-- Each (user, device)'s latest play, for refusing plays that overlap it (one device
-- plays one track at a time).
CREATE TABLE play_devices (
    user_id TEXT NOT NULL,
    device TEXT NOT NULL,
    last_started_ms BIGINT NOT NULL,
    last_end_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device)
);
