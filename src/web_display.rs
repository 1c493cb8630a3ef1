//! The bedside display's page (`display/`), built into the binary, and the small HTTP server
//! that serves it for `ceusd demo`. An installed cart serves the same files from Mosquitto's
//! websockets listener instead (`display/mosquitto-ceusd-display.conf`).

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("display page server on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("display page server: {0}")]
    Thread(std::io::Error),
}

/// One file of the page.
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file of the page, as the package installs them under /usr/share/ceusd/display.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../display/index.html"),
    },
    Asset {
        path: "/display.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../display/display.css"),
    },
    Asset {
        path: "/display.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../display/display.js"),
    },
    Asset {
        path: "/vendor/mqtt.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../display/vendor/mqtt.min.js"),
    },
    Asset {
        path: "/vendor/mqtt.LICENSE.md",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../display/vendor/mqtt.LICENSE.md"),
    },
];

/// The asset at a request's URL (its query ignored; `/` is the page), if any.
pub fn asset_for(url: &str) -> Option<&'static Asset> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// Serves the page on `addr` from a thread of its own, for as long as the process runs.
/// Returns the address it listens on (the port is chosen when `addr`'s is 0).
pub fn serve(addr: SocketAddr) -> Result<SocketAddr, WebError> {
    let server = tiny_http::Server::http(addr).map_err(|e| WebError::Bind {
        addr,
        reason: e.to_string(),
    })?;
    let bound = server.server_addr().to_ip().ok_or_else(|| WebError::Bind {
        addr,
        reason: "not an IP socket".into(),
    })?;
    std::thread::Builder::new()
        .name("display-page".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = respond(request.method(), request.url());
                if let Err(e) = request.respond(response) {
                    log::debug!("display page: {e}");
                }
            }
        })
        .map_err(WebError::Thread)?;
    Ok(bound)
}

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn respond(method: &tiny_http::Method, url: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let text = |status: u16, body: &str| {
        let mut r = tiny_http::Response::from_string(body).with_status_code(status);
        if let Some(h) = header("Content-Type", "text/plain; charset=utf-8") {
            r.add_header(h);
        }
        r
    };
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return text(405, "only GET and HEAD");
    }
    let Some(asset) = asset_for(url) else {
        return text(404, "not found");
    };
    let mut r = tiny_http::Response::from_data(asset.bytes.to_vec());
    for (name, value) in [
        ("Content-Type", asset.content_type),
        // The page is rebuilt with the binary: never let a browser keep an old one.
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        if let Some(h) = header(name, value) {
            r.add_header(h);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_the_page_files() {
        assert_eq!(asset_for("/").map(|a| a.path), Some("/index.html"));
        assert_eq!(
            asset_for("/?broker=ws://127.0.0.1:9001&device=demo").map(|a| a.path),
            Some("/index.html")
        );
        assert_eq!(
            asset_for("/vendor/mqtt.min.js").map(|a| a.content_type),
            Some("text/javascript; charset=utf-8")
        );
        assert!(asset_for("/../Cargo.toml").is_none());
        assert!(asset_for("/display.js/").is_none());
    }

    /// The binary serves every file of display/ that a browser loads, as the package does.
    #[test]
    fn every_page_file_is_built_in() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("display");
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for file in files {
            let name = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if name.ends_with(".conf") || name.ends_with("README.md") {
                continue;
            }
            let asset = asset_for(&format!("/{name}"))
                .unwrap_or_else(|| panic!("display/{name} is not built into the binary"));
            assert_eq!(
                asset.bytes,
                std::fs::read(&file).unwrap().as_slice(),
                "{name}"
            );
        }
    }
}
