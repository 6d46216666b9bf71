-- Subsonic logins for players that only speak the legacy token scheme (u, t = md5(password
-- + s), s). The server must know the password to check t, so it rests sealed (AES-256-GCM
-- under [subsonic] password_keys, bound to the user id), never hashed and never plain.
CREATE TABLE subsonic_logins (
    username TEXT PRIMARY KEY,
    user_id TEXT NOT NULL UNIQUE,
    sealed TEXT NOT NULL,        -- JSON: {version, kek, nonce, wrapped}
    updated_ms BIGINT NOT NULL
);
