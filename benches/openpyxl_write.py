"""Baseline for the workbook benchmark: N usage rows written with openpyxl in write-only mode,
the library the official Connect usage template is filled with.

Usage: openpyxl_write.py ROWS PATH
Prints one JSON line: {"rows", "seconds", "peak_rss_kb", "bytes"}.

The rows are exactly those of `bench_row` in src/bin/bench/workbook.rs (same ids, notes,
criteria, MPNs, quantities, times, assets, category; empty cells left out), so both sides
write the same workbook.
"""

import json
import os
import resource
import sys
import time

from openpyxl import Workbook

COLUMNS = [
    "record_id", "record_note", "item_search_criteria", "item_search_value", "amount",
    "quantity", "start_time_utc", "end_time_utc", "asset_search_criteria",
    "asset_search_value", "item_name", "item_mpn", "item_precision", "item_unit",
    "category_id", "asset_recon_id", "tier",
]
NOTES = ["monthly usage", 'tenant "gold", EU region', "spike, see ticket #42", ""]


def bench_row(n):
    asset = n % 50_000
    mpn = n % 20
    return [
        f"CRD-{n % 100:05d}-AS-{asset:06d}-MPN-{mpn:03d}-{n:08d}",
        NOTES[n % 4] or None,
        "item.mpn",
        f"MPN-{mpn:03d}",
        None,
        (n % 10_000) * 0.25,
        "2024-01-01 00:00:00",
        "2024-01-31 23:59:59",
        "asset.id",
        f"AS-{asset:06d}",
        None, None, None, None,
        "generic_category",
        None, None,
    ]


def main():
    rows, path = int(sys.argv[1]), sys.argv[2]
    started = time.perf_counter()
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("usage_records")
    sheet.append(COLUMNS)
    for n in range(rows):
        sheet.append(bench_row(n))
    workbook.save(path)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "rows": rows,
        "seconds": seconds,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "bytes": os.path.getsize(path),
    }))


if __name__ == "__main__":
    main()
