//! `POST /v1/masters`: release managers upload a master (WAV or FLAC body), authenticated
//! by a bearer token. The body is spooled to a temp file as it arrives (never held in
//! memory), then decoded and packaged like `segue ingest`.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use segue_core::server::ReqBody;
use segue_core::server::{full, json_error, Body};
use tokio::io::AsyncWriteExt;

use crate::error::Error;
use crate::ingest;
use crate::State;

pub async fn post_master(state: &State, req: Request<ReqBody>) -> Response<Body> {
    let s = &state.ingest;
    if s.tokens.is_empty() {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "uploads are disabled on this origin ([ingest] tokens is empty)",
        );
    }
    if !segue_core::server::bearer_matches(req.headers(), &s.tokens) {
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer` upload token is required",
        );
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"segue-origin\""));
        return r;
    }
    let limit = s.max_master_mb << 20;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(s.max_master_mb);
    }
    let name = req
        .headers()
        .get("x-filename")
        .and_then(|v| v.to_str().ok())
        .filter(|n| !n.is_empty() && n.len() <= 255)
        .unwrap_or("upload")
        .to_owned();

    // Spool the body to a temp file (removed when `spool` drops, whatever happens).
    let spool = match &s.upload_dir {
        d if d.is_empty() => tempfile::NamedTempFile::new(),
        d => tempfile::NamedTempFile::new_in(d),
    };
    let spool = match spool {
        Ok(f) => f,
        Err(e) => return Error::Encode(format!("cannot create an upload spool file: {e}")).into_response(),
    };
    let mut out = match spool.as_file().try_clone() {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(e) => return Error::Encode(format!("cannot open the upload spool file: {e}")).into_response(),
    };
    let mut body = req.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_body", &format!("upload interrupted: {e}")),
        };
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > limit {
                return too_large(s.max_master_mb);
            }
            // Not fsynced: a crash loses an upload that was never acknowledged anyway.
            if let Err(e) = out.write_all(&data).await {
                return Error::Encode(format!("cannot spool the upload: {e}")).into_response();
            }
        }
    }
    if let Err(e) = out.flush().await {
        return Error::Encode(format!("cannot spool the upload: {e}")).into_response();
    }
    drop(out);
    if received == 0 {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_master",
            &format!("{name}: the request body is empty"),
        );
    }

    let _permit = match state.ingest_slots.acquire().await {
        Ok(p) => p,
        Err(_) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the origin is shutting down"),
    };
    let path = spool.path().to_owned();
    let decoded = tokio::task::spawn_blocking(move || crate::master::decode_file(&path)).await;
    let master = match decoded {
        Ok(Ok(m)) => m,
        // Name the upload, not the spool file, in what the client sees.
        Ok(Err(Error::Master { problem, .. })) => return Error::Master { file: name, problem }.into_response(),
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return Error::Encode(format!("decoder task failed: {e}")).into_response(),
    };
    match crate::package::package(state.store.as_ref(), master, state.keks.as_deref()).await {
        Ok(p) => {
            let report = ingest::IngestReport::new(std::path::Path::new(&name), &p);
            tracing::info!(file = %name, content_id = %report.content_id, created = p.created, bytes = received, "master uploaded");
            let status = if p.created { StatusCode::CREATED } else { StatusCode::OK };
            let mut r = Response::new(full(serde_json::to_vec(&report).unwrap_or_default()));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(loc) = HeaderValue::from_str(&format!("/m/{}.json", report.content_id)) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

fn too_large(max_mb: u64) -> Response<Body> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("masters are limited to {max_mb} MiB ([ingest] max_master_mb)"),
    )
}
