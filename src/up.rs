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

/// One POP of a fleet: its name (its `Via` and control-plane id), region and listener,
/// and whether it fetches through the shield.
pub struct PopPlan {
    pub name: String,
    pub region: String,
    pub listen: SocketAddr,
    pub behind_shield: bool,
}

/// A fleet on one machine: what `segue up` (one POP) and `segue lab` (several POPs in
/// regions, behind a shield) start.
pub struct Plan {
    /// Printed before each line: `segue up` or `segue lab`.
    pub label: &'static str,
    pub data_dir: PathBuf,
    pub origin_listen: SocketAddr,
    pub cp_listen: SocketAddr,
    pub app_listen: SocketAddr,
    pub pops: Vec<PopPlan>,
    /// A shield (parent) POP between the POPs and the origin, and its listener.
    pub shield: Option<SocketAddr>,
    /// Listener regions: name, UTC offset (minutes), the countries whose listeners it
    /// serves (empty: everyone, as the app API's default region).
    pub regions: Vec<(String, i32, Vec<String>)>,
    pub demo_track_secs: u32,
    pub subsonic_proxy: bool,
}

/// The region of the shield POP: the control plane must know it, listeners never map to it
/// (so no embargo list of theirs applies to the shield's fetches).
const SHIELD_REGION: &str = "core";

pub async fn up(data_dir: PathBuf, listen: [SocketAddr; 4], secs: u32, subsonic_proxy: bool) -> Result<(), Failure> {
    let [origin_listen, edge_listen, cp_listen, app_listen] = listen;
    run(Plan {
        label: "segue up",
        data_dir,
        origin_listen,
        cp_listen,
        app_listen,
        pops: vec![PopPlan {
            name: "local".into(),
            region: "default".into(),
            listen: edge_listen,
            behind_shield: false,
        }],
        shield: None,
        regions: vec![("default".into(), 0, Vec::new())],
        demo_track_secs: secs,
        subsonic_proxy,
    })
    .await
}

/// A running edge: its config, state and listener.
struct Edge {
    cfg: segue_edge::Config,
    state: std::sync::Arc<segue_edge::State>,
    listener: tokio::net::TcpListener,
}

/// Start `plan`'s fleet and run it until SIGTERM or Ctrl-C.
pub async fn run(plan: Plan) -> Result<(), Failure> {
    use segue_core::server;
    use std::sync::Arc;
    let label = plan.label;
    let data_dir = plan.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|e| Failure::Runtime(format!("{}: {e}", data_dir.display())))?;
    let (token_file, api_token) = persistent_secret(&data_dir, "control-plane.token")?;
    let (app_token_file, app_token) = persistent_secret(&data_dir, "app-api.token")?;
    // Stream URLs are signed with this key; the edges know it (and do not require
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
    let origin_dir = data_dir.join("origin");
    let origin_cfg = segue_origin::Config {
        listen: plan.origin_listen,
        data_dir: origin_dir.to_string_lossy().into_owned(),
        drm: segue_origin::config::DrmSettings {
            kek_file: kek_file.to_string_lossy().into_owned(),
            key_tokens: vec![keys_token.clone()],
        },
        ..Default::default()
    };
    let source = PathBuf::from(format!("({label})"));
    let origin_cfg = validated(&source, origin_cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let store = segue_core::store::FsStore::new(&origin_dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    eprintln!("{label}: preparing the demo catalog in {}", origin_dir.display());
    let keks = origin_cfg.drm.keks().map_err(|e| Failure::Runtime(format!("{}: {}", e.field, e.message)))?;
    let tracks = segue_origin::demo::ensure(&store, keks.as_ref(), plan.demo_track_secs)
        .await
        .map_err(|e| Failure::Runtime(format!("demo catalog: {e}")))?;
    let made = tracks.iter().filter(|t| t.created).count();
    eprintln!("{label}: demo catalog ready ({} tracks, {made} packaged now)", tracks.len());

    // Bind every listener first: each role needs the others' real addresses (port 0 works).
    let io = |what: &str, e: std::io::Error| Failure::Runtime(format!("cannot listen for the {what}: {e}"));
    let bind = |addr: SocketAddr, what: String| async move {
        let l = server::bind(addr).await.map_err(|e| io(&what, e))?;
        let a = l.local_addr().map_err(|e| io(&what, e))?;
        Ok::<_, Failure>((l, a))
    };
    // In this order (each prints `listening on ADDR`): origin, shield, POPs, control
    // plane, app API.
    let (origin_listener, origin_addr) = bind(origin_cfg.listen, "origin".into()).await?;
    let shield = match plan.shield {
        Some(addr) => Some(bind(addr, "shield POP".into()).await?),
        None => None,
    };
    let mut pop_listeners = Vec::with_capacity(plan.pops.len());
    for p in &plan.pops {
        pop_listeners.push(bind(p.listen, format!("POP {}", p.name)).await?);
    }
    let (cp_listener, cp_addr) = bind(plan.cp_listen, "control plane".into()).await?;
    let (app_listener, app_addr) = bind(plan.app_listen, "app-api".into()).await?;

    // Each edge heartbeats with a per-start token; the release manager's token persists
    // in DATA_DIR.
    let mut pop_tokens = std::collections::BTreeMap::new();
    let mut edge_cfgs = Vec::new();
    let origin_url = format!("http://{origin_addr}");
    let mut edge = |name: &str, region: &str, addr: SocketAddr, upstreams: Vec<String>, dir: PathBuf| {
        let token = random_token()?;
        pop_tokens.insert(name.to_owned(), token.clone());
        let cfg = segue_edge::Config {
            listen: addr,
            upstreams,
            mem_cache_mb: 256,
            ssd_cache_dir: dir.join("edge-cache").to_string_lossy().into_owned(),
            ssd_cache_mb: 1024,
            access_log: dir.join("edge-access.log").to_string_lossy().into_owned(),
            name: name.into(),
            control_plane: Some(segue_edge::config::ControlPlaneSettings {
                url: format!("http://{cp_addr}"),
                token,
                region: region.into(),
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
        validated(&source, cfg).map_err(|e| Failure::Usage(e.to_string()))
    };
    // `segue up`'s one POP keeps its files at the top of DATA_DIR, as it always has.
    let dir_of = |name: &str| {
        if plan.pops.len() == 1 && plan.shield.is_none() {
            data_dir.clone()
        } else {
            data_dir.join("pops").join(name)
        }
    };
    let shield_url = shield.as_ref().map(|(_, a)| format!("http://{a}"));
    let shield_cfg = match &shield {
        Some((_, addr)) => {
            Some(edge("shield", SHIELD_REGION, *addr, vec![origin_url.clone()], data_dir.join("pops/shield"))?)
        }
        None => None,
    };
    for (p, (_, addr)) in plan.pops.iter().zip(&pop_listeners) {
        let upstreams = match (&shield_url, p.behind_shield) {
            // Through the shield, the origin as a fallback should the shield be down.
            (Some(s), true) => vec![s.clone(), origin_url.clone()],
            _ => vec![origin_url.clone()],
        };
        edge_cfgs.push(edge(&p.name, &p.region, *addr, upstreams, dir_of(&p.name))?);
    }
    let mut cp_regions: Vec<segue_control_plane::config::Region> = plan
        .regions
        .iter()
        .map(|(name, offset, _)| segue_control_plane::config::Region {
            name: name.clone(),
            utc_offset_minutes: *offset,
        })
        .collect();
    if shield_cfg.is_some() {
        cp_regions.push(segue_control_plane::config::Region { name: SHIELD_REGION.into(), utc_offset_minutes: 0 });
    }
    let cp_cfg = segue_control_plane::Config {
        listen: cp_addr,
        database: format!("sqlite://{}", data_dir.join("control-plane.db").display()),
        origin: origin_url.clone(),
        api_tokens: vec![api_token.clone()],
        pop_tokens,
        regions: cp_regions,
        ..Default::default()
    };
    let cp_cfg = validated(&source, cp_cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let app_cfg = segue_app_api::Config {
        listen: app_addr,
        database: format!("sqlite://{}", data_dir.join("app-api.db").display()),
        search_dir: data_dir.join("app-search").to_string_lossy().into_owned(),
        origin: origin_url.clone(),
        admin_tokens: vec![app_token.clone()],
        signing: segue_app_api::config::Signing { kid: "up".into(), secret_hex: signing_key.clone(), ttl_secs: 3600 },
        control_plane: Some(segue_app_api::config::ControlPlane { url: format!("http://{cp_addr}"), token: api_token }),
        fallback_pops: pop_listeners.iter().map(|(_, a)| format!("http://{a}")).collect(),
        regions: plan
            .regions
            .iter()
            .filter(|(_, _, c)| !c.is_empty())
            .map(|(n, _, c)| (n.clone(), c.clone()))
            .collect(),
        default_region: plan.regions.first().map_or_else(|| "default".into(), |(n, _, _)| n.clone()),
        drm: segue_app_api::config::DrmSettings {
            kek_file: kek_file.to_string_lossy().into_owned(),
            origin_key_token: keys_token,
            signing_key_file: data_dir.join("drm-signing.key").to_string_lossy().into_owned(),
            ..Default::default()
        },
        subsonic: segue_app_api::config::SubsonicSettings {
            password_keys_file: subsonic_keys.to_string_lossy().into_owned(),
            stream: if plan.subsonic_proxy {
                segue_app_api::config::StreamMode::Proxy
            } else {
                segue_app_api::config::StreamMode::Redirect
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let app_cfg = validated(&source, app_cfg).map_err(|e| Failure::Usage(e.to_string()))?;

    let base = format!("http://{}", pop_listeners[0].1);
    let pops_text: Vec<String> = plan
        .pops
        .iter()
        .zip(&pop_listeners)
        .map(|(p, (_, a))| format!("{} ({}) on http://{a}", p.name, p.region))
        .collect();
    if plan.pops.len() == 1 && shield_cfg.is_none() {
        eprintln!("{label}: origin on http://{origin_addr}, edge (POP) on {base}, control plane on http://{cp_addr}");
    } else {
        eprintln!("{label}: origin on http://{origin_addr}, control plane on http://{cp_addr}");
        if let Some(s) = &shield_url {
            eprintln!("{label}: shield POP on {s} (region {SHIELD_REGION}), in front of the origin");
        }
        for line in &pops_text {
            eprintln!("{label}: POP {line}");
        }
    }
    eprintln!(
        "{label}: release manager token in {}: export SEGUE_CP_TOKEN=$(cat {0}) SEGUE_CONTROL_PLANE=http://{cp_addr}",
        token_file.display()
    );
    eprintln!("{label}: operator console on http://{cp_addr}/ (sign in with that token)");
    for t in &tracks {
        eprintln!("  {:<24} {:<22} {base}/a/{}/high.ogg", t.title, t.album, t.content_id);
    }
    eprintln!("  manifests: {base}/m/<content_id>.json   seek tables: {base}/seek/<content_id>/<tier>.json");
    eprintln!(
        "{label}: app API on http://{app_addr} (admin token in {}); try GET /v1/search?q=continuum",
        app_token_file.display()
    );

    let origin_state =
        Arc::new(segue_origin::State::new(&origin_cfg).await.map_err(|e| Failure::Runtime(e.to_string()))?);
    let mut edges = Vec::new();
    for (cfg, listener) in shield_cfg
        .into_iter()
        .zip(shield.map(|(l, _)| l))
        .chain(edge_cfgs.into_iter().zip(pop_listeners.into_iter().map(|(l, _)| l)))
    {
        let state = Arc::new(segue_edge::State::new(&cfg).await.map_err(|e| Failure::Runtime(e.to_string()))?);
        edges.push(Edge { cfg, state, listener });
    }
    // One signal stops every role; each drains its own connections.
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
            eprintln!("{label}: the control plane stopped: {e}");
        }
        result
    });
    let app_stop = stopped(stop_rx.clone());
    let app_api = tokio::spawn(async move {
        let result = segue_app_api::serve(app_listener, app_cfg, app_stop).await;
        if let Err(e) = &result {
            eprintln!("{label}: the app API stopped: {e}");
        }
        result
    });
    tokio::spawn(demo_catalog(app_addr, app_token, tracks, data_dir.join("listener.key")));
    let mut running = Vec::new();
    let mut states = Vec::new();
    for e in edges {
        segue_edge::register(&e.state, &e.cfg, &e.listener, None);
        states.push(e.state.clone());
        running.push(tokio::spawn(segue_edge::serve(
            e.listener,
            e.state,
            segue_edge::server_options(&e.cfg),
            stopped(stop_rx.clone()),
        )));
    }
    server::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = tokio::join!(origin, control_plane, app_api);
    for r in running {
        let _ = r.await;
    }
    // Flush each edge's memory tier to its SSD so the next start is warm.
    for s in states {
        s.cache.close().await;
    }
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
