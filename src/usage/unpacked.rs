//! Limits on what a workbook may unpack to, checked before the spreadsheet reader sees it.
//!
//! An xlsx is a zip, and a few hundred KiB can unpack to gigabytes. The reader streams the
//! worksheet, but holds each tag and each run of text whole, and every part besides the
//! worksheets (shared strings above all) entirely. So each XML part is first unpacked through
//! a counter that keeps nothing: no tag or text may exceed [`TOKEN_LIMIT`] (Excel keeps at most
//! 32,767 characters in a cell), and the parts besides the worksheets may not exceed
//! [`PARTS_LIMIT`] together (1,048,575 distinct record ids take about 64 MiB of shared strings).
//! Sizes are counted, not taken from the zip directory, which a hostile file can fill with
//! anything. Damage of any other kind is left to the reader, which describes it.

use std::io::{Read, Seek};

/// The largest tag or run of text in any XML part.
pub const TOKEN_LIMIT: usize = 1 << 20;
/// The most the XML parts besides the worksheets may unpack to, together.
pub const PARTS_LIMIT: u64 = 128 << 20;
/// Deflate cannot expand its input more than this (about 1032:1 at best), and the zip reader
/// never reads past a part's stated compressed size: so that size bounds what the part unpacks
/// to without unpacking it.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Why a workbook is refused unread, or `Ok` when the reader may have it.
pub fn check<R: Read + Seek>(workbook: &mut R) -> Result<(), String> {
    let Ok(mut archive) = zip::ZipArchive::new(workbook) else {
        return Ok(());
    };
    let mut other_parts = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    for index in 0..archive.len() {
        let Ok(mut part) = archive.by_index(index) else {
            continue;
        };
        let name = part.name().to_string();
        if !(name.ends_with(".xml") || name.ends_with(".rels")) {
            continue;
        }
        let is_worksheet = name
            .strip_prefix("xl/worksheets/")
            .is_some_and(|file| !file.contains('/'));
        // Small parts (most of a workbook's) are bounded by their compressed size alone.
        if let Some(bound) = unpacked_bound(&part) {
            let within_parts = is_worksheet || other_parts + bound <= PARTS_LIMIT;
            if bound <= TOKEN_LIMIT as u64 && within_parts {
                if !is_worksheet {
                    other_parts += bound;
                }
                continue;
            }
        }
        let mut tokens = Tokens::default();
        loop {
            let read = match part.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if !is_worksheet {
                other_parts += read as u64;
                if other_parts > PARTS_LIMIT {
                    return Err(format!(
                        "the workbook's parts besides its worksheets unpack to more than {} MiB",
                        PARTS_LIMIT >> 20
                    ));
                }
            }
            if !tokens.feed(&chunk[..read]) {
                return Err(format!(
                    "{name} holds a tag or text larger than {} MiB",
                    TOKEN_LIMIT >> 20
                ));
            }
        }
    }
    Ok(())
}

/// The most `part` can unpack to, when its method allows telling that from its size.
fn unpacked_bound<R: Read>(part: &zip::read::ZipFile<'_, R>) -> Option<u64> {
    match part.compression() {
        zip::CompressionMethod::Stored => Some(part.compressed_size()),
        zip::CompressionMethod::Deflated => part.compressed_size().checked_mul(DEFLATE_MAX_RATIO),
        _ => None,
    }
}

/// The length of the current tag or text run.
#[derive(Default)]
struct Tokens {
    run: usize,
}

impl Tokens {
    /// Follows `bytes`; false once a run is too long. Jumps from delimiter to delimiter: a
    /// worksheet is scanned for every upload, so this runs over every byte the platform unpacks.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut start = 0;
        for delimiter in memchr::memchr2_iter(b'<', b'>', bytes) {
            if self.run + (delimiter - start) > TOKEN_LIMIT {
                return false;
            }
            self.run = 0;
            start = delimiter + 1;
        }
        self.run += bytes.len() - start;
        self.run <= TOKEN_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zip(parts: &[(&str, &[u8])]) -> Cursor<Vec<u8>> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in parts {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(content).unwrap();
        }
        Cursor::new(writer.finish().unwrap().into_inner())
    }

    #[test]
    fn ordinary_parts_pass_and_anything_unzippable_is_left_to_the_reader() {
        let text = "x".repeat(TOKEN_LIMIT);
        let sheet = format!("<sheetData><c><v>{text}</v></c></sheetData>");
        let image = vec![b'x'; 2 * TOKEN_LIMIT];
        assert_eq!(
            check(&mut zip(&[
                ("xl/worksheets/sheet1.xml", sheet.as_bytes()),
                ("xl/media/image1.png", &image),
            ])),
            Ok(())
        );
        assert_eq!(check(&mut Cursor::new(b"not a zip".to_vec())), Ok(()));
    }

    #[test]
    fn runs_are_followed_across_chunks() {
        let mut tokens = Tokens::default();
        let half = "x".repeat(TOKEN_LIMIT / 2);
        assert!(tokens.feed(format!("<a>{half}").as_bytes()));
        assert!(tokens.feed(half.as_bytes()));
        assert!(tokens.feed(b"<b>"), "a run of exactly the limit passes");
        assert!(tokens.feed(half.as_bytes()));
        assert!(tokens.feed(half.as_bytes()));
        assert!(
            !tokens.feed(b"x"),
            "one more byte than the limit, split over chunks"
        );
    }

    #[test]
    fn a_long_tag_or_text_is_refused() {
        let text = "x".repeat(TOKEN_LIMIT + 1);
        let error = check(&mut zip(&[("xl/sharedStrings.xml", text.as_bytes())])).unwrap_err();
        assert!(error.contains("xl/sharedStrings.xml"), "{error}");
        let tag = format!("<row {text}>");
        assert!(check(&mut zip(&[("xl/worksheets/sheet1.xml", tag.as_bytes())])).is_err());
    }
}
