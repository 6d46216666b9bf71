-- The license server: devices with their X25519 keys, licenses and what they cover.
CREATE TABLE drm_devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    removed_ms BIGINT NOT NULL DEFAULT 0   -- 0: active
);
CREATE INDEX drm_devices_by_user ON drm_devices (user_id);

CREATE TABLE drm_licenses (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    country TEXT NOT NULL,
    tier TEXT NOT NULL,
    issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    grace_ms BIGINT NOT NULL,
    revoked_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX drm_licenses_by_device ON drm_licenses (device_id);

CREATE TABLE drm_license_tracks (
    license_id TEXT NOT NULL,
    track_id TEXT NOT NULL,
    PRIMARY KEY (license_id, track_id)
);

-- When a user's subscription ends (Unix ms); 0: no end set.
ALTER TABLE users ADD COLUMN subscription_ends_ms BIGINT NOT NULL DEFAULT 0;
