-- Closed royalty months: the report as issued (JSON), the log position it covers, and
-- when. A closed month is never recomputed; plays of it (or of any earlier month) that
-- reach the log after `seq` are paid in the next month's report as adjustments.
CREATE TABLE royalty_closes (
    month TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    closed_ms BIGINT NOT NULL,
    report TEXT NOT NULL
);

-- Every version of every track's shares, with when it was in force, so a month is
-- re-rendered with the shares of the day it was closed.
CREATE TABLE track_share_versions (
    track_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    share_bps BIGINT NOT NULL,
    valid_from_ms BIGINT NOT NULL,
    valid_until_ms BIGINT NOT NULL
);
CREATE INDEX track_share_versions_by_time ON track_share_versions (valid_from_ms, valid_until_ms);
INSERT INTO track_share_versions (track_id, holder, share_bps, valid_from_ms, valid_until_ms)
SELECT track_id, holder, share_bps, 0, 9223372036854775807 FROM track_shares;

-- Every status a fraud flag has had (open when raised, then each review), so a month is
-- re-rendered leaving out the accounts that were out then.
CREATE TABLE fraud_flag_history (
    user_id TEXT NOT NULL,
    month TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX fraud_flag_history_by_month ON fraud_flag_history (month, at_ms);
INSERT INTO fraud_flag_history (user_id, month, reason, status, at_ms)
SELECT user_id, month, reason, 'open', flagged_ms FROM fraud_flags;
INSERT INTO fraud_flag_history (user_id, month, reason, status, at_ms)
SELECT user_id, month, reason, status, reviewed_ms FROM fraud_flags WHERE status <> 'open';
