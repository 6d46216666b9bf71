-- How far the device's clock was off when it sent the event (server clock minus device
-- clock, milliseconds; 0 within the tolerance). `started_ms` is already corrected by it;
-- `started_ms - clock_offset_ms` is what the device said, the payload a retry repeats.
ALTER TABLE play_events ADD COLUMN clock_offset_ms BIGINT NOT NULL DEFAULT 0;

-- An event id sent again with a different payload (a buggy or forging client): the first
-- one stays counted, the second is answered `conflict` and kept here for audit.
CREATE TABLE play_conflicts (
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    payload TEXT NOT NULL,        -- the refused event, as JSON
    PRIMARY KEY (user_id, event_id, received_ms)
);
