//! The web client's assets on the wire: pre-compressed (brotli, gzip, or none, by
//! `Accept-Encoding`, always with `Vary`), cached for a year where the URL carries the content
//! hash and revalidated everywhere else, and the hashed URLs in the page all work.

use std::io::Read;

use crate::support::{Reply, Server};

fn decode(r: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    match r.header("content-encoding") {
        None => out.extend_from_slice(&r.body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .expect("gzip");
        }
        Some("br") => {
            brotli::Decompressor::new(&r.body[..], 4096)
                .read_to_end(&mut out)
                .expect("brotli");
        }
        Some(other) => panic!("unexpected encoding {other}"),
    }
    out
}

/// The import map of the page: (module path, hashed URL).
fn import_map(html: &str) -> Vec<(String, String)> {
    let start = html
        .find("<script type=\"importmap\">")
        .expect("import map")
        + 25;
    let end = start + html[start..].find("</script>").expect("end of import map");
    let map: serde_json::Value = serde_json::from_str(&html[start..end]).expect("json");
    map["imports"]
        .as_object()
        .expect("imports")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("url").to_string()))
        .collect()
}

#[tokio::test]
async fn assets_are_precompressed_and_chosen_by_accept_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let plain = srv.get("/js/ui.js", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    for (accept, want) in [
        ("gzip, deflate, br, zstd", Some("br")),
        ("br;q=1.0, gzip;q=0.8", Some("br")),
        ("gzip", Some("gzip")),
        ("br;q=0, gzip", Some("gzip")),
        ("identity", None),
        ("deflate", None),
    ] {
        for path in ["/", "/js/ui.js", "/app.css"] {
            let r = srv.get(path, &[("accept-encoding", accept)]).await;
            assert_eq!(r.status, 200, "{path} {accept}");
            assert_eq!(r.header("content-encoding"), want, "{path} {accept}");
            assert_eq!(r.header("vary"), Some("Accept-Encoding"));
            let identity = srv.get(path, &[]).await;
            assert_eq!(decode(&r), identity.body.to_vec(), "{path} {accept}");
            if want.is_some() {
                assert!(
                    r.body.len() * 2 < identity.body.len(),
                    "{path} {accept}: {} of {} bytes",
                    r.body.len(),
                    identity.body.len()
                );
            }
            // Each representation has its own ETag, and a revalidation of it is a 304.
            let etag = r.header("etag").expect("etag").to_string();
            assert_ne!(
                Some(etag.as_str()),
                identity.header("etag").filter(|_| want.is_some())
            );
            let again = srv
                .get(
                    path,
                    &[("accept-encoding", accept), ("if-none-match", &etag)],
                )
                .await;
            assert_eq!(again.status, 304, "{path} {accept}");
            assert!(again.body.is_empty());
        }
    }
    // A weak comparison matches too (proxies that recompress mark ETags weak).
    let r = srv.get("/", &[("accept-encoding", "br")]).await;
    let weak = format!("W/{}", r.header("etag").unwrap());
    let again = srv
        .get("/", &[("accept-encoding", "br"), ("if-none-match", &weak)])
        .await;
    assert_eq!(again.status, 304);
}

#[tokio::test]
async fn hashed_urls_are_immutable_and_everything_else_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let page = srv.get("/", &[("accept-encoding", "br")]).await;
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let html = String::from_utf8(decode(&page)).unwrap();

    // The stylesheet, the icon and the entry module are referenced by hashed URL.
    for prefix in ["/app.css?v=", "/icon.svg?v=", "/js/main.js?v="] {
        assert!(html.contains(prefix), "{prefix} in\n{html}");
    }
    // Every module of the client is in the import map, under its hashed URL, and that URL
    // serves it with a year of caching.
    let map = import_map(&html);
    let modules: Vec<&str> = map.iter().map(|(k, _)| k.as_str()).collect();
    for m in ["/js/main.js", "/js/ui.js", "/js/store.js", "/js/i18n.js"] {
        assert!(modules.contains(&m), "{m} not in {modules:?}");
    }
    for (path, url) in &map {
        assert!(url.starts_with(&format!("{path}?v=")), "{url}");
        let r = srv.get(url, &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{url}"
        );
        let bare = srv.get(path, &[]).await;
        assert_eq!(bare.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(decode(&r), bare.body.to_vec());
        // A stale hash (an older page asking) gets the current file, revalidated, not cached.
        let stale = srv.get(&format!("{path}?v=0123456789abcdef"), &[]).await;
        assert_eq!(stale.status, 200);
        assert_eq!(stale.header("cache-control"), Some("no-cache"));
    }
    // The CSP allows the import map by its hash, and nothing inline besides.
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self' 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}
