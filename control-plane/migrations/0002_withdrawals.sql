-- Rights withdrawn in a country (from the app API), pushed to every POP with the
-- heartbeat answer so URLs signed before the withdrawal stop working. An entry is needed
-- only until the last such URL has expired (`until_ms`), then it is dropped.
CREATE TABLE withdrawals (
    content_id TEXT NOT NULL,
    country TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (content_id, country)
);
