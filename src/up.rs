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
    /// Run the origin and every POP as child processes (`segue lab`: a scenario can kill
    /// one), rather than in this process (`segue up`).
    pub processes: bool,
    /// Seconds between POP heartbeats; a POP silent for three is down.
    pub heartbeat_secs: u64,
    /// With `processes`: restart a child that dies after this long (`None`: never).
    pub restart_after: Option<std::time::Duration>,
    /// With `processes`: one more edge, in front of the origin and outside the control
    /// plane, as the app API's overflow CDN.
    pub overflow: bool,
    /// POPs report themselves saturated with this many client connections (0: never).
    pub capacity_connections: u64,
}

/// The region of the shield POP: the control plane must know it, listeners never map to it
/// (so no embargo list of theirs applies to the shield's fetches).
const SHIELD_REGION: &str = "core";

/// The lab's stand-in for a secondary CDN (`segue lab --overflow`).
const OVERFLOW: &str = "overflow-cdn";

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
        processes: false,
        heartbeat_secs: 5,
        restart_after: None,
        overflow: false,
        capacity_connections: 0,
    })
    .await
}

/// An edge of the fleet, before it starts.
struct EdgeSpec {
    name: String,
    region: String,
    listen: SocketAddr,
    dir: PathBuf,
    behind_shield: bool,
}

/// An edge running in this process (`segue up`).
struct Edge {
    cfg: segue_edge::Config,
    state: std::sync::Arc<segue_edge::State>,
    listener: tokio::net::TcpListener,
}

/// A role's config as the TOML its file would hold, checked the way its command checks
/// it. One source for both ways a role runs: in this process, or a child given the file.
fn config_of<T>(source: &std::path::Path, table: &toml::Table) -> Result<T, Failure>
where
    T: serde::de::DeserializeOwned + segue_core::config::Validate,
{
    let cfg: T = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e| Failure::Usage(format!("{}: {e}", source.display())))?;
    validated(source, cfg).map_err(|e| Failure::Usage(e.to_string()))
}

/// Build a TOML table from `key = value` pairs.
fn table<const N: usize>(pairs: [(&str, toml::Value); N]) -> toml::Table {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn strings(v: &[String]) -> toml::Value {
    toml::Value::Array(v.iter().map(|s| toml::Value::String(s.clone())).collect())
}

fn path_value(p: &std::path::Path) -> toml::Value {
    toml::Value::String(p.to_string_lossy().into_owned())
}

/// Start `plan`'s fleet and run it until SIGTERM or Ctrl-C.
pub async fn run(plan: Plan) -> Result<(), Failure> {
    use segue_core::server;
    use std::sync::Arc;
    use toml::Value;
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
    let origin_table = table([
        ("listen", Value::String(plan.origin_listen.to_string())),
        ("data_dir", path_value(&origin_dir)),
        (
            "drm",
            Value::Table(table([
                ("kek_file", path_value(&kek_file)),
                ("key_tokens", strings(std::slice::from_ref(&keys_token))),
            ])),
        ),
    ]);
    let source = PathBuf::from(format!("({label})"));
    let origin_cfg: segue_origin::Config = config_of(&source, &origin_table)?;
    let store = segue_core::store::FsStore::new(&origin_dir).map_err(|e| Failure::Runtime(e.to_string()))?;
    eprintln!("{label}: preparing the demo catalog in {}", origin_dir.display());
    let keks = origin_cfg.drm.keks().map_err(|e| Failure::Runtime(format!("{}: {}", e.field, e.message)))?;
    let tracks = segue_origin::demo::ensure(&store, keks.as_ref(), plan.demo_track_secs)
        .await
        .map_err(|e| Failure::Runtime(format!("demo catalog: {e}")))?;
    let made = tracks.iter().filter(|t| t.created).count();
    eprintln!("{label}: demo catalog ready ({} tracks, {made} packaged now)", tracks.len());

    // Each edge heartbeats with a per-start token; the release manager's token persists
    // in DATA_DIR.
    let mut pop_tokens = std::collections::BTreeMap::new();
    let mut specs = Vec::new();
    let dir_of = |name: &str| {
        // `segue up`'s one POP keeps its files at the top of DATA_DIR, as it always has.
        if plan.pops.len() == 1 && plan.shield.is_none() {
            data_dir.clone()
        } else {
            data_dir.join("pops").join(name)
        }
    };
    if let Some(addr) = plan.shield {
        specs.push(EdgeSpec {
            name: "shield".into(),
            region: SHIELD_REGION.into(),
            listen: addr,
            dir: data_dir.join("pops/shield"),
            behind_shield: false,
        });
    }
    for p in &plan.pops {
        specs.push(EdgeSpec {
            name: p.name.clone(),
            region: p.region.clone(),
            listen: p.listen,
            dir: dir_of(&p.name),
            behind_shield: p.behind_shield,
        });
    }
    for s in &specs {
        pop_tokens.insert(s.name.clone(), random_token()?);
    }
    // Through the shield, with the origin as a fallback should the shield be down.
    let edge_table = |s: &EdgeSpec, cp_addr: SocketAddr, origin_url: &str, shield_url: Option<&str>| {
        let upstreams: Vec<String> = match shield_url {
            Some(shield) if s.behind_shield => vec![shield.into(), origin_url.into()],
            _ => vec![origin_url.into()],
        };
        let mut cp = table([
            ("url", Value::String(format!("http://{cp_addr}"))),
            ("token", Value::String(pop_tokens.get(&s.name).cloned().unwrap_or_default())),
            ("region", Value::String(s.region.clone())),
            ("heartbeat_secs", Value::Integer(plan.heartbeat_secs as i64)),
        ]);
        if plan.capacity_connections > 0 && s.name != "shield" {
            cp.insert("capacity_connections".into(), Value::Integer(plan.capacity_connections as i64));
        }
        let mut t = table([
            ("listen", Value::String(s.listen.to_string())),
            ("upstreams", strings(&upstreams)),
            ("mem_cache_mb", Value::Integer(256)),
            ("ssd_cache_dir", path_value(&s.dir.join("edge-cache"))),
            ("ssd_cache_mb", Value::Integer(1024)),
            ("access_log", path_value(&s.dir.join("edge-access.log"))),
            ("name", Value::String(s.name.clone())),
            ("control_plane", Value::Table(cp)),
            (
                "tokens",
                Value::Table(table([("keys", Value::Table(table([("up", Value::String(signing_key.clone()))])))])),
            ),
        ]);
        // The overflow CDN is someone else's: it knows the signing key, not our control plane.
        if s.name == OVERFLOW {
            t.remove("control_plane");
        }
        t
    };

    // Bind every listener first: each role needs the others' real addresses (port 0 works).
    let io = |what: &str, e: std::io::Error| Failure::Runtime(format!("cannot listen for the {what}: {e}"));
    let bind = |addr: SocketAddr, what: String| async move {
        let l = server::bind(addr).await.map_err(|e| io(&what, e))?;
        let a = l.local_addr().map_err(|e| io(&what, e))?;
        Ok::<_, Failure>((l, a))
    };
    // Quietly: the lab prints these lines once its children listen, in the same order.
    let bind_quiet = |addr: SocketAddr, what: &'static str| async move {
        segue_core::telemetry::metrics();
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| io(what, e))?;
        let a = l.local_addr().map_err(|e| io(what, e))?;
        Ok::<_, Failure>((l, a))
    };
    let mut in_process = Vec::new();
    let mut children = Vec::new();
    // Every edge started, by name, whichever way it runs.
    let mut started: Vec<(String, SocketAddr)> = Vec::new();
    let origin_listener;
    let origin_addr;
    let cp_listener;
    let cp_addr;
    let app_listener;
    let app_addr;
    if plan.processes {
        (cp_listener, cp_addr) = bind_quiet(plan.cp_listen, "control plane").await?;
        (app_listener, app_addr) = bind_quiet(plan.app_listen, "app-api").await?;
        let files = crate::child::files(&data_dir, "origin");
        let origin =
            crate::child::supervise("origin", "origin", origin_table.clone(), files, plan.restart_after).await?;
        origin_addr = origin.addr;
        origin_listener = None;
        children.push(origin);
        let origin_url = format!("http://{origin_addr}");
        let mut shield_url: Option<String> = None;
        if plan.overflow {
            specs.push(EdgeSpec {
                name: OVERFLOW.into(),
                region: String::new(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                dir: data_dir.join("pops").join(OVERFLOW),
                behind_shield: false,
            });
        }
        for s in specs {
            std::fs::create_dir_all(&s.dir).map_err(|e| Failure::Runtime(format!("{}: {e}", s.dir.display())))?;
            let t = edge_table(&s, cp_addr, &origin_url, shield_url.as_deref());
            let _: segue_edge::Config = config_of(&source, &t)?;
            let files = crate::child::files(&s.dir, "edge");
            let child = crate::child::supervise(&s.name, "edge", t, files, plan.restart_after).await?;
            if s.name == "shield" {
                shield_url = Some(format!("http://{}", child.addr));
            }
            started.push((s.name, child.addr));
            children.push(child);
        }
        for c in children.iter().filter(|c| c.name != OVERFLOW) {
            println!("listening on {}", c.addr);
        }
        println!("listening on {cp_addr}");
        println!("listening on {app_addr}");
        for c in children.iter().filter(|c| c.name == OVERFLOW) {
            println!("listening on {}", c.addr);
        }
    } else {
        // In this order (each prints `listening on ADDR`): origin, shield, POPs, control
        // plane, app API.
        let (l, a) = bind(origin_cfg.listen, "origin".into()).await?;
        (origin_listener, origin_addr) = (Some(l), a);
        let mut listeners = Vec::new();
        for s in &specs {
            listeners.push(bind(s.listen, format!("POP {}", s.name)).await?);
        }
        (cp_listener, cp_addr) = bind(plan.cp_listen, "control plane".into()).await?;
        (app_listener, app_addr) = bind(plan.app_listen, "app-api".into()).await?;
        let origin_url = format!("http://{origin_addr}");
        let shield_url = plan.shield.and_then(|_| listeners.first().map(|(_, a)| format!("http://{a}")));
        for (mut s, (listener, addr)) in specs.into_iter().zip(listeners) {
            s.listen = addr;
            let cfg: segue_edge::Config =
                config_of(&source, &edge_table(&s, cp_addr, &origin_url, shield_url.as_deref()))?;
            started.push((s.name, addr));
            in_process.push((cfg, listener));
        }
    }
    let origin_url = format!("http://{origin_addr}");
    // The POPs listeners are handed (not the shield, nor the overflow CDN), in plan order.
    let pop_addrs: Vec<SocketAddr> =
        started.iter().filter(|(n, _)| n != "shield" && n != OVERFLOW).map(|(_, a)| *a).collect();
    let shield_addr = started.iter().find(|(n, _)| n == "shield").map(|(_, a)| *a);
    let overflow_addr = started.iter().find(|(n, _)| n == OVERFLOW).map(|(_, a)| *a);

    let mut cp_regions: Vec<segue_control_plane::config::Region> = plan
        .regions
        .iter()
        .map(|(name, offset, _)| segue_control_plane::config::Region {
            name: name.clone(),
            utc_offset_minutes: *offset,
        })
        .collect();
    if plan.shield.is_some() {
        cp_regions.push(segue_control_plane::config::Region { name: SHIELD_REGION.into(), utc_offset_minutes: 0 });
    }
    let cp_cfg = segue_control_plane::Config {
        listen: cp_addr,
        database: format!("sqlite://{}", data_dir.join("control-plane.db").display()),
        origin: origin_url.clone(),
        api_tokens: vec![api_token.clone()],
        pop_tokens,
        regions: cp_regions,
        heartbeat_timeout_secs: plan.heartbeat_secs * 3,
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
        pop_cache_secs: plan.heartbeat_secs.min(10),
        fallback_pops: pop_addrs.iter().map(|a| format!("http://{a}")).collect(),
        overflow_url: overflow_addr.map(|a| format!("http://{a}")).unwrap_or_default(),
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

    let base = format!("http://{}", pop_addrs[0]);
    if plan.pops.len() == 1 && plan.shield.is_none() {
        eprintln!("{label}: origin on http://{origin_addr}, edge (POP) on {base}, control plane on http://{cp_addr}");
    } else {
        eprintln!("{label}: origin on http://{origin_addr}, control plane on http://{cp_addr}");
        if let Some(s) = shield_addr {
            eprintln!("{label}: shield POP on http://{s} (region {SHIELD_REGION}), in front of the origin");
        }
        for (p, a) in plan.pops.iter().zip(&pop_addrs) {
            eprintln!("{label}: POP {} ({}) on http://{a}", p.name, p.region);
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
    if plan.processes {
        write_lab_file(&data_dir, &children, &plan, origin_addr, cp_addr, app_addr)?;
    }

    // One signal stops every role; each drains its own connections.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let mut running = Vec::new();
    if let Some(listener) = origin_listener {
        let origin_state =
            Arc::new(segue_origin::State::new(&origin_cfg).await.map_err(|e| Failure::Runtime(e.to_string()))?);
        running.push(tokio::spawn(segue_origin::serve(
            listener,
            origin_state,
            segue_origin::server_options(&origin_cfg),
            stopped(stop_rx.clone()),
        )));
    }
    let mut edges = Vec::new();
    for (cfg, listener) in in_process {
        let state = Arc::new(segue_edge::State::new(&cfg).await.map_err(|e| Failure::Runtime(e.to_string()))?);
        edges.push(Edge { cfg, state, listener });
    }
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
    // POPs first, the origin last: a draining POP may still be filling from it.
    for c in children.into_iter().rev() {
        c.stop().await;
    }
    let _ = tokio::join!(control_plane, app_api);
    for r in running {
        let _ = r.await;
    }
    // Flush each edge's memory tier to its SSD so the next start is warm.
    for s in states {
        s.cache.close().await;
    }
    Ok(())
}

/// `DATA_DIR/lab.json`: where every role of a lab is and which process it is, for
/// `segue loadtest --scenario ... --lab DATA_DIR`.
fn write_lab_file(
    data_dir: &std::path::Path,
    children: &[crate::child::Supervised],
    plan: &Plan,
    origin: SocketAddr,
    cp: SocketAddr,
    app: SocketAddr,
) -> Result<(), Failure> {
    let region_of = |name: &str| plan.pops.iter().find(|p| p.name == name).map(|p| p.region.clone());
    let pops: Vec<serde_json::Value> = children
        .iter()
        .filter(|c| c.name != "origin" && c.name != OVERFLOW)
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "region": region_of(&c.name).unwrap_or_else(|| SHIELD_REGION.into()),
                "url": format!("http://{}", c.addr),
                "pid_file": c.pid_file,
                "dir": data_dir.join("pops").join(&c.name),
                "shield": c.name == "shield",
            })
        })
        .collect();
    let o = children.iter().find(|c| c.name == "origin");
    let lab = serde_json::json!({
        "origin": { "url": format!("http://{origin}"), "pid_file": o.map(|c| &c.pid_file) },
        "restart_after_secs": plan.restart_after.map(|d| d.as_secs()),
        "overflow": children.iter().find(|c| c.name == OVERFLOW).map(|c| serde_json::json!({
            "url": format!("http://{}", c.addr), "pid_file": c.pid_file,
        })),
        "control_plane": format!("http://{cp}"),
        "app_api": format!("http://{app}"),
        "pops": pops,
        "regions": plan.regions.iter().map(|(n, _, c)| serde_json::json!({"name": n, "countries": c})).collect::<Vec<_>>(),
        "control_plane_token_file": data_dir.join("control-plane.token"),
        "app_api_token_file": data_dir.join("app-api.token"),
        "heartbeat_secs": plan.heartbeat_secs,
    });
    let path = data_dir.join("lab.json");
    let text = serde_json::to_string_pretty(&lab).unwrap_or_default();
    segue_core::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
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
