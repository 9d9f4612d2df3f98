//! Thumbnails of uploaded images: a JPEG at most `THUMB_MAX` pixels on its long side, made
//! once when the upload completes and kept durably beside the blob as
//! `<data-dir>/files/thumbs/<sha256 hex>` (one per content, like the blobs), and the image's
//! size as shown (EXIF orientation applied).
//!
//! Decoding uses the `image` crate with only the PNG, JPEG, GIF and WebP decoders. It runs on
//! the blocking pool, one image at a time (`Thumbnailer::slots`), never on an async worker.
//! An image whose header claims more than `MAX_PIXELS` is never decoded (a decompression bomb
//! gets no thumbnail and costs no memory), and the decoder's allocations are capped as well
//! (`image::Limits`). A corrupt image gets no thumbnail either; it is still stored and served
//! as a file, and `GET /files/<id>/thumb` answers 404 for it (the web client then shows the
//! image itself or a placeholder). The thumbnail is a fresh encoding of the pixels: no EXIF or
//! other metadata of the original is carried over.
//!
//! Called by `files::Upload::finish` only; writes only under `files/thumbs` (through a
//! temporary file in `files/tmp`: write, fsync, rename, directory fsync).

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// The longest side of a thumbnail, in pixels.
pub const THUMB_MAX: u32 = 480;
/// The most pixels an image may have to be decoded for a thumbnail (about 40 megapixels:
/// every phone camera's photo, but not a decompression bomb). The decoded image takes up to
/// 4 bytes per pixel while the thumbnail is made.
pub const MAX_PIXELS: u64 = 40_000_000;
/// JPEG quality of thumbnails.
const QUALITY: u8 = 82;

/// What looking at an image gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Looked {
    /// Width and height as shown (after the EXIF orientation), when the decoder read them.
    pub dims: Option<(u32, u32)>,
    /// A thumbnail is stored for it.
    pub thumb: bool,
}

/// Whether images of this sniffed type get a thumbnail.
pub fn can_decode(mime: &str) -> bool {
    format_of(mime).is_some()
}

/// The image format of a sniffed type, if we decode it.
fn format_of(mime: &str) -> Option<ImageFormat> {
    match mime {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn limits() -> image::Limits {
    let mut l = image::Limits::default();
    // The decoded frame (at most 4 bytes a pixel for these formats) and some working room.
    l.max_alloc = Some(MAX_PIXELS * 4 + 64 * 1024 * 1024);
    l
}

/// Whether an orientation turns the image by a quarter (width and height swap).
fn swaps(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Looks at the image `src` (of the sniffed type `mime`) and, unless `dest` exists already,
/// writes its thumbnail there durably (through a temporary file in `tmp_dir`). Blocking.
/// Never fails: an image it cannot read gets no thumbnail; an I/O error writing the thumbnail
/// is returned (the upload then fails like any other disk error).
pub fn look(src: &Path, mime: &str, dest: &Path, tmp_dir: &Path) -> std::io::Result<Looked> {
    let Some(format) = format_of(mime) else {
        return Ok(Looked::default());
    };
    let made = match decode(src, format) {
        Ok(Some((img, orientation))) => Some((img, orientation)),
        Ok(None) | Err(_) => None,
    };
    let Some((img, orientation)) = made else {
        return Ok(Looked {
            dims: None,
            thumb: dest.exists(),
        });
    };
    let (w, h) = (img.width(), img.height());
    let dims = if swaps(orientation) { (h, w) } else { (w, h) };
    if dest.exists() {
        // The same bytes were uploaded before: their thumbnail is there.
        return Ok(Looked {
            dims: Some(dims),
            thumb: true,
        });
    }
    let Some(jpeg) = thumbnail(img, orientation) else {
        return Ok(Looked {
            dims: Some(dims),
            thumb: false,
        });
    };
    write_durably(&jpeg, dest, tmp_dir)?;
    Ok(Looked {
        dims: Some(dims),
        thumb: true,
    })
}

/// Decodes `src` if its header is readable and within `MAX_PIXELS`; `Ok(None)` when it is too
/// large. The orientation comes from the EXIF data (none: `NoTransforms`).
fn decode(
    src: &Path,
    format: ImageFormat,
) -> image::ImageResult<Option<(DynamicImage, Orientation)>> {
    let mut reader = ImageReader::with_format(BufReader::new(File::open(src)?), format);
    reader.limits(limits());
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Ok(None);
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder)?;
    Ok(Some((img, orientation)))
}

/// The JPEG bytes of `img` scaled to at most `THUMB_MAX` on its long side, oriented, with
/// transparency laid on white. None if encoding fails.
fn thumbnail(img: DynamicImage, orientation: Orientation) -> Option<Vec<u8>> {
    let (w, h) = (img.width(), img.height());
    let mut small = if w.max(h) > THUMB_MAX {
        img.thumbnail(THUMB_MAX, THUMB_MAX)
    } else {
        img
    };
    small.apply_orientation(orientation);
    let rgb = if small.color().has_alpha() {
        let mut rgba = small.to_rgba8();
        for p in rgba.pixels_mut() {
            let a = u16::from(p.0[3]);
            for c in &mut p.0[..3] {
                *c = ((u16::from(*c) * a + 255 * (255 - a)) / 255) as u8;
            }
        }
        DynamicImage::ImageRgba8(rgba).to_rgb8()
    } else {
        small.to_rgb8()
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, QUALITY);
    rgb.write_with_encoder(enc).ok()?;
    Some(out)
}

/// Writes `bytes` to `dest`: a temporary file in `tmp_dir`, fsync'd, renamed, the directory
/// fsync'd. A failure leaves no file.
fn write_durably(bytes: &[u8], dest: &Path, tmp_dir: &Path) -> std::io::Result<()> {
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = tmp_dir.join(format!(
        "thumb-{}",
        rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    let res = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        if let Some(dir) = dest.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_large_png_gets_a_small_jpeg() {
        let d = dir();
        let img = image::RgbaImage::from_fn(1000, 500, |x, _| image::Rgba([x as u8, 0, 0, 128]));
        let src = d.path().join("a.png");
        img.save_with_format(&src, ImageFormat::Png).unwrap();
        let dest = d.path().join("t");
        let got = look(&src, "image/png", &dest, d.path()).unwrap();
        assert_eq!(
            got,
            Looked {
                dims: Some((1000, 500)),
                thumb: true
            }
        );
        let t = image::load_from_memory(&std::fs::read(&dest).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (480, 240));
        // Again (the same bytes once more): the thumbnail is kept, not made anew.
        assert!(look(&src, "image/png", &dest, d.path()).unwrap().thumb);
    }

    #[test]
    fn garbage_and_other_types_get_none() {
        let d = dir();
        let src = d.path().join("x");
        std::fs::write(&src, [0xff, 0xd8, 0xff, 0, 1, 2, 3]).unwrap();
        let dest = d.path().join("t");
        assert_eq!(
            look(&src, "image/jpeg", &dest, d.path()).unwrap(),
            Looked::default()
        );
        assert_eq!(
            look(&src, "application/pdf", &dest, d.path()).unwrap(),
            Looked::default()
        );
        assert!(!dest.exists());
    }
}
