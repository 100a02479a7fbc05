//! Limits on what a workbook may unpack to, checked before the spreadsheet reader sees it.
//!
//! An xlsx is a zip, and a few hundred KiB can unpack to gigabytes. The reader streams the
//! worksheet, but holds each tag and each run of text whole, and every part besides the
//! worksheets (shared strings above all) entirely. So each XML part is first unpacked through
//! a counter that keeps nothing: no tag or text may exceed [`TOKEN_LIMIT`] (Excel keeps at most
//! 32,767 characters in a cell), and the parts besides the worksheets may not exceed
//! [`PARTS_LIMIT`] together (1,048,575 distinct record ids take about 64 MiB of shared strings),
//! nor the worksheets [`SHEETS_LIMIT`]; a shared-strings part may not declare more strings
//! (`uniqueCount`, which the reader allocates for up front) than its size can hold.
//! Sizes are counted, not taken from the zip directory, which a hostile file can fill with
//! anything. Damage of any other kind is left to the reader, which describes it.
//!
//! So a part is inflated twice, here and by the reader. Keeping what is unpacked here and
//! handing the reader a stored copy was measured (the simulator's 10k-subscription month, 500
//! uploads): it spared the reader's inflate (~3% of the simulator's CPU) but building the copy
//! cost as much, so each part is still unpacked through a counter that keeps nothing.

use std::io::{Read, Seek};

/// The largest tag or run of text in any XML part.
pub const TOKEN_LIMIT: usize = 1 << 20;
/// The most the XML parts besides the worksheets may unpack to, together.
pub const PARTS_LIMIT: u64 = 128 << 20;
/// The most the worksheets may unpack to, together (about a million template rows).
pub const SHEETS_LIMIT: u64 = 1 << 30;
/// The fewest bytes one shared string takes (`<si/>`).
const MIN_STRING_BYTES: u64 = 5;
/// Deflate cannot expand its input more than this (about 1032:1 at best), and the zip reader
/// never reads past a part's stated compressed size: so that size bounds what the part unpacks
/// to without unpacking it.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Why a workbook is refused unread, or `Ok` when the reader may have it. Every part is
/// checked whatever its name: the reader follows the workbook's relationships, which may name
/// a worksheet `sheet1.bin`.
pub fn check<R: Read + Seek>(workbook: &mut R) -> Result<(), String> {
    check_within(workbook, SHEETS_LIMIT)
}

/// [`check`] with the worksheets' limit as a parameter (tests shrink it).
fn check_within<R: Read + Seek>(workbook: &mut R, sheets_limit: u64) -> Result<(), String> {
    let Ok(mut archive) = zip::ZipArchive::new(workbook) else {
        return Ok(());
    };
    let mut other_parts = 0u64;
    let mut sheets = 0u64;
    // On the stack: a fresh heap buffer per upload costs page faults as inflate first fills it.
    let mut chunk = [0u8; 16 * 1024];
    for index in 0..archive.len() {
        let Ok(mut part) = archive.by_index(index) else {
            continue;
        };
        let name = String::from_utf8_lossy(part.name_raw()).into_owned();
        let is_worksheet = name
            .strip_prefix("xl/worksheets/")
            .is_some_and(|file| !file.contains('/'));
        let bound = unpacked_bound(&part);
        let mut tokens = Tokens::default();
        let mut first = true;
        loop {
            let read = match part.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let bytes = &chunk[..read];
            if std::mem::take(&mut first) {
                if let Some(declared) = unique_count(bytes) {
                    // The reader reserves room for every declared string before reading one.
                    let room = bound.unwrap_or(PARTS_LIMIT).min(PARTS_LIMIT) / MIN_STRING_BYTES;
                    if declared > room {
                        return Err(format!(
                            "{name} declares {declared} shared strings, more than it can hold"
                        ));
                    }
                }
                // Small parts (most of a workbook's) are bounded by their compressed size.
                if let Some(bound) = bound {
                    let within = match is_worksheet {
                        true => sheets + bound <= sheets_limit,
                        false => other_parts + bound <= PARTS_LIMIT,
                    };
                    if bound <= TOKEN_LIMIT as u64 && within {
                        *(if is_worksheet {
                            &mut sheets
                        } else {
                            &mut other_parts
                        }) += bound;
                        break;
                    }
                }
            }
            if is_worksheet {
                sheets += read as u64;
                if sheets > sheets_limit {
                    return Err(format!(
                        "the workbook's worksheets unpack to more than {} MiB",
                        sheets_limit >> 20
                    ));
                }
            } else {
                other_parts += read as u64;
                if other_parts > PARTS_LIMIT {
                    return Err(format!(
                        "the workbook's parts besides its worksheets unpack to more than {} MiB",
                        PARTS_LIMIT >> 20
                    ));
                }
            }
            if !tokens.feed(bytes) {
                return Err(format!(
                    "{name} holds a tag or text larger than {} MiB",
                    TOKEN_LIMIT >> 20
                ));
            }
        }
    }
    Ok(())
}

/// The `uniqueCount` a shared-strings part opening with `bytes` declares.
fn unique_count(bytes: &[u8]) -> Option<u64> {
    let start = memchr::memmem::find(bytes, b"<sst")?;
    let rest = &bytes[start..];
    let tag = &rest[..memchr::memchr(b'>', rest).unwrap_or(rest.len())];
    let at = memchr::memmem::find(tag, b"uniqueCount=")? + "uniqueCount=".len();
    let digits: Vec<u8> = tag[at..]
        .iter()
        .skip_while(|b| matches!(b, b'"' | b'\'' | b' '))
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    // Too many digits for a u64 is as absurd as any other huge count.
    Some(
        std::str::from_utf8(&digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX),
    )
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
        // Binary parts are checked too; any byte value, `<` and `>` included, turns up often.
        let image: Vec<u8> = (0..2 * TOKEN_LIMIT).map(|i| (i * 7 % 256) as u8).collect();
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
    fn every_part_is_checked_whatever_its_name() {
        let text = "x".repeat(TOKEN_LIMIT + 1);
        for name in ["xl/worksheets/sheet1.bin", "xl/data.bin", "noextension"] {
            let error = check(&mut zip(&[(name, text.as_bytes())])).unwrap_err();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn worksheets_unpack_to_a_bounded_size() {
        // Inflated sizes are counted, so a highly compressible sheet is read to the limit only.
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer
            .start_file("xl/worksheets/sheet1.bin", options)
            .unwrap();
        let row = b"<row><c><v>1</v></c></row>".repeat(4096);
        let limit = 8 << 20;
        let mut written = 0u64;
        while written <= limit {
            writer.write_all(&row).unwrap();
            written += row.len() as u64;
        }
        let mut bytes = Cursor::new(writer.finish().unwrap().into_inner());
        assert!(bytes.get_ref().len() < 1 << 20);
        let error = check_within(&mut bytes, limit).unwrap_err();
        assert!(error.contains("worksheets unpack to more than"), "{error}");
    }

    #[test]
    fn an_absurd_shared_string_count_is_refused() {
        let sst = |count: &str| {
            format!(
                r#"<?xml version="1.0"?><sst count="1" uniqueCount="{count}"><si><t>a</t></si></sst>"#
            )
        };
        let error = check(&mut zip(&[(
            "xl/sharedStrings.xml",
            sst("1000000000000000").as_bytes(),
        )]))
        .unwrap_err();
        assert!(error.contains("1000000000000000 shared strings"), "{error}");
        let huge = sst(&"9".repeat(40));
        assert!(check(&mut zip(&[("xl/anything.bin", huge.as_bytes())])).is_err());
        assert_eq!(
            check(&mut zip(&[("xl/sharedStrings.xml", sst("1").as_bytes())])),
            Ok(())
        );
        assert_eq!(unique_count(b"<sst uniqueCount='12'>"), Some(12));
        assert_eq!(unique_count(b"<worksheet>"), None);
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
