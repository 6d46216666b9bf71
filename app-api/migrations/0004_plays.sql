-- Play events: the append-only log every count and royalty is computed from. `seq`
-- orders the hash chain: `hash` = SHA-256 of the previous event's hash and this event's
-- canonical record, so editing, deleting or inserting a row breaks every later link
-- (`segue plays verify`). (user_id, event_id) is the client's idempotency key.
CREATE TABLE play_events (
    seq BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    track_id TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ms_played BIGINT NOT NULL,
    tier TEXT NOT NULL,
    country TEXT NOT NULL,
    device TEXT NOT NULL,
    skipped BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (event_id, user_id)    -- event id first: batches look keys up by event id
);
CREATE INDEX play_events_by_start ON play_events (started_ms);

-- The chain's head: the last seq and hash. Every append locks this row first, so one
-- writer at a time extends the chain (PostgreSQL row lock; SQLite's write lock).
CREATE TABLE play_chain (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO play_chain (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Counts per track per UTC day per country, updated in the same transaction as the log.
CREATE TABLE play_counts (
    track_id TEXT NOT NULL,
    day TEXT NOT NULL,
    country TEXT NOT NULL,
    plays BIGINT NOT NULL,
    streams BIGINT NOT NULL,      -- plays of 30 s or more: the paid ones
    ms_played BIGINT NOT NULL,
    PRIMARY KEY (track_id, day, country)
);

-- Who is paid for a track, in basis points (a track's shares sum to 10000).
CREATE TABLE track_shares (
    track_id TEXT NOT NULL REFERENCES tracks (id),
    holder TEXT NOT NULL,
    share_bps BIGINT NOT NULL,
    PRIMARY KEY (track_id, holder)
);

-- Accounts flagged for a month; `open` and `confirmed` ones are left out of that
-- month's royalty report, `cleared` ones are back in.
CREATE TABLE fraud_flags (
    user_id TEXT NOT NULL,
    month TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    status TEXT NOT NULL,
    flagged_ms BIGINT NOT NULL,
    reviewed_ms BIGINT NOT NULL,
    reviewer TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (user_id, month, reason)
);
