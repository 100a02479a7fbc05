//! The usage workbook through real files: what the writer produces reads back exactly and
//! passes the shared validator; broken workbooks, including ones written by openpyxl the way
//! the official Python clients write them, fail with located problems.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use connect_payg::usage::workbook::{
    inspect_workbook_reader, read_workbook, validate_workbook, write_workbook, Cell, Inspection,
    Precision, Rules, UsageRow,
};
use payg_shared::period::Period;

fn record(n: u32) -> UsageRow {
    UsageRow {
        record_id: Cell::text(format!("CRD-1-AS-{n:04}-MPN-A-202402")),
        record_note: Cell::text(if n.is_multiple_of(2) {
            ""
        } else {
            "leap month, \"quoted\" & <odd>"
        }),
        item_search_criteria: Cell::text("item.mpn"),
        item_search_value: Cell::text("MPN-A"),
        quantity: Cell::Number(f64::from(n) / 4.0),
        start_time_utc: Cell::text("2024-02-01 00:00:00"),
        end_time_utc: Cell::text("2024-02-29 23:59:59"),
        asset_search_criteria: Cell::text("asset.id"),
        asset_search_value: Cell::text(format!("AS-{n:04}")),
        category_id: Cell::text("generic_category"),
        ..UsageRow::default()
    }
}

fn platform_rules(records: u32) -> Rules {
    Rules {
        period: Some(Period::parse("2024-02").unwrap()),
        items: Some(HashMap::from([(
            ("item.mpn".to_string(), "MPN-A".to_string()),
            Precision::Decimal(2),
        )])),
        assets: Some(
            (0..records)
                .map(|n| ("asset.id".to_string(), format!("AS-{n:04}")))
                .collect::<HashSet<_>>(),
        ),
    }
}

fn inspect(path: &Path, rules: &Rules) -> Inspection {
    inspect_workbook_reader(BufReader::new(File::open(path).unwrap()), rules)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_written_file_reads_back_exactly_and_passes_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("CRD-1_PRD-1_2024-02.xlsx");
    let rows: Vec<UsageRow> = (0..2_000).map(record).collect();

    let stats = write_workbook(&path, rows.clone().into_iter()).unwrap();

    assert_eq!(stats.rows, 2_000);
    assert_eq!(stats.bytes, std::fs::metadata(&path).unwrap().len());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(read_workbook(&bytes), Ok(rows));
    let inspection = inspect(&path, &platform_rules(2_000));
    assert_eq!(inspection.records, 2_000);
    assert_eq!(inspection.problems, vec![]);
}

#[test]
fn a_broken_file_reports_each_problem_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.xlsx");
    let rows = vec![
        record(0),
        UsageRow {
            quantity: Cell::Number(0.125),
            ..record(1)
        },
        UsageRow {
            amount: Cell::Number(1.0),
            ..record(2)
        },
        UsageRow {
            end_time_utc: Cell::text("2024-03-01 00:00:00"),
            ..record(3)
        },
        record(0),
        UsageRow {
            asset_search_value: Cell::text("AS-9999"),
            ..record(5)
        },
    ];
    write_workbook(&path, rows.into_iter()).unwrap();

    let found: Vec<String> = inspect(&path, &platform_rules(6))
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();

    assert_eq!(
        found,
        [
            "usage_records row 3, column quantity: 0.125 has 3 decimal places, but the item's precision is decimal(2)",
            "usage_records row 4, column amount: must be empty for the QT schema",
            "usage_records row 5, column end_time_utc: is after the reporting period 2024-02",
            "usage_records row 6, column record_id: \"CRD-1-AS-0000-MPN-A-202402\" repeats the record_id of row 2",
            "usage_records row 7, column asset_search_value: no asset on the file's contract and product has asset.id \"AS-9999\"",
        ]
    );
}

#[test]
fn a_workbook_written_by_openpyxl_is_read_like_ours() {
    let rules = Rules::offline(Some(Period::parse("2024-01").unwrap()));
    let inspection = inspect(&fixture("openpyxl-valid.xlsx"), &rules);
    assert_eq!((inspection.records, inspection.problems), (2, vec![]));
    let rows = read_workbook(&std::fs::read(fixture("openpyxl-valid.xlsx")).unwrap()).unwrap();
    assert_eq!(rows[0].quantity, Cell::Number(12.5));
    assert_eq!(rows[1].quantity, Cell::Number(3.0));
    assert_eq!(rows[1].record_note, Cell::Empty);
    assert_eq!(
        rows[1].asset_search_criteria,
        Cell::text("parameter.tenant_id")
    );
}

#[test]
fn openpyxl_date_cells_text_numbers_and_booleans_are_refused() {
    let bytes = std::fs::read(fixture("openpyxl-broken.xlsx")).unwrap();
    let found: Vec<String> = validate_workbook(&bytes, &Rules::offline(None))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "usage_records row 2, column start_time_utc: write times as text YYYY-MM-DD HH:MM:SS, not date serials",
            "usage_records row 3, column quantity: must be a number cell, not the text \"4\"",
            "usage_records row 4, column quantity: holds the boolean true; booleans are not allowed",
            "usage_records row 4, column record_id: \"R-1\" repeats the record_id of row 2",
        ]
    );
}
