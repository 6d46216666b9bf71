//! The OpenAPI 3.1 document served at `/openapi.json`, kept next to the routes it
//! describes (`api.rs`).

use serde_json::{json, Value};

fn error_responses() -> Value {
    let err = json!({ "$ref": "#/components/schemas/Error" });
    json!({
        "400": { "description": "bad input; nothing changed", "content": { "application/json": { "schema": err } } },
        "401": { "description": "no or unknown bearer token", "content": { "application/json": { "schema": err } } },
        "404": { "description": "no such resource", "content": { "application/json": { "schema": err } } }
    })
}

fn op(summary: &str, ok: &str, schema: &str, body: Option<&str>) -> Value {
    let mut responses = error_responses();
    responses[ok] = json!({
        "description": summary,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    });
    let mut o = json!({ "summary": summary, "security": [{ "bearer": [] }], "responses": responses });
    if let Some(b) = body {
        o["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{b}") } } }
        });
    }
    o
}

fn id_param() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

pub fn document() -> Value {
    let mut doc = catalog_and_plays();
    drm(&mut doc);
    listening(&mut doc);
    accounts_and_lyrics(&mut doc);
    doc
}

/// API keys, Subsonic logins and lyrics.
fn accounts_and_lyrics(doc: &mut Value) {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer" });
    let schemas = &mut doc["components"]["schemas"];
    schemas["ApiKey"] = json!({ "type": "object", "properties": { "api_key": string } });
    schemas["KeyFingerprint"] = json!({ "type": "object", "properties": {
        "fingerprint": { "type": "string", "description": "the first 12 hex digits of the key's SHA-256" } } });
    schemas["SubsonicLogin"] = json!({ "type": "object", "required": ["username", "password"], "properties": {
        "username": { "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$" },
        "password": { "type": "string", "minLength": 8, "maxLength": 128 } } });
    schemas["NewLyrics"] = json!({ "type": "object", "required": ["text"], "properties": {
        "text": { "type": "string", "description": "LRC ([mm:ss.xx] stamps: synced) or plain text, up to 64 KiB" } } });
    schemas["TrackLyrics"] = json!({ "type": "object", "properties": { "track_id": string, "lyrics": { "type": "array",
        "items": { "type": "object", "properties": { "lang": string, "synced": { "type": "boolean" }, "offset_ms": int,
            "lines": { "type": "array", "items": { "type": "object", "properties": { "start_ms": int, "value": string } } } } } } } });
    let lang = json!({ "name": "lang", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[a-z]{2,3}$" } });
    let paths = &mut doc["paths"];
    paths["/v1/me/api-key"] = json!({
        "get": op("which API key is active: a fingerprint", "200", "KeyFingerprint", None),
        "post": op("replace the caller's API key; the old one stops working at once (shown once)", "200", "ApiKey", None) });
    paths["/v1/admin/users/{id}/api-key"] = json!({ "parameters": id_param(),
        "post": op("revoke a user's API key and issue a new one (admin)", "200", "ApiKey", None) });
    paths["/v1/me/subsonic-login"] = json!({
        "put": op("set the caller's Subsonic username and password (sealed at rest) for token-scheme players", "200",
            "SubsonicLogin", Some("SubsonicLogin")),
        "delete": op("remove the caller's Subsonic login", "200", "SubsonicLogin", None) });
    paths["/v1/tracks/{id}/lyrics"] = json!({ "parameters": id_param(),
        "get": op("the track's lyrics in every language, synced first", "200", "TrackLyrics", None) });
    paths["/v1/admin/tracks/{id}/lyrics/{lang}"] = json!({
        "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }, lang ],
        "put": op("set the track's lyrics in a language (admin)", "200", "TrackLyrics", Some("NewLyrics")),
        "delete": op("remove the track's lyrics in a language (admin)", "200", "TrackLyrics", None) });
}

/// Shuffle and radio.
fn listening(doc: &mut Value) {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer" });
    doc["components"]["schemas"]["Shuffled"] = json!({ "type": "object", "properties": { "playlist": string,
        "version": int, "adjacencies": int, "recommended": int, "model": int, "items": { "type": "array", "items": { "type": "object",
            "properties": { "item_id": string, "track_id": string, "recommended": { "type": "boolean" },
                "score": { "type": "number" } } } } } });
    doc["components"]["schemas"]["Radio"] = json!({ "type": "object", "properties": { "track_id": string,
        "model": int, "country": string, "tracks": { "type": "array", "items": { "type": "object",
            "properties": { "track_id": string, "score": { "type": "number" } } } } } });
    doc["components"]["schemas"]["DiscoverWeekly"] = json!({ "type": "object", "properties": {
        "week_start": string, "model": int, "generated": string, "country": string, "reason": string,
        "tracks": { "type": "array", "items": { "type": "object",
            "properties": { "track_id": string, "explore": { "type": "boolean" } } } } } });
    doc["components"]["schemas"]["DailyMixes"] = json!({ "type": "object", "properties": {
        "day": string, "model": int, "country": string, "mixes": { "type": "array", "items": { "type": "object",
            "properties": { "name": string, "artists": { "type": "array", "items": { "type": "object" } },
                "tracks": { "type": "array", "items": { "type": "object", "properties": {
                    "track_id": string, "familiar": { "type": "boolean" } } } } } } } } });
    doc["paths"]["/v1/playlists/{id}/shuffle"] = json!({ "parameters": [
            { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
            { "name": "smart", "in": "query", "schema": { "type": "boolean" } },
            { "name": "every", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 50 } } ],
        "post": op("the items in a new random order, no artist twice in a row when possible; with smart=true one \
            recommendation of the playlist's sound after every `every` (3) tracks (owner, editors)", "200", "Shuffled", None) });
    doc["paths"]["/v1/me/discover-weekly"] = json!({
        "get": op("30 tracks the listener never played, the same all week; 3 explore new releases", "200", "DiscoverWeekly", None) });
    doc["paths"]["/v1/me/daily-mixes"] = json!({
        "get": op("the listener's streams grouped by taste, each topped up with unheard tracks like it", "200", "DailyMixes", None) });
    doc["paths"]["/v1/tracks/{id}/radio"] = json!({ "parameters": [
            { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
            { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } } ],
        "get": op("similar tracks the listener may play: collaborative and audio cosines", "200", "Radio", None) });
}

/// The license server's schemas and routes.
fn drm(doc: &mut Value) {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer" });
    let signed = json!({ "type": "object", "required": ["kid", "payload", "signature"], "properties": {
        "kid": string, "payload": { "type": "string", "description": "base64 of the license or renewal JSON" },
        "signature": { "type": "string", "description": "base64 Ed25519 over `segue {kind} v1\\n` + payload" } } });
    let schemas = &mut doc["components"]["schemas"];
    schemas["Signed"] = signed;
    schemas["ServerKey"] =
        json!({ "type": "object", "properties": { "kid": string, "public_key": string, "algorithm": string } });
    schemas["NewDevice"] = json!({ "type": "object", "required": ["name", "public_key"], "properties": {
        "name": string, "public_key": { "type": "string", "description": "base64 of a 32-byte X25519 public key" } } });
    schemas["Device"] = json!({ "type": "object", "properties": { "id": string, "name": string, "public_key": string, "created_ms": int } });
    schemas["Devices"] = json!({ "type": "object", "properties": { "devices": { "type": "array", "items": { "$ref": "#/components/schemas/Device" } } } });
    schemas["LicenseRequest"] = json!({ "type": "object", "required": ["device"], "properties": {
        "device": string, "tracks": { "type": "array", "items": string }, "album": string, "playlist": string,
        "tier": { "enum": ["low", "normal", "standard", "high", "very_high"] } } });
    schemas["Issued"] = json!({ "type": "object", "properties": { "id": string, "expires_ms": int, "grace_ms": int,
        "tracks": int, "license": { "$ref": "#/components/schemas/Signed" }, "server_key": { "$ref": "#/components/schemas/ServerKey" } } });
    schemas["Downloads"] = json!({ "type": "object", "properties": { "license": string, "tier": string, "expires_at": int,
        "downloads": { "type": "array", "items": { "type": "object", "properties": { "track_id": string, "content_id": string,
            "url": string, "fallback_url": string, "seek_table_url": string } } } } });
    schemas["RenewRequest"] = json!({ "type": "object", "required": ["licenses"], "properties": {
        "licenses": { "type": "array", "items": string, "minItems": 1, "maxItems": 1000 } } });
    schemas["Renewals"] = json!({ "type": "object", "properties": {
        "renewals": { "type": "array", "items": { "$ref": "#/components/schemas/Signed" } },
        "refused": { "type": "array", "items": { "type": "object", "properties": { "license": string,
            "error": { "enum": ["not_found", "revoked", "device_removed"] }, "message": string } } } } });
    schemas["Subscription"] = json!({ "type": "object", "required": ["ends_ms"], "properties": { "ends_ms": int } });
    let paths = &mut doc["paths"];
    paths["/v1/drm/server-key"] = json!({ "get": op("the key licenses are signed with", "200", "ServerKey", None) });
    paths["/v1/drm/devices"] = json!({
        "post": op("register a device key (409 device_limit past drm.max_devices)", "201", "Device", Some("NewDevice")),
        "get": op("the caller's devices", "200", "Devices", None) });
    paths["/v1/drm/devices/{id}"] = json!({ "parameters": id_param(),
        "delete": op("remove a device; its licenses are revoked", "200", "Device", None) });
    paths["/v1/drm/licenses"] = json!({ "post": op(
        "a license for tracks, an album or a playlist, keys sealed to the device (403 subscription_ended, forbidden, embargoed; 409 device_limit)",
        "201", "Issued", Some("LicenseRequest")) });
    paths["/v1/drm/licenses/{id}/downloads"] = json!({ "parameters": id_param(),
        "get": op("signed edge URLs of the license's encrypted objects and seek tables", "200", "Downloads", None) });
    paths["/v1/drm/renewals"] = json!({ "post": op("renew licenses by id: new dates and revoked tracks, signed", "200", "Renewals", Some("RenewRequest")) });
    paths["/v1/admin/users/{id}/subscription"] = json!({ "parameters": id_param(),
        "put": op("set when a user's subscription ends, 0: no end (admin)", "200", "Subscription", Some("Subscription")) });
}

fn catalog_and_plays() -> Value {
    let string = json!({ "type": "string" });
    let int = json!({ "type": "integer" });
    let artist_ref = json!({ "type": "object", "properties": { "id": string, "name": string } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Segue app API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error", "detail"],
                           "properties": { "error": string, "detail": string } },
                "Track": { "type": "object", "properties": {
                    "id": string, "title": string, "artists": { "type": "array", "items": artist_ref },
                    "album": { "type": "object", "properties": { "id": string, "title": string, "artist": artist_ref } },
                    "disc_number": int, "track_number": int, "duration_ms": int, "genre": string, "isrc": string,
                    "explicit": { "type": "boolean" }, "content_id": string, "samples": int, "sample_rate": int,
                    "loudness": { "type": "object", "properties": {
                        "integrated_lufs": { "type": "number" }, "true_peak_dbtp": { "type": "number" } } } } },
                "Album": { "type": "object", "properties": { "id": string, "title": string, "artist": artist_ref,
                    "duration_ms": int, "tracks": { "type": "array", "items": { "$ref": "#/components/schemas/Track" } } } },
                "Artist": { "type": "object", "properties": { "id": string, "name": string,
                    "albums": { "type": "array", "items": { "type": "object", "properties": { "id": string, "title": string } } } } },
                "User": { "type": "object", "properties": { "id": string, "name": string, "country": string,
                    "admin": { "type": "boolean" } } },
                "NewTrack": { "type": "object", "required": ["content_id", "title", "artists", "album", "track_number"],
                    "properties": { "content_id": { "type": "string", "pattern": "^[0-9a-f]{64}$" }, "title": string,
                        "artists": { "type": "array", "items": string, "minItems": 1 }, "album": string,
                        "album_artist": string, "disc_number": int, "track_number": int, "genre": string,
                        "isrc": string, "explicit": { "type": "boolean" } } },
                "TrackEdit": { "type": "object", "properties": { "title": string, "disc_number": int,
                    "track_number": int, "genre": string, "isrc": string, "explicit": { "type": "boolean" } } },
                "SearchResult": { "type": "object", "properties": { "q": string, "hits": { "type": "array",
                    "items": { "type": "object", "properties": { "type": { "enum": ["track", "album", "artist"] },
                        "id": string, "name": string, "artist": string, "album": string,
                        "score": { "type": "number" } } } } } },
                "Stream": { "type": "object", "properties": { "track_id": string, "tier": string, "url": string,
                    "fallback_url": string, "seek_table_url": string, "expires_at": int, "duration_ms": int,
                    "samples": int, "sample_rate": int, "encoder_delay": int, "padding": int,
                    "loudness": { "type": "object" }, "pops_from": string } },
                "Grant": { "type": "object", "required": ["countries"], "properties": {
                    "countries": { "type": "array", "items": { "type": "string", "pattern": "^[A-Z]{2}$" } },
                    "valid_from_ms": int, "valid_until_ms": int, "release_at_ms": int } },
                "Rights": { "type": "object", "properties": { "track_id": string, "rights": { "type": "array",
                    "items": { "type": "object", "properties": { "country": string, "valid_from_ms": int,
                        "valid_until_ms": int, "release_at_ms": int } } } } },
                "Playlist": { "type": "object", "properties": { "id": string, "name": string, "owner_id": string,
                    "collaborative": { "type": "boolean" }, "version": int, "items": { "type": "array",
                        "items": { "type": "object", "properties": { "item_id": string, "track_id": string } } } } },
                "NewPlaylist": { "type": "object", "required": ["name"], "properties": { "name": string,
                    "collaborative": { "type": "boolean" } } },
                "Edit": { "type": "object", "required": ["version", "ops"], "properties": { "version": int,
                    "ops": { "type": "array", "items": { "type": "object", "required": ["op"], "properties": {
                        "op": { "enum": ["add", "remove", "move"] }, "track_id": string, "item_id": string, "index": int } } } } },
                "EditResult": { "type": "object", "properties": { "version": int,
                    "applied": { "type": "array", "items": { "type": "object" } },
                    "items": { "type": "array", "items": { "type": "object" } } } },
                "NewUser": { "type": "object", "required": ["name", "country"], "properties": { "name": string,
                    "country": { "type": "string", "pattern": "^[A-Z]{2}$" }, "admin": { "type": "boolean" } } },
                "CreatedUser": { "type": "object", "properties": { "user": { "$ref": "#/components/schemas/User" },
                    "api_key": string } },
                "PlayBatch": { "type": "object", "required": ["events"], "properties": { "sent_ms": int,
                    "events": { "type": "array",
                    "maxItems": 10000, "items": { "type": "object",
                        "required": ["event_id", "track", "started_ms", "ms_played", "tier", "device"],
                        "properties": { "event_id": string, "user": string, "track": string, "started_ms": int,
                            "ms_played": int, "tier": string, "country": { "type": "string", "pattern": "^[A-Z]{2}$" },
                            "device": string, "skipped": { "type": "boolean" } } } } } },
                "PlayResults": { "type": "object", "properties": { "accepted": int, "duplicates": int, "conflicts": int,
                    "rejected": int, "clock_offset_ms": int,
                    "results": { "type": "array", "items": { "type": "object", "properties": { "event_id": string,
                        "status": { "enum": ["accepted", "duplicate", "conflict", "rejected"] }, "reason": string,
                        "message": string } } } } },
                "Counts": { "type": "object", "properties": { "counts": { "type": "array", "items": { "type": "object",
                    "properties": { "track": string, "day": string, "country": string, "plays": int, "streams": int,
                        "ms_played": int } } } } },
                "PlayStatus": { "type": "object", "properties": { "log": { "enum": ["embedded", "nats"] }, "seq": int,
                    "hash": string, "conflicts": int, "lag": { "type": "object", "properties": { "events": int, "seconds": { "type": "number" } } } } },
                "Shares": { "type": "object", "required": ["shares"], "properties": { "shares": { "type": "array",
                    "items": { "type": "object", "required": ["holder", "share_bps"], "properties": { "holder": string,
                        "share_bps": { "type": "integer", "minimum": 1, "maximum": 10000 } } } } } },
                "Flags": { "type": "object", "properties": { "month": string, "flags": { "type": "array", "items": {
                    "type": "object", "properties": { "user": string, "month": string,
                        "reason": { "enum": ["around_the_clock", "never_skips", "loops_one_track", "many_countries"] },
                        "detail": string, "status": { "enum": ["open", "cleared", "confirmed"] }, "flagged_ms": int,
                        "reviewed_ms": int, "reviewer": string, "note": string } } } } },
                "Review": { "type": "object", "required": ["user", "month", "verdict"], "properties": { "user": string,
                    "month": string, "verdict": { "enum": ["cleared", "confirmed"] }, "note": string } },
                "Report": { "type": "object", "properties": { "month": string, "currency": string, "pool": string,
                    "streams": int, "per_stream": string, "excluded_accounts": { "type": "array", "items": string },
                    "excluded_streams": int, "audit_seq": int, "audit_hash": string,
                    "lines": { "type": "array", "items": { "type": "object", "properties": { "track": string,
                        "isrc": string, "title": string, "streams": int, "holder": string, "share_bps": int, "amount": string } } },
                    "holders": { "type": "array", "items": { "type": "object", "properties": { "holder": string, "amount": string } } } } }
            }
        },
        "paths": {
            "/v1/me": { "get": op("who the key belongs to", "200", "User", None) },
            "/v1/search": { "parameters": [
                    { "name": "q", "in": "query", "required": true, "schema": { "type": "string", "maxLength": 256 } },
                    { "name": "types", "in": "query", "schema": { "type": "string", "example": "track,album,artist" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } } ],
                "get": op("tracks, albums and artists matching q: exact, prefix, typos", "200", "SearchResult", None) },
            "/v1/tracks/{id}": { "parameters": id_param(), "get": op("a track", "200", "Track", None) },
            "/v1/tracks/{id}/stream": { "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "tier", "in": "query", "schema": { "enum": ["low", "normal", "standard", "high", "very_high"] } },
                    { "name": "country", "in": "query", "schema": { "type": "string", "pattern": "^[A-Z]{2}$" } } ],
                "get": op("signed edge URLs after the rights check (403 with the reason otherwise)", "200", "Stream", None) },
            "/v1/admin/tracks/{id}/rights": { "parameters": id_param(),
                "put": op("grant rights in countries (admin)", "200", "Rights", Some("Grant")),
                "get": op("a track's rights (admin)", "200", "Rights", None) },
            "/v1/albums/{id}": { "parameters": id_param(), "get": op("an album and its tracks", "200", "Album", None) },
            "/v1/artists/{id}": { "parameters": id_param(), "get": op("an artist and their albums", "200", "Artist", None) },
            "/v1/admin/tracks": { "post": op("create a track from a packaged content id (admin)", "201", "Track", Some("NewTrack")) },
            "/v1/admin/tracks/{id}": { "parameters": id_param(), "patch": op("edit a track (admin)", "200", "Track", Some("TrackEdit")) },
            "/v1/playlists": { "post": op("create a playlist", "201", "Playlist", Some("NewPlaylist")) },
            "/v1/playlists/{id}": { "parameters": id_param(),
                "get": op("a playlist in order (owner, editors)", "200", "Playlist", None),
                "patch": op("rename (owner)", "200", "Playlist", Some("NewPlaylist")),
                "delete": op("delete (owner)", "200", "Playlist", None) },
            "/v1/playlists/{id}/ops": { "parameters": id_param(),
                "post": op("apply operations against a version, rebased over concurrent ones (409 on conflict)", "200", "EditResult", Some("Edit")) },
            "/v1/admin/users": { "post": op("create a user; the API key is shown once (admin)", "201", "CreatedUser", Some("NewUser")) },
            "/v1/play-events": { "post": op("report plays; per event accepted, duplicate, conflict or rejected with a reason", "200", "PlayResults", Some("PlayBatch")) },
            "/v1/admin/plays/counts": { "parameters": [
                    { "name": "from", "in": "query", "schema": { "type": "string", "format": "date" } },
                    { "name": "to", "in": "query", "schema": { "type": "string", "format": "date" } },
                    { "name": "track", "in": "query", "schema": { "type": "string" } },
                    { "name": "country", "in": "query", "schema": { "type": "string" } } ],
                "get": op("plays and streams per track, UTC day and country (admin)", "200", "Counts", None) },
            "/v1/admin/plays/status": { "get": op("the audit chain's head and the pipeline's lag (admin)", "200", "PlayStatus", None) },
            "/v1/admin/tracks/{id}/shares": { "parameters": id_param(),
                "put": op("set rights holders' shares, summing to 10000 (admin)", "200", "Shares", Some("Shares")),
                "get": op("rights holders' shares (admin)", "200", "Shares", None) },
            "/v1/admin/fraud/scan": { "parameters": [ { "name": "month", "in": "query", "required": true, "schema": { "type": "string" } } ],
                "post": op("flag accounts for a month (admin)", "200", "Flags", None) },
            "/v1/admin/fraud": { "parameters": [
                    { "name": "month", "in": "query", "required": true, "schema": { "type": "string" } },
                    { "name": "status", "in": "query", "schema": { "enum": ["open", "cleared", "confirmed"] } } ],
                "get": op("a month's fraud flags (admin)", "200", "Flags", None) },
            "/v1/admin/fraud/review": { "post": op("clear or confirm an account's flags (admin)", "200", "Flags", Some("Review")) },
            "/v1/admin/royalties": { "parameters": [
                    { "name": "month", "in": "query", "required": true, "schema": { "type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$" } },
                    { "name": "pool", "in": "query", "required": true, "schema": { "type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,2})?$" } },
                    { "name": "currency", "in": "query", "schema": { "type": "string", "pattern": "^[A-Z]{3}$" } },
                    { "name": "format", "in": "query", "schema": { "enum": ["json", "csv"] } },
                    { "name": "as_of", "in": "query", "schema": { "type": "integer" } },
                    { "name": "force", "in": "query", "schema": { "type": "boolean" } } ],
                "get": op("the month's pro-rata royalty report (admin; 409 pipeline_lagging)", "200", "Report", None) }
        }
    })
}
