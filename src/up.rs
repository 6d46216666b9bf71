//! `segue up`: every role on one machine, embedded defaults, and the demo catalog.

use std::net::SocketAddr;
use std::path::PathBuf;

use segue_core::config::validated;

use crate::Failure;

/// A random token: 32 hex digits from the kernel's generator.
fn random_token() -> Result<String, Failure> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Failure::Runtime(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A secret of `segue up` kept in DATA_DIR/`name` (mode 0600), made on first start.
fn persistent_secret(data_dir: &std::path::Path, name: &str) -> Result<(PathBuf, String), Failure> {
    let path = data_dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if t.trim().len() >= 16 {
            return Ok((path, t.trim().to_owned()));
        }
    }
    let token = random_token()?;
    segue_core::fsutil::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
    Ok((path, token))
}

/// Countries the demo tracks may be streamed in.
const DEMO_COUNTRIES: [&str; 16] =
    ["SE", "NO", "DK", "FI", "DE", "FR", "GB", "NL", "ES", "IT", "US", "CA", "BR", "JP", "AU", "IN"];

pub async fn up(data_dir: PathBuf, listen: [SocketAddr; 4], secs: u32, subsonic_proxy: bool) -> Result<(), Failure> {
    let [origin_listen, edge_listen, cp_listen, app_listen] = listen;
    std::fs::create_dir_all(&data_dir).map_err(|e| Failure::Runtime(format!("{}: {e}", data_dir.display())))?;
    let (token_file, api_token) = persistent_secret(&data_dir, "control-plane.token")?;
    let (app_token_file, app_token) = persistent_secret(&data_dir, "app-api.token")?;
    // Stream URLs are signed with this key; the edge knows it (and does not require
    // tokens, so plain URLs keep working on this one machine).
    let (_, signing_key) = persistent_secret(&data_dir, "signing.key")?;
    // Content keys rest wrapped under this KEK; the license server reads them from the
    // origin with the keys token.
    let kek_file = data_dir.join("kek");
    segue_core::drm::kek::Keks::create_file(&kek_file, "up1")
        .map_err(|e| Failure::Runtime(format!("{}: {e}", kek_file.display())))?;
    let (_, keys_token) = persistent_secret(&data_dir, "origin-keys.token")?;
    // Users' Subsonic passwords (for players that only know u+t+s) rest sealed under this.
    let subsonic_keys = data_dir.join("subsonic-password.keys");
    segue_core::drm::kek::Keks::create_file(&subsonic_keys, "up1")
        .map_err(|e| Failure::Runtime(format!("{}: {e}", subsonic_keys.display())))?;
    use segue_core::server;
    use std::sync::Arc;

    let origin_dir = data_dir.join("origin");
    let origin_cfg = segue_origin::Config {
        listen: origin_listen,
        data_dir: origin_dir.to_string_lossy().into_owned(),
        drm: segue_origin::config::DrmSettings {
            kek_file: kek_file.to_string_lossy().into_owned(),
            key_tokens: vec![keys_token.clone()],
        },
        ..Default::default()
    };
    let origin_cfg = validated(&PathBuf::from("(segue up)"), origin_cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let store = segue_core::store::FsStore::new(&origin_dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    eprintln!("segue up: preparing the demo catalog in {}", origin_dir.display());
    let keks = origin_cfg.drm.keks().map_err(|e| Failure::Runtime(format!("{}: {}", e.field, e.message)))?;
    let tracks = segue_origin::demo::ensure(&store, keks.as_ref(), secs)
        .await
        .map_err(|e| Failure::Runtime(format!("demo catalog: {e}")))?;
    let made = tracks.iter().filter(|t| t.created).count();
    eprintln!("segue up: demo catalog ready ({} tracks, {made} packaged now)", tracks.len());

    // Bind both listeners first: the edge needs the origin's real address (port 0 works).
    let io = |what: &str, e: std::io::Error| Failure::Runtime(format!("cannot listen for the {what}: {e}"));
    let origin_listener = server::bind(origin_cfg.listen).await.map_err(|e| io("origin", e))?;
    let origin_addr = origin_listener.local_addr().map_err(|e| io("origin", e))?;
    let edge_listener = server::bind(edge_listen).await.map_err(|e| io("edge", e))?;
    let edge_addr = edge_listener.local_addr().map_err(|e| io("edge", e))?;
    let cp_listener = server::bind(cp_listen).await.map_err(|e| io("control plane", e))?;
    let cp_addr = cp_listener.local_addr().map_err(|e| io("control plane", e))?;
    let app_listener = server::bind(app_listen).await.map_err(|e| io("app-api", e))?;
    let app_addr = app_listener.local_addr().map_err(|e| io("app-api", e))?;

    // The edge heartbeats with a per-start token; the release manager's token persists
    // in DATA_DIR.
    let pop_token = random_token()?;
    let edge_cfg = segue_edge::Config {
        listen: edge_addr,
        upstreams: vec![format!("http://{origin_addr}")],
        mem_cache_mb: 256,
        ssd_cache_dir: data_dir.join("edge-cache").to_string_lossy().into_owned(),
        ssd_cache_mb: 1024,
        access_log: data_dir.join("edge-access.log").to_string_lossy().into_owned(),
        name: "local".into(),
        control_plane: Some(segue_edge::config::ControlPlaneSettings {
            url: format!("http://{cp_addr}"),
            token: pop_token.clone(),
            region: "default".into(),
            public_url: String::new(),
            admin_url: String::new(),
            heartbeat_secs: 5,
        }),
        tokens: segue_core::token::TokenSettings {
            keys: [("up".to_owned(), signing_key.clone())].into_iter().collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    let edge_cfg = validated(&PathBuf::from("(segue up)"), edge_cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let cp_cfg = segue_control_plane::Config {
        listen: cp_addr,
        database: format!("sqlite://{}", data_dir.join("control-plane.db").display()),
        origin: format!("http://{origin_addr}"),
        api_tokens: vec![api_token.clone()],
        pop_tokens: [("local".to_owned(), pop_token)].into_iter().collect(),
        ..Default::default()
    };
    let cp_cfg = validated(&PathBuf::from("(segue up)"), cp_cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let app_cfg = segue_app_api::Config {
        listen: app_addr,
        database: format!("sqlite://{}", data_dir.join("app-api.db").display()),
        search_dir: data_dir.join("app-search").to_string_lossy().into_owned(),
        origin: format!("http://{origin_addr}"),
        admin_tokens: vec![app_token.clone()],
        signing: segue_app_api::config::Signing { kid: "up".into(), secret_hex: signing_key, ttl_secs: 3600 },
        control_plane: Some(segue_app_api::config::ControlPlane { url: format!("http://{cp_addr}"), token: api_token }),
        fallback_pops: vec![format!("http://{edge_addr}")],
        drm: segue_app_api::config::DrmSettings {
            kek_file: kek_file.to_string_lossy().into_owned(),
            origin_key_token: keys_token,
            signing_key_file: data_dir.join("drm-signing.key").to_string_lossy().into_owned(),
            ..Default::default()
        },
        subsonic: segue_app_api::config::SubsonicSettings {
            password_keys_file: subsonic_keys.to_string_lossy().into_owned(),
            stream: if subsonic_proxy {
                segue_app_api::config::StreamMode::Proxy
            } else {
                segue_app_api::config::StreamMode::Redirect
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let app_cfg = validated(&PathBuf::from("(segue up)"), app_cfg).map_err(|e| Failure::Usage(e.to_string()))?;

    let base = format!("http://{edge_addr}");
    eprintln!("segue up: origin on http://{origin_addr}, edge (POP) on {base}, control plane on http://{cp_addr}");
    eprintln!(
        "segue up: release manager token in {}: export SEGUE_CP_TOKEN=$(cat {0}) SEGUE_CONTROL_PLANE=http://{cp_addr}",
        token_file.display()
    );
    eprintln!("segue up: operator console on http://{cp_addr}/ (sign in with that token)");
    for t in &tracks {
        eprintln!("  {:<24} {:<22} {base}/a/{}/high.ogg", t.title, t.album, t.content_id);
    }
    eprintln!("  manifests: {base}/m/<content_id>.json   seek tables: {base}/seek/<content_id>/<tier>.json");
    eprintln!(
        "segue up: app API on http://{app_addr} (admin token in {}); try GET /v1/search?q=continuum",
        app_token_file.display()
    );

    let origin_state =
        Arc::new(segue_origin::State::new(&origin_cfg).await.map_err(|e| Failure::Runtime(e.to_string()))?);
    let edge_state = Arc::new(segue_edge::State::new(&edge_cfg).await.map_err(|e| Failure::Runtime(e.to_string()))?);
    // One signal stops both roles; each drains its own connections.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let origin = tokio::spawn(segue_origin::serve(
        origin_listener,
        origin_state,
        segue_origin::server_options(&origin_cfg),
        stopped(stop_rx.clone()),
    ));
    let cp_stop = stopped(stop_rx.clone());
    let control_plane = tokio::spawn(async move {
        let result = segue_control_plane::serve(cp_listener, cp_cfg, cp_stop).await;
        if let Err(e) = &result {
            eprintln!("segue up: the control plane stopped: {e}");
        }
        result
    });
    let app_stop = stopped(stop_rx.clone());
    let app_api = tokio::spawn(async move {
        let result = segue_app_api::serve(app_listener, app_cfg, app_stop).await;
        if let Err(e) = &result {
            eprintln!("segue up: the app API stopped: {e}");
        }
        result
    });
    tokio::spawn(demo_catalog(app_addr, app_token, tracks, data_dir.join("listener.key")));
    segue_edge::register(&edge_state, &edge_cfg, &edge_listener, None);
    let edge = tokio::spawn(segue_edge::serve(
        edge_listener,
        edge_state.clone(),
        segue_edge::server_options(&edge_cfg),
        stopped(stop_rx),
    ));
    server::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(origin, edge, control_plane, app_api);
    // Flush the edge's memory tier to its SSD so the next `segue up` starts warm.
    edge_state.cache.close().await;
    Ok(())
}

/// Put the demo tracks in the app API's catalog, with rights in `DEMO_COUNTRIES`, and
/// make a demo listener (in SE) whose API key is kept in `listener_key` (0600), for
/// Subsonic players. Idempotent: a track already there (409) keeps its entry, a
/// listener already made is not made again.
async fn demo_catalog(
    app: SocketAddr,
    token: String,
    tracks: Vec<segue_origin::demo::DemoTrack>,
    listener_key: PathBuf,
) {
    let call = |method: http::Method, path: String, body: serde_json::Value| {
        let token = token.clone();
        async move {
            let base = format!("http://{app}");
            let timeout = std::time::Duration::from_secs(30);
            let body = Some(body.to_string().into());
            let (status, body) = segue_core::client::call(&base, method, &path, Some(&token), body, timeout).await?;
            Ok::<_, String>((status, serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()))
        }
    };
    let mut added = 0;
    for t in &tracks {
        let body = serde_json::json!({
            "content_id": t.content_id.to_string(), "title": t.title, "artists": ["Segue Demo"],
            "album": t.album, "track_number": t.track_no,
        });
        match call(http::Method::POST, "/v1/admin/tracks".into(), body).await {
            Ok((status, v)) if status == http::StatusCode::CREATED => {
                added += 1;
                let rights = serde_json::json!({ "countries": DEMO_COUNTRIES });
                let path = format!("/v1/admin/tracks/{}/rights", v["id"].as_str().unwrap_or_default());
                if let Err(e) = call(http::Method::PUT, path, rights).await {
                    eprintln!("segue up: demo rights for {:?}: {e}", t.title);
                }
            }
            Ok((status, _)) if status == http::StatusCode::CONFLICT => {}
            Ok((status, v)) => eprintln!("segue up: demo track {:?}: {status} {v}", t.title),
            Err(e) => eprintln!("segue up: demo track {:?}: {e}", t.title),
        }
    }
    if added > 0 {
        eprintln!("segue up: {added} demo tracks added to the app API's catalog");
    }
    if !listener_key.exists() {
        let body = serde_json::json!({ "name": "demo listener", "country": "SE" });
        match call(http::Method::POST, "/v1/admin/users".into(), body).await {
            Ok((status, v)) if status == http::StatusCode::CREATED => {
                let key = v["api_key"].as_str().unwrap_or_default();
                if let Err(e) = segue_core::fsutil::write_atomic(&listener_key, format!("{key}\n").as_bytes(), 0o600) {
                    eprintln!("segue up: {}: {e}", listener_key.display());
                    return;
                }
            }
            Ok((status, v)) => return eprintln!("segue up: demo listener: {status} {v}"),
            Err(e) => return eprintln!("segue up: demo listener: {e}"),
        }
    }
    eprintln!(
        "segue up: Subsonic players: server http://{app}, API key (apiKey) in {} (docs/OPERATING.md, \"Subsonic clients\")",
        listener_key.display()
    );
    eprintln!("segue up: listener web app on http://{app}/ (sign in with that key)");
}
