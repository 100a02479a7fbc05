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
    // On the stack: a fresh heap buffer per upload costs page faults as inflate first fills it.
    let mut chunk = [0u8; 16 * 1024];
    for index in 0..archive.len() {
        let Ok(mut part) = archive.by_index(index) else {
            continue;
        };
        let name = String::from_utf8_lossy(part.name_raw()).into_owned();
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
    /// Follows `bytes`; false once a run is too long. A worksheet is scanned for every upload,
    /// and XML has a delimiter every few bytes, so rather than visiting each one this looks
    /// for the *last* delimiter within the reach of the current run: found, the run restarts
    /// there; not found, the run is too long. A chunk costs a few bytes of backward search.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        loop {
            let reach = TOKEN_LIMIT - self.run;
            if rest.len() <= reach {
                self.run = match memchr::memrchr2(b'<', b'>', rest) {
                    Some(delimiter) => rest.len() - delimiter - 1,
                    None => self.run + rest.len(),
                };
                return true;
            }
            match memchr::memrchr2(b'<', b'>', &rest[..=reach]) {
                Some(delimiter) => {
                    self.run = 0;
                    rest = &rest[delimiter + 1..];
                }
                None => return false,
            }
        }
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

    /// The longest run between delimiters, the slow way.
    fn longest_run(bytes: &[u8]) -> usize {
        bytes
            .split(|byte| matches!(byte, b'<' | b'>'))
            .map(<[u8]>::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn any_chunking_agrees_with_the_longest_run() {
        // Runs just under, at and over the limit, among short ones, fed in uneven chunks.
        let mut seed = 7u64;
        let mut next = |bound: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % bound
        };
        for case in 0..24 {
            let mut bytes = Vec::new();
            for _ in 0..4 {
                let run = match next(4) {
                    0 => next(40),
                    _ => TOKEN_LIMIT - 2 + next(4),
                };
                bytes.extend(std::iter::repeat_n(b'x', run));
                bytes.push(if next(2) == 0 { b'<' } else { b'>' });
            }
            if case % 2 == 0 {
                bytes.pop();
            }
            let mut tokens = Tokens::default();
            let mut passed = true;
            let mut rest = &bytes[..];
            while !rest.is_empty() && passed {
                let (chunk, tail) = rest.split_at((1 + next(3 * TOKEN_LIMIT / 2)).min(rest.len()));
                passed = tokens.feed(chunk);
                rest = tail;
            }
            assert_eq!(passed, longest_run(&bytes) <= TOKEN_LIMIT, "case {case}");
        }
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
