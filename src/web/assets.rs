//! The page's files, embedded at build time from `web/` (no build step,
//! no file system access at run time: only these paths are served, so no
//! path can reach anything else).

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its bytes.
    pub body: &'static [u8],
    /// Its Content-Type.
    pub content_type: &'static str,
    /// True for the HTML page (which gets the page's CSP).
    pub is_page: bool,
}

const INDEX: Asset = Asset {
    body: include_bytes!("../../web/index.html"),
    content_type: "text/html; charset=utf-8",
    is_page: true,
};
const APP: Asset = Asset {
    body: include_bytes!("../../web/app.js"),
    content_type: "text/javascript; charset=utf-8",
    is_page: false,
};
const STYLE: Asset = Asset {
    body: include_bytes!("../../web/style.css"),
    content_type: "text/css; charset=utf-8",
    is_page: false,
};
const ICON: Asset = Asset {
    body: include_bytes!("../../web/favicon.svg"),
    content_type: "image/svg+xml",
    is_page: false,
};
const OPENAPI: Asset = Asset {
    body: include_bytes!("../../web/openapi.json"),
    content_type: "application/json",
    is_page: false,
};

/// The embedded file served at `path` (exact match only).
pub fn find(path: &str) -> Option<Asset> {
    Some(match path {
        "/" | "/index.html" => INDEX,
        "/app.js" => APP,
        "/style.css" => STYLE,
        "/favicon.svg" => ICON,
        "/api/v1/openapi.json" => OPENAPI,
        _ => return None,
    })
}

/// Every embedded file with its path (for size checks).
pub fn all() -> [(&'static str, Asset); 5] {
    [
        ("/", INDEX),
        ("/app.js", APP),
        ("/style.css", STYLE),
        ("/favicon.svg", ICON),
        ("/api/v1/openapi.json", OPENAPI),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_small_and_only_known_paths_are_served() {
        let page: usize = [INDEX, APP, STYLE, ICON].iter().map(|a| a.body.len()).sum();
        assert!(page < 60 * 1024, "page assets are {page} bytes");
        assert!(find("/../Cargo.toml").is_none());
        assert!(find("/app.js?x").is_none());
        assert!(find("//etc/passwd").is_none());
        let spec: serde_json::Value = serde_json::from_slice(OPENAPI.body).unwrap();
        assert_eq!(spec["openapi"].as_str().unwrap().get(..2), Some("3."));
    }
}
