-- Request and 5xx counts from each POP's last heartbeat, and the rates between its last
-- two (for the console and GET /v1/pops).
ALTER TABLE pops ADD COLUMN requests BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pops ADD COLUMN errors BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pops ADD COLUMN requests_per_s DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE pops ADD COLUMN errors_per_s DOUBLE PRECISION NOT NULL DEFAULT 0;
