//! The listener web app (`app-api/web/`): plain HTML, CSS and ES modules compiled into
//! the binary, served at `/` and `/web/*` without authentication (they hold no data; the
//! app signs in with an API key and calls `/v1` like any client).

use http::{HeaderMap, Response};
use segue_core::server::Body;
use segue_core::web::File;

const FILES: &[File] = &[
    File { path: "/", content_type: "text/html; charset=utf-8", bytes: include_bytes!("../web/index.html") },
    File {
        path: "/web/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/app.js"),
    },
    File {
        path: "/web/player.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/player.js"),
    },
    File { path: "/web/style.css", content_type: "text/css; charset=utf-8", bytes: include_bytes!("../web/style.css") },
    segue_core::web::EVENTS_JS,
];

/// Scripts and styles only from here; audio, seek tables and manifests come from the
/// POPs (any http(s) origin: the POP list is dynamic), covers as blobs.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self' http: https:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'self'";

/// The file at `path`, if it is one of the app's.
pub fn serve(path: &str, request: &HeaderMap) -> Option<Response<Body>> {
    segue_core::web::serve(FILES, path, request, CSP)
}
