//! The vendor record as the sources deliver it and the simulator writes it: its seven fields
//! by name ([`FIELDS`], the header of a vendor CSV), [`RawRecord`] holding them as text, and
//! how its `subscription_id` and `item_mpn` name an asset and an item ([`AssetCriteria`],
//! [`ItemCriteria`]). The product reads records with these names and the simulator generates
//! them with the same ones, so the two cannot drift apart. Record ids are compared within a
//! run by their [`IdKeys`].

use std::hash::BuildHasher;

/// A field's text: kept in place up to 24 bytes (ids, quantities, times and most notes fit),
/// on the heap beyond. As `String`s, a record's fields were seven allocations made on the
/// parsing thread and freed on the checking one (filling and dropping them, 3.2% of a
/// 300k-record dry run's instructions, most of them the allocator's). In place, the bench's
/// 4M-record dry run read its records in 16% less time (six alternating pairs, every pair
/// faster), and the 300k-record run executed 3.0% fewer instructions.
pub use compact_str::CompactString;

/// The record's fields, in header order.
pub const FIELDS: [&str; 7] = [
    "subscription_id",
    "item_mpn",
    "quantity",
    "start_time_utc",
    "end_time_utc",
    "record_id",
    "record_note",
];

/// A record id's 128-bit key within one run: two independently seeded 64-bit hashes of its
/// text. A false repeat needs both to collide (~n²/2¹²⁹ over n ids, as for a digest of that
/// length), and they are fast (foldhash's: SipHash took a percent of a 10M-record run in the
/// row rules, SHA-256 3.6% of the reading in the id checks). Seeded anew for each instance:
/// keys are compared only with keys of the same instance and do not outlive it, so nothing
/// needs them stable across runs (an id that must be, like a derived record id's content
/// digest, takes a real digest).
#[derive(Clone, Default)]
pub struct IdKeys(
    foldhash::quality::RandomState,
    foldhash::quality::RandomState,
);

impl IdKeys {
    /// The two hashes of `id`: a pair of u64 rather than a u128 keeps map entries 8-aligned.
    pub fn pair(&self, id: &str) -> (u64, u64) {
        (self.0.hash_one(id), self.1.hash_one(id))
    }

    /// The two hashes of `id` as 16 bytes.
    pub fn bytes(&self, id: &str) -> [u8; 16] {
        let (high, low) = self.pair(id);
        let mut key = [0; 16];
        key[..8].copy_from_slice(&high.to_le_bytes());
        key[8..].copy_from_slice(&low.to_le_bytes());
        key
    }
}

/// `text` without surrounding whitespace, as `str::trim` (Unicode's) has it. A field that
/// starts and ends with visible ASCII, almost every one, is returned as it is without decoding
/// characters: every field of every record is trimmed, and `str::trim` took 2% of a 10M-record
/// run.
pub fn trim(text: &str) -> &str {
    // Visible ASCII: no control character (vertical tab is whitespace to `trim`) and no space.
    let plain = |byte: Option<&u8>| byte.is_some_and(|b| b.is_ascii_graphic());
    let bytes = text.as_bytes();
    if plain(bytes.first()) && plain(bytes.last()) {
        text
    } else {
        text.trim()
    }
}

/// One record as written: every field as text, absent when missing or empty, and where it
/// stands in its source (a record the simulator generates has no place yet: line 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRecord {
    /// 1-based line of the record (CSV, JSON lines) or of the start of its element (JSON
    /// array), for error reports.
    pub line: u64,
    /// 0-based index of the element in a JSON array: a compact array is all on line 1.
    pub element: Option<u64>,
    /// The object it came from, when the source is several objects (each with its own lines).
    pub object: Option<std::sync::Arc<str>>,
    pub subscription_id: Option<CompactString>,
    pub item_mpn: Option<CompactString>,
    pub quantity: Option<CompactString>,
    pub start_time_utc: Option<CompactString>,
    pub end_time_utc: Option<CompactString>,
    pub record_id: Option<CompactString>,
    pub record_note: Option<CompactString>,
}

impl RawRecord {
    /// The seven fields by name, in [`FIELDS`] order.
    pub fn fields(&self) -> [(&'static str, &Option<CompactString>); 7] {
        [
            (FIELDS[0], &self.subscription_id),
            (FIELDS[1], &self.item_mpn),
            (FIELDS[2], &self.quantity),
            (FIELDS[3], &self.start_time_utc),
            (FIELDS[4], &self.end_time_utc),
            (FIELDS[5], &self.record_id),
            (FIELDS[6], &self.record_note),
        ]
    }

    /// The field at `index` of [`FIELDS`]; `None` past the seven.
    pub fn field_mut(&mut self, index: usize) -> Option<&mut Option<CompactString>> {
        Some(match index {
            0 => &mut self.subscription_id,
            1 => &mut self.item_mpn,
            2 => &mut self.quantity,
            3 => &mut self.start_time_utc,
            4 => &mut self.end_time_utc,
            5 => &mut self.record_id,
            6 => &mut self.record_note,
            _ => return None,
        })
    }

    /// Sets a field by its header name; unknown names are ignored (sources may carry extras).
    pub fn set(&mut self, name: &str, value: Option<impl Into<CompactString>>) {
        let value = value.map(Into::into).filter(|v| !v.trim().is_empty());
        let slot = match name {
            "subscription_id" => &mut self.subscription_id,
            "item_mpn" => &mut self.item_mpn,
            "quantity" => &mut self.quantity,
            "start_time_utc" => &mut self.start_time_utc,
            "end_time_utc" => &mut self.end_time_utc,
            "record_id" => &mut self.record_id,
            "record_note" => &mut self.record_note,
            _ => return,
        };
        *slot = value;
    }
}

/// How a vendor record's `subscription_id` finds its asset (`ASSET_SEARCH_CRITERIA`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssetCriteria {
    Id,
    ExternalId,
    ExternalUid,
    Parameter(String),
}

impl AssetCriteria {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "asset.id" => Ok(AssetCriteria::Id),
            "asset.external_id" => Ok(AssetCriteria::ExternalId),
            "asset.external_uid" => Ok(AssetCriteria::ExternalUid),
            other => match other.strip_prefix("parameter.") {
                Some(name) if !name.is_empty() => Ok(AssetCriteria::Parameter(name.to_string())),
                _ => Err(format!(
                    "{other:?} is not one of asset.id, asset.external_id, asset.external_uid, parameter.<name>"
                )),
            },
        }
    }

    /// The spelling used in configuration and in the workbook's `asset_search_criteria`.
    pub fn as_setting(&self) -> String {
        match self {
            AssetCriteria::Id => "asset.id".into(),
            AssetCriteria::ExternalId => "asset.external_id".into(),
            AssetCriteria::ExternalUid => "asset.external_uid".into(),
            AssetCriteria::Parameter(name) => format!("parameter.{name}"),
        }
    }
}

/// How a vendor record's `item_mpn` finds the PAYG item (`ITEM_SEARCH_CRITERIA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemCriteria {
    Mpn,
    LocalId,
    Id,
}

impl ItemCriteria {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "item.mpn" => Ok(ItemCriteria::Mpn),
            "item.local_id" => Ok(ItemCriteria::LocalId),
            "item.id" => Ok(ItemCriteria::Id),
            other => Err(format!(
                "{other:?} is not one of item.mpn, item.local_id, item.id"
            )),
        }
    }

    pub fn as_setting(&self) -> &'static str {
        match self {
            ItemCriteria::Mpn => "item.mpn",
            ItemCriteria::LocalId => "item.local_id",
            ItemCriteria::Id => "item.id",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_has_one_key_per_instance_and_its_bytes_are_its_pair() {
        let keys = IdKeys::default();
        assert_eq!(keys.pair("R-1"), keys.clone().pair("R-1"));
        assert_ne!(keys.pair("R-1"), keys.pair("R-2"));
        let (high, low) = keys.pair("R-1");
        assert_eq!(keys.bytes("R-1")[..8], high.to_le_bytes());
        assert_eq!(keys.bytes("R-1")[8..], low.to_le_bytes());
        // Seeded per instance (another run): the same id, another key (wrong once in 2^128).
        assert_ne!(keys.pair("R-1"), IdKeys::default().pair("R-1"));
    }

    #[test]
    fn fields_are_trimmed_as_str_trims_them() {
        for text in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{b}a",
            "a\u{b}",
            "\u{a0}a\u{3000}",
            "é",
            "a b",
            "\ta\n",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }
}
