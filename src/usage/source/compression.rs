//! Compressed sources: `.gz` and `.zst` files and objects (by name), and HTTP bodies sent with
//! `Content-Encoding: gzip` or `zstd`, inflated as they are read.
//!
//! A few kilobytes of gzip can inflate to gigabytes, so the inflated bytes are counted and a
//! source that inflates beyond `USAGE_SOURCE_MAX_INFLATED_BYTES` ends with an error naming it
//! ([`Bounded`]) instead of running until memory or time runs out. The bound is per
//! compressed stream: each object of a multi-part source has its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

/// How many inflated bytes one compressed source may give unless
/// `USAGE_SOURCE_MAX_INFLATED_BYTES` says otherwise (8 GiB: some 70 million CSV records).
pub const DEFAULT_MAX_INFLATED_BYTES: u64 = 8 << 30;

/// The compressions a source may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a name's suffix says, and the name without that suffix (which tells
    /// the format): `usage.csv.gz` → gzip, `usage.csv`.
    pub fn split(name: &str) -> (Option<Compression>, &str) {
        let lower = name.to_ascii_lowercase();
        for (suffix, compression) in [
            (".gz", Compression::Gzip),
            (".gzip", Compression::Gzip),
            (".zst", Compression::Zstd),
            (".zstd", Compression::Zstd),
        ] {
            if lower.ends_with(suffix) {
                return (Some(compression), &name[..name.len() - suffix.len()]);
            }
        }
        (None, name)
    }

    /// The compression an HTTP `Content-Encoding` names: `Ok(None)` for none or `identity`,
    /// an error naming the value for an encoding this reader cannot undo.
    pub fn from_content_encoding(value: &str) -> Result<Option<Compression>, String> {
        let codings: Vec<String> = value
            .split(',')
            .map(|coding| coding.trim().to_ascii_lowercase())
            .filter(|coding| !coding.is_empty() && coding != "identity")
            .collect();
        match codings.as_slice() {
            [] => Ok(None),
            [one] if one == "gzip" || one == "x-gzip" => Ok(Some(Compression::Gzip)),
            [one] if one == "zstd" => Ok(Some(Compression::Zstd)),
            _ => Err(format!(
                "unsupported Content-Encoding {value:?}: expected gzip, zstd or none"
            )),
        }
    }
}

/// `reader` as it reads inflated (or as it is, without a compression), failing once more than
/// `max_inflated` bytes came out of it.
pub fn inflate(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    compression: Option<Compression>,
    max_inflated: u64,
) -> Box<dyn AsyncRead + Send + Unpin> {
    let inflated: Box<dyn AsyncRead + Send + Unpin> = match compression {
        None => return reader,
        Some(Compression::Gzip) => {
            // Concatenated members (parallel gzip, appended exports) are one stream.
            let mut decoder = GzipDecoder::new(BufReader::new(reader));
            decoder.multiple_members(true);
            Box::new(decoder)
        }
        Some(Compression::Zstd) => {
            let mut decoder = ZstdDecoder::new(BufReader::new(reader));
            decoder.multiple_members(true);
            Box::new(decoder)
        }
    };
    Box::new(Bounded {
        inner: inflated,
        limit: max_inflated,
        read: 0,
    })
}

/// An inflating reader that fails once it gave more than `limit` bytes.
struct Bounded<R> {
    inner: R,
    limit: u64,
    read: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Bounded<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.read += (buf.filled().len() - before) as u64;
            if this.read > this.limit {
                // The bytes just read are not handed on: nothing beyond the bound is parsed.
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the data inflates beyond {} bytes (USAGE_SOURCE_MAX_INFLATED_BYTES); \
                         a compression bomb, or raise the bound",
                        this.limit
                    ),
                )));
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn compression_by_suffix_and_the_name_left_for_the_format() {
        for (name, compression, rest) in [
            ("usage.csv.gz", Some(Compression::Gzip), "usage.csv"),
            ("usage.JSONL.GZ", Some(Compression::Gzip), "usage.JSONL"),
            ("u.ndjson.gzip", Some(Compression::Gzip), "u.ndjson"),
            ("u.csv.zst", Some(Compression::Zstd), "u.csv"),
            ("u.csv.zstd", Some(Compression::Zstd), "u.csv"),
            ("u.csv", None, "u.csv"),
            ("u.gz.csv", None, "u.gz.csv"),
            ("u.tgz", None, "u.tgz"),
        ] {
            assert_eq!(Compression::split(name), (compression, rest), "{name}");
        }
    }

    #[test]
    fn content_encodings() {
        for (value, expected) in [
            ("gzip", Ok(Some(Compression::Gzip))),
            ("x-gzip", Ok(Some(Compression::Gzip))),
            (" GZIP ", Ok(Some(Compression::Gzip))),
            ("zstd", Ok(Some(Compression::Zstd))),
            ("identity", Ok(None)),
            ("", Ok(None)),
            ("identity, gzip", Ok(Some(Compression::Gzip))),
        ] {
            assert_eq!(
                Compression::from_content_encoding(value),
                expected,
                "{value}"
            );
        }
        for value in ["br", "deflate", "gzip, gzip", "gzip, br"] {
            let error = Compression::from_content_encoding(value).unwrap_err();
            assert!(error.contains(value), "{error}");
        }
    }

    async fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzipEncoder::new(Vec::new());
        encoder.write_all(data).await.unwrap();
        encoder.shutdown().await.unwrap();
        encoder.into_inner()
    }

    async fn read_all(
        data: Vec<u8>,
        compression: Option<Compression>,
        limit: u64,
    ) -> io::Result<Vec<u8>> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(io::Cursor::new(data));
        let mut out = Vec::new();
        inflate(reader, compression, limit)
            .read_to_end(&mut out)
            .await
            .map(|_| out)
    }

    #[tokio::test]
    async fn inflates_gzip_members_and_zstd_frames() {
        let mut two_members = gzip(b"a,b\n").await;
        two_members.extend(gzip(b"c,d\n").await);
        let out = read_all(two_members, Some(Compression::Gzip), 1 << 20).await;
        assert_eq!(out.unwrap(), b"a,b\nc,d\n");

        let mut encoder = ZstdEncoder::new(Vec::new());
        encoder.write_all(b"x\ny\n").await.unwrap();
        encoder.shutdown().await.unwrap();
        let out = read_all(encoder.into_inner(), Some(Compression::Zstd), 1 << 20).await;
        assert_eq!(out.unwrap(), b"x\ny\n");
    }

    #[tokio::test]
    async fn a_bomb_stops_at_the_bound_and_plain_data_is_not_counted() {
        let zeros = vec![b'0'; 4 << 20];
        let bomb = gzip(&zeros).await;
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let error = read_all(bomb.clone(), Some(Compression::Gzip), 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("inflates beyond 1048576 bytes"));
        // Exactly at the bound is fine.
        let out = read_all(bomb, Some(Compression::Gzip), 4 << 20).await;
        assert_eq!(out.unwrap().len(), 4 << 20);
        // Uncompressed data is not inflated, so not bounded here.
        let out = read_all(zeros, None, 1).await;
        assert_eq!(out.unwrap().len(), 4 << 20);
    }

    #[tokio::test]
    async fn truncated_or_corrupt_data_is_an_error() {
        let data = gzip(b"subscription_id\nAS-1\n").await;
        let cut = data[..data.len() - 6].to_vec();
        assert!(read_all(cut, Some(Compression::Gzip), 1 << 20)
            .await
            .is_err());
        let not_gzip = b"subscription_id\n".to_vec();
        assert!(read_all(not_gzip, Some(Compression::Gzip), 1 << 20)
            .await
            .is_err());
    }
}
