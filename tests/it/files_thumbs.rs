//! Thumbnails of uploaded images (issue 22), against the real binary over real HTTP:
//! `GET /files/<id>/thumb` is a JPEG at most 480 px on its long side, with the EXIF
//! orientation applied and no EXIF in it, cacheable like the file (ETag, Range, 304), stored
//! durably beside the file; an image claiming 100,000 × 100,000 pixels or a corrupt one gets
//! none (404) and is still served as a file.

use std::io::Cursor;

use image::{DynamicImage, ImageEncoder, RgbImage};
use serde_json::Value;

use crate::support::ws::{user, TestUser};
use crate::support::{http, Reply, Server};

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn upload(srv: &Server, u: &TestUser, name: &str, body: &[u8]) -> Value {
    let r = http(
        srv.addr,
        "POST",
        &format!("/api/files?name={}", enc(name)),
        &[("cookie", &u.cookie)],
        Some(body.to_vec()),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()["file"].clone()
}

async fn thumb(srv: &Server, u: Option<&TestUser>, id: &str, extra: &[(&str, &str)]) -> Reply {
    let mut h: Vec<(&str, &str)> = extra.to_vec();
    if let Some(u) = u {
        h.push(("cookie", &u.cookie));
    }
    srv.get(&format!("/files/{id}/thumb"), &h).await
}

/// A `w` × `h` image, red in its top-left quarter, blue elsewhere.
fn marked(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if x < w / 4 && y < h / 4 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    })
}

/// A JPEG of `img`, with an EXIF block giving `orientation` and a text nobody should get back.
pub fn jpeg_with_exif(img: &RgbImage, orientation: u16) -> Vec<u8> {
    // TIFF, little endian: one IFD with Orientation (0x0112, SHORT) and ImageDescription
    // (0x010e, ASCII) pointing at the text after the IFD.
    let text = b"GPS 52.52N 13.40E secret-place\0";
    let mut t = b"II*\0\x08\0\0\0".to_vec();
    t.extend_from_slice(&2u16.to_le_bytes());
    let text_at = 8 + 2 + 2 * 12 + 4;
    t.extend_from_slice(&0x010eu16.to_le_bytes());
    t.extend_from_slice(&2u16.to_le_bytes());
    t.extend_from_slice(&(text.len() as u32).to_le_bytes());
    t.extend_from_slice(&(text_at as u32).to_le_bytes());
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(text);
    let mut out = Vec::new();
    let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    e.set_exif_metadata(t).unwrap();
    e.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
}

pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn decode(r: &Reply) -> DynamicImage {
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert!(r.body.starts_with(&[0xff, 0xd8, 0xff]));
    image::load_from_memory_with_format(&r.body, image::ImageFormat::Jpeg).unwrap()
}

fn is_red(p: image::Rgb<u8>) -> bool {
    p.0[0] > 180 && p.0[2] < 80
}

#[tokio::test]
async fn images_get_small_cacheable_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    let bob = user(&srv, "bob").await;
    let f = upload(&srv, &alice, "wide.png", &png(&marked(1200, 800))).await;
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(1200), Some(800))
    );
    let id = f["id"].as_str().unwrap();
    let r = thumb(&srv, Some(&alice), id, &[]).await;
    let t = decode(&r).to_rgb8();
    assert_eq!(t.dimensions(), (480, 320));
    assert!(is_red(*t.get_pixel(10, 10)) && !is_red(*t.get_pixel(470, 310)));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("sandbox; default-src 'none'")
    );
    assert_eq!(r.header("content-disposition"), None);
    assert!(r.header("cache-control").unwrap().contains("immutable"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    // Its own ETag (not the file's), 304 on a match, Range like the file.
    let etag = r.header("etag").unwrap().to_string();
    let file = srv
        .get(&format!("/files/{id}"), &[("cookie", &alice.cookie)])
        .await;
    assert_ne!(file.header("etag"), Some(etag.as_str()));
    let r304 = thumb(&srv, Some(&alice), id, &[("if-none-match", &etag)]).await;
    assert_eq!(r304.status, 304);
    let part = thumb(&srv, Some(&alice), id, &[("range", "bytes=0-9")]).await;
    assert_eq!(part.status, 206);
    assert!(part.body[..] == r.body[..10]);
    let len = r.body.len();
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 0-9/{len}").as_str())
    );
    // The same rights as the file: bob (no message with it), nobody, an unknown id: 404.
    for who in [Some(&bob), None] {
        let no = thumb(&srv, who, id, &[]).await;
        assert_eq!((no.status, no.error_code().as_str()), (404, "not_found"));
    }
    let unknown = thumb(&srv, Some(&alice), "0123456789abcdef0123456789abcdef", &[]).await;
    assert_eq!(unknown.status, 404);
    // Stored beside the file, by content hash.
    let sha: String = ring::digest::digest(&ring::digest::SHA256, &png(&marked(1200, 800)))
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(std::fs::read(dir.path().join("files/thumbs").join(&sha)).unwrap() == r.body.to_vec());

    // Small images keep their size; GIF and WebP get a JPEG as well.
    let small = upload(&srv, &alice, "small.png", &png(&marked(100, 60))).await;
    let t = decode(&thumb(&srv, Some(&alice), small["id"].as_str().unwrap(), &[]).await);
    assert_eq!((t.width(), t.height()), (100, 60));
    for fmt in [image::ImageFormat::Gif, image::ImageFormat::WebP] {
        let mut b = Vec::new();
        DynamicImage::ImageRgb8(marked(600, 1000))
            .to_rgba8()
            .write_to(&mut Cursor::new(&mut b), fmt)
            .unwrap();
        let f = upload(&srv, &alice, "pic", &b).await;
        let t = decode(&thumb(&srv, Some(&alice), f["id"].as_str().unwrap(), &[]).await);
        assert_eq!((t.width(), t.height()), (288, 480), "{fmt:?}");
    }
    // A file that is no image has no thumbnail.
    let pdf = upload(&srv, &alice, "a.pdf", b"%PDF-1.4 nothing").await;
    assert_eq!(
        thumb(&srv, Some(&alice), pdf["id"].as_str().unwrap(), &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn exif_orientation_is_applied_and_no_exif_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    // A camera's landscape pixels with "rotate 90° clockwise to view" (orientation 6).
    let bytes = jpeg_with_exif(&marked(960, 640), 6);
    assert!(bytes.windows(11).any(|w| w == b"secret-plac"));
    let f = upload(&srv, &alice, "phone.jpg", &bytes).await;
    // Width and height as shown: upright.
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(640), Some(960)),
        "{f}"
    );
    let r = thumb(&srv, Some(&alice), f["id"].as_str().unwrap(), &[]).await;
    let t = decode(&r).to_rgb8();
    assert_eq!(t.dimensions(), (320, 480));
    // The red corner (top left of the stored pixels) is top right once turned clockwise.
    assert!(is_red(*t.get_pixel(310, 10)), "{:?}", t.get_pixel(310, 10));
    assert!(!is_red(*t.get_pixel(10, 10)), "{:?}", t.get_pixel(10, 10));
    // No EXIF (or any of its text) in the thumbnail.
    assert!(!r.body.windows(4).any(|w| w == b"Exif"));
    assert!(!r.body.windows(11).any(|w| w == b"secret-plac"));
    // The file itself is the bytes as uploaded (the uploader's metadata is theirs).
    let full = srv
        .get(
            &format!("/files/{}", f["id"].as_str().unwrap()),
            &[("cookie", &alice.cookie)],
        )
        .await;
    assert!(full.body[..] == bytes[..]);
    // Attachments carry the same upright size.
    let bob = user(&srv, "bob").await;
    let mut a = crate::support::ws::Client::connect_synced(&srv, &alice).await;
    let ack = a
        .request(serde_json::json!({"type": "send", "client_id": "o1", "to": bob.id, "text": "", "attachments": [f["id"]]}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let mut b = crate::support::ws::Client::connect_synced(&srv, &bob).await;
    let h = b
        .request(serde_json::json!({"type": "history", "conversation": ack["conversation"]}))
        .await;
    let att = &h["messages"][0]["attachments"][0];
    assert_eq!(
        (att["width"].as_u64(), att["height"].as_u64()),
        (Some(640), Some(960)),
        "{h}"
    );
    // And bob, who now has a message with it, gets the thumbnail.
    assert_eq!(
        thumb(&srv, Some(&bob), f["id"].as_str().unwrap(), &[])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn bombs_and_corrupt_images_get_no_thumbnail_but_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let alice = user(&srv, "alice").await;
    // A PNG that claims 100,000 × 100,000 pixels (RGBA: 40 GB decoded), with a few bytes of
    // "data": refused before any decoding, so memory stays where it was.
    let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bomb.extend_from_slice(&100_000u32.to_be_bytes());
    bomb.extend_from_slice(&100_000u32.to_be_bytes());
    bomb.extend_from_slice(&[8, 6, 0, 0, 0]);
    let crc = crc32(&bomb[12..]);
    bomb.extend_from_slice(&crc.to_be_bytes());
    bomb.extend_from_slice(&[0, 0, 0, 0]);
    bomb.extend_from_slice(b"IEND\xaeB`\x82");
    // A JPEG that claims 60,000 × 60,000 (a real header, then nothing).
    let mut jbomb = jpeg_with_exif(&marked(16, 16), 1);
    let sof = jbomb.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    jbomb[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    jbomb[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    // A JPEG whose frame header is broken (7 colour components), and a PNG whose pixel data
    // is garbage. (A JPEG that is merely cut short gets a thumbnail of what is there, grey
    // below, as browsers show it.)
    let mut cut = jpeg_with_exif(&marked(800, 600), 1);
    let sof = cut.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    cut[sof + 9] = 7;
    let mut garbage = png(&marked(300, 300));
    let n = garbage.len();
    for b in &mut garbage[60..n - 20] {
        *b ^= 0x5a;
    }
    let rss0 = rss_kib(srv.pid());
    for (name, bytes, dims) in [
        ("bomb.png", &bomb, Some((100_000, 100_000))),
        ("bomb.jpg", &jbomb, Some((60_000, 60_000))),
        ("cut.jpg", &cut, None),
        ("garbage.png", &garbage, None),
    ] {
        let f = upload(&srv, &alice, name, bytes).await;
        let id = f["id"].as_str().unwrap();
        if let Some((w, h)) = dims {
            assert_eq!(
                (f["width"].as_u64(), f["height"].as_u64()),
                (Some(w), Some(h)),
                "{name}"
            );
        }
        let r = thumb(&srv, Some(&alice), id, &[]).await;
        assert_eq!(
            r.status,
            404,
            "{name}: a thumbnail of {} bytes",
            r.body.len()
        );
        assert_eq!(r.error_code(), "not_found");
        // Still served as the file it is.
        let full = srv
            .get(&format!("/files/{id}"), &[("cookie", &alice.cookie)])
            .await;
        assert_eq!(full.status, 200, "{name}");
        assert!(full.body[..] == bytes[..], "{name}");
    }
    let grown = rss_kib(srv.pid()).saturating_sub(rss0);
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
    assert_eq!(srv.get("/healthz", &[]).await.status, 200);

    // Thumbnails are durable: after kill -9 they are still there.
    let f = upload(&srv, &alice, "kept.png", &png(&marked(900, 900))).await;
    let before = thumb(&srv, Some(&alice), f["id"].as_str().unwrap(), &[]).await;
    assert_eq!(before.status, 200);
    srv.kill();
    let srv = Server::start(dir.path(), &[]);
    let after = thumb(&srv, Some(&alice), f["id"].as_str().unwrap(), &[]).await;
    assert_eq!(after.status, 200);
    assert!(after.body == before.body);
    assert!(std::fs::read_dir(dir.path().join("files/tmp"))
        .unwrap()
        .next()
        .is_none());
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn crc32(b: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
