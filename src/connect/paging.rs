//! Limit/offset pagination as Connect does it.
//!
//! A list answer is a JSON array plus `Content-Range: items <first>-<last>/<total>`. The next
//! offset is computed from what the server actually returned, not from the limit we asked
//! for: servers may cap a page below the requested size, and skipping by the requested limit
//! would silently lose the rest.

use std::fmt;

/// The parsed `Content-Range` of a list answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// `None` when the server writes `*` (total unknown).
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parses `items 0-99/253` (the unit word is not checked).
    pub fn parse(header: &str) -> Option<ContentRange> {
        let (_unit, range) = header.trim().split_once(' ')?;
        let (span, total) = range.trim().split_once('/')?;
        let (first, last) = span.split_once('-')?;
        let total = match total.trim() {
            "*" => None,
            total => Some(total.parse().ok()?),
        };
        Some(ContentRange {
            first: first.trim().parse().ok()?,
            last: last.trim().parse().ok()?,
            total,
        })
    }

    /// Only the total, which is all `limit=0` asks for; lenient about the span, which servers
    /// write oddly for empty pages (`items 0-0/0`, `items 0--1/5`).
    pub fn parse_total(header: &str) -> Option<u64> {
        header.rsplit_once('/')?.1.trim().parse().ok()
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.total {
            Some(total) => write!(f, "items {}-{}/{}", self.first, self.last, total),
            None => write!(f, "items {}-{}/*", self.first, self.last),
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` when the endpoint is not paginated (no `Content-Range`).
    pub range: Option<ContentRange>,
}

/// A list answer whose `Content-Range` does not start where we asked: the server ignores
/// `offset`, and following it would loop (or stop) without reading the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoProgress {
    pub asked: u64,
    pub range: ContentRange,
}

impl fmt::Display for NoProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "paging makes no progress: asked for offset {}, the server answered {}",
            self.asked, self.range
        )
    }
}

impl<T> Page<T> {
    /// Where the page after this one starts, given the offset this one was asked for; `None`
    /// when this was the last page (empty, unpaginated, or reaching the total), an error when
    /// the server's answer does not start at `offset`.
    pub fn next_offset(&self, offset: u64) -> Result<Option<u64>, NoProgress> {
        let Some(range) = self.range else {
            return Ok(None);
        };
        if self.items.is_empty() {
            return Ok(None);
        }
        // A page that does not start where we asked repeats or skips items: never follow it.
        if range.first != offset {
            return Err(NoProgress {
                asked: offset,
                range,
            });
        }
        let next = offset + self.items.len() as u64;
        Ok(match range.total {
            Some(total) if range.last + 1 >= total || next >= total => None,
            _ => Some(next),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(len: usize, header: Option<&str>) -> Page<u32> {
        Page {
            items: vec![0; len],
            range: header.map(|h| ContentRange::parse(h).unwrap()),
        }
    }

    #[test]
    fn parses_the_documented_header() {
        assert_eq!(
            ContentRange::parse("items 0-99/253"),
            Some(ContentRange {
                first: 0,
                last: 99,
                total: Some(253)
            })
        );
        assert_eq!(ContentRange::parse("items 200-252/*").unwrap().total, None);
        assert_eq!(
            ContentRange::parse("items 0-99/253").unwrap().to_string(),
            "items 0-99/253"
        );
        assert_eq!(ContentRange::parse("items 0-99"), None);
        assert_eq!(ContentRange::parse("garbage"), None);
        assert_eq!(ContentRange::parse("items a-b/3"), None);
    }

    #[test]
    fn total_only_parsing_accepts_odd_spans() {
        assert_eq!(ContentRange::parse_total("items 0-0/0"), Some(0));
        assert_eq!(ContentRange::parse_total("items 0--1/5"), Some(5));
        assert_eq!(ContentRange::parse_total("items 0-99/253"), Some(253));
        assert_eq!(ContentRange::parse_total("items 0-99"), None);
    }

    #[test]
    fn advances_by_what_was_returned() {
        // Asked for 100, the server capped the page at 10.
        assert_eq!(page(10, Some("items 0-9/25")).next_offset(0), Ok(Some(10)));
        assert_eq!(
            page(10, Some("items 10-19/25")).next_offset(10),
            Ok(Some(20))
        );
        assert_eq!(page(5, Some("items 20-24/25")).next_offset(20), Ok(None));
    }

    #[test]
    fn stops_on_empty_unpaginated_or_complete_pages() {
        assert_eq!(page(0, Some("items 0-0/0")).next_offset(0), Ok(None));
        assert_eq!(page(3, None).next_offset(0), Ok(None));
        assert_eq!(page(100, Some("items 0-99/100")).next_offset(0), Ok(None));
        assert_eq!(page(10, Some("items 0-9/*")).next_offset(0), Ok(Some(10)));
    }

    #[test]
    fn a_server_ignoring_the_offset_is_an_error_not_a_loop() {
        for (len, header, offset) in [
            (10, "items 0-9/25", 20),
            (1, "items 0-0/*", 1),
            (1, "items 0-0/*", 406),
        ] {
            let error = page(len, Some(header)).next_offset(offset).unwrap_err();
            assert_eq!(error.asked, offset);
            assert!(error.to_string().contains(header), "{error}");
            assert!(error.to_string().contains("no progress"), "{error}");
        }
    }
}
