//! Files the report leaves on disk: names built from platform ids never leave `--out`, and
//! every file written is private and replaced atomically on a re-run.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{period, world_with, World};
use connect_payg::usage::write_bad_records;
use connect_payg::usage::FilingResult;
use connect_sim::{BadRowSpec, SeedSpec};

/// A world whose first contract carries `contract_id`, as a hostile platform could send it.
async fn world_with_contract_id(contract_id: &str) -> World {
    let contract_id = contract_id.to_string();
    world_with(
        SeedSpec::default(),
        BadRowSpec::default(),
        period("2024-02"),
        |catalogue| {
            let old = std::mem::replace(&mut catalogue.contracts[0].id, contract_id.clone());
            for asset in &mut catalogue.assets {
                if asset.contract_id == old {
                    asset.contract_id = contract_id.clone();
                }
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_platform_id_cannot_write_outside_out() {
    let world = world_with_contract_id("../../../pwned").await;
    let out = world.dir.path().join("a/b/c/out");
    let mut job = world.job();
    job.dry_run = true;
    job.keep_workbooks = true;
    job.workdir = out.clone();
    let summary = world.reporter(&[]).run(&job, None).await.unwrap();

    let hostile: Vec<_> = summary
        .groups
        .iter()
        .filter(|g| g.key.contract_id == "../../../pwned")
        .collect();
    assert!(!hostile.is_empty(), "the hostile contract has usage");
    for group in &hostile {
        let FilingResult::Failed(reason) = &group.result else {
            panic!("{:?} must fail", group.result);
        };
        assert!(reason.contains("../../../pwned"), "{reason}");
    }
    let escaped: Vec<_> = walk(world.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("pwned"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
    // The other groups were written, privately.
    let written: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "xlsx"))
        .collect();
    assert_eq!(written.len(), summary.groups.len() - hostile.len());
    for path in &written {
        assert_eq!(std::fs::metadata(path).unwrap().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o700);
}

#[tokio::test]
async fn a_rerun_replaces_its_workbooks_and_never_writes_through_a_symlink() {
    let world = world_with_contract_id("CTR-renamed-1").await;
    let out = world.dir.path().join("out");
    let mut job = world.job();
    job.dry_run = true;
    job.keep_workbooks = true;
    job.workdir = out.clone();
    let first = world.reporter(&[]).run(&job, None).await.unwrap();
    assert_eq!(first.failed(), 0);
    let workbook = first.groups[0].workbook.clone().unwrap();
    // Someone plants a symlink where the next run writes.
    let victim = world.dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::fs::remove_file(&workbook).unwrap();
    std::os::unix::fs::symlink(&victim, &workbook).unwrap();
    let bad_records = write_bad_records(&out, &first).await.unwrap();
    std::fs::remove_file(&bad_records).unwrap();
    std::os::unix::fs::symlink(&victim, &bad_records).unwrap();

    let second = world.reporter(&[]).run(&job, None).await.unwrap();
    assert_eq!(second.failed(), 0);
    write_bad_records(&out, &second).await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    for path in [&workbook, &bad_records] {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.is_file(), "{} replaced by a file", path.display());
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
    let leftovers: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}
