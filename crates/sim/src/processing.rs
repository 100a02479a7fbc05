//! What the platform does with an uploaded spreadsheet: validate it against the file's period,
//! the product's PPU items and the assets on the file's contract and product, with the one
//! shared template validator (`payg_shared::workbook`), and summarise the outcome.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Cursor;

use bytes::Bytes;
use chrono::Datelike;

use super::state::World;
use super::usage_file::{Upload, UsageFile};
use payg_shared::period::Period;
use payg_shared::workbook::{self, Precision, Problem, Rules};

/// `error_detail` is at most this long: Connect's is a short explanation of ≤ 200 characters.
const ERROR_DETAIL_MAX: usize = 200;
/// Sheet row of the first record (the header is row 1).
const FIRST_DATA_ROW: u32 = 2;

/// Everything Connect knows about the file the workbook was uploaded to.
pub(crate) fn rules_for(world: &World, file: &UsageFile) -> Rules {
    let catalogue = &world.catalogue;
    let (from, to) = (file.fields.period_from, file.fields.period_to);
    // A month or a day; any other span is judged against the month it starts in.
    let period = Period::covering(from, to).or_else(|| Period::new(from.year(), from.month()).ok());
    let items: HashMap<(String, String), Precision> = catalogue
        .product(&file.product_id)
        .into_iter()
        .flat_map(|product| product.ppu_items())
        .filter_map(|item| {
            let precision = Precision::parse(&item.precision).ok()?;
            Some([
                (("item.mpn".to_string(), item.mpn.clone()), precision),
                (
                    ("item.local_id".to_string(), item.local_id.clone()),
                    precision,
                ),
            ])
        })
        .flatten()
        .collect();
    let assets: HashSet<(String, String)> = world
        .assets_on(&file.contract_id, &file.product_id)
        .flat_map(|asset| {
            let by_parameter = asset
                .params
                .iter()
                .map(|param| (format!("parameter.{}", param.id), param.value.clone()));
            std::iter::once(("asset.id".to_string(), asset.id.clone())).chain(by_parameter)
        })
        .collect();
    Rules {
        period,
        items: Some(items),
        assets: Some(assets),
    }
}

/// The outcome of processing an upload: the upload record and, when invalid, the problems.
pub(crate) struct Processed {
    pub upload: Upload,
    pub problems: Vec<Problem>,
}

/// Reads and validates the workbook (blocking CPU work: run it on a blocking thread).
pub(crate) fn process(bytes: Bytes, rules: &Rules) -> Processed {
    let inspection = workbook::inspect_workbook_rows(Cursor::new(&bytes[..]), rules, drop);
    // A problem of the workbook, sheet or header row (row 1) spoils every data row.
    let structural = inspection
        .problems
        .iter()
        .any(|problem| problem.row.is_none_or(|row| row < FIRST_DATA_ROW));
    let invalid_rows: BTreeSet<u32> = match structural {
        true => (FIRST_DATA_ROW..FIRST_DATA_ROW + inspection.records as u32).collect(),
        false => inspection.problems.iter().filter_map(|p| p.row).collect(),
    };
    Processed {
        upload: Upload {
            bytes,
            readable: !structural,
            invalid_rows,
            records: inspection.records,
            processed: true,
        },
        problems: inspection.problems,
    }
}

/// A short explanation naming the first problems, as `error_detail` carries it.
pub(crate) fn error_detail(problems: &[Problem]) -> String {
    let listed = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let text = match problems.len() {
        1 => listed,
        n => format!("{n} problems: {listed}"),
    };
    truncate(&text, ERROR_DETAIL_MAX)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(row: u32, message: &str) -> Problem {
        Problem {
            sheet: workbook::SHEET.into(),
            row: Some(row),
            column: Some("quantity"),
            message: message.into(),
        }
    }

    #[test]
    fn error_detail_names_the_first_problems_within_200_chars() {
        let one = error_detail(&[problem(2, "is negative")]);
        assert!(one.contains("row 2"), "{one}");
        let many: Vec<Problem> = (2..40).map(|row| problem(row, "is negative")).collect();
        let detail = error_detail(&many);
        assert!(
            detail.starts_with("38 problems: usage_records row 2"),
            "{detail}"
        );
        assert_eq!(detail.chars().count(), 200);
    }
}
