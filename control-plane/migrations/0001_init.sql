-- Control plane state. Times are Unix milliseconds; flags are 0/1 integers, so the
-- same queries run on SQLite and PostgreSQL.
CREATE TABLE pops (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    version TEXT NOT NULL,
    public_url TEXT NOT NULL,
    admin_url TEXT NOT NULL,
    mem_bytes BIGINT NOT NULL,
    ssd_bytes BIGINT NOT NULL,
    hit_ratio DOUBLE PRECISION NOT NULL,
    reported_healthy BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);

CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    state TEXT NOT NULL,            -- draft | scheduled | cancelled
    release_at_ms BIGINT NOT NULL,  -- UTC instant, or the local wall-clock time as if UTC when local_time = 1
    local_time BIGINT NOT NULL,
    lead_secs BIGINT NOT NULL,
    tiers TEXT NOT NULL,            -- comma-separated tier names
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE release_content (
    release_id TEXT NOT NULL REFERENCES releases (id),
    content_id TEXT NOT NULL,
    PRIMARY KEY (release_id, content_id)
);

CREATE TABLE release_regions (
    release_id TEXT NOT NULL REFERENCES releases (id),
    region TEXT NOT NULL,
    drop_at_ms BIGINT NOT NULL,
    PRIMARY KEY (release_id, region)
);

CREATE TABLE purges (
    id TEXT PRIMARY KEY,
    selector TEXT NOT NULL,         -- the JSON body sent to each POP's /admin/purge
    region TEXT NOT NULL,           -- '' for every region
    created_ms BIGINT NOT NULL
);

-- One row per (job kind, release or purge, POP): inserting it twice is a no-op, so a
-- restarted scheduler never hands out the same work twice.
CREATE TABLE jobs (
    kind TEXT NOT NULL,             -- prewarm | purge
    parent_id TEXT NOT NULL,
    pop_id TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending | running (handed to the POP) | done | failed | cancelled
    attempts BIGINT NOT NULL,
    next_try_ms BIGINT NOT NULL,
    total BIGINT NOT NULL,
    done BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    error TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, parent_id, pop_id)
);

CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX pops_by_region ON pops (region);
