-- Each POP's load from its last heartbeat: client connections open, egress over the last
-- interval, and whether it is over its configured capacity (the app API then sends new
-- streams elsewhere).
ALTER TABLE pops ADD COLUMN connections BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pops ADD COLUMN egress_mbps DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE pops ADD COLUMN saturated BIGINT NOT NULL DEFAULT 0;
