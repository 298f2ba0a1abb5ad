//! Killing sluice with SIGKILL at any moment leaves the complete old output or the complete
//! new one, never a mix; the next run cleans up and succeeds.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::workdir::Workdir;

fn big_input(rows: usize) -> String {
    let mut s = String::from("id,country,amount,text\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{i},{},{}.25,\"row {i}, some text\"\n",
            ["DE", "FR", "US"][i % 3],
            i % 1000
        ));
    }
    s
}

/// The output is either absent (allowed only when `may_be_absent`) or complete: its manifest
/// lists exactly the data files present, with matching sizes and checksums. Returns its rows.
fn assert_consistent(wd: &Workdir, out: &str, may_be_absent: bool) -> Option<u64> {
    let dir = wd.path(out);
    if !dir.exists() {
        assert!(may_be_absent, "the output vanished");
        return None;
    }
    let manifest = sluice::sink::read_manifest(&dir).expect("a complete output has a manifest");
    manifest.verify(&dir).expect("files match the manifest");
    let listed: BTreeSet<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
    let present: BTreeSet<String> = wd.data_files(out).into_iter().collect();
    assert_eq!(listed, present, "no file missing, none extra");
    Some(manifest.rows)
}

fn kill_at(wd: &Workdir, args: &[&str], after: Duration) -> bool {
    let mut child = wd.sluice().args(args).spawn().expect("spawn");
    std::thread::sleep(after);
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    finished
}

#[test]
fn sigkill_during_overwrite_never_leaves_a_mix() {
    let wd = Workdir::new();
    wd.write("old.csv", big_input(1_000));
    wd.write("new.csv", big_input(300_000));
    wd.ingest(&["old.csv", "--to", "out", "--files", "4"]);
    let args = [
        "ingest",
        "new.csv",
        "--to",
        "out",
        "--files",
        "4",
        "--mode",
        "overwrite",
        "-q",
    ];
    // Seeded kill points spread over the run (debug builds take a few seconds here).
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let mut finished_runs = 0;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ms = 50 + x % 3_000;
        if kill_at(&wd, &args, Duration::from_millis(ms)) {
            finished_runs += 1;
        }
        let rows = assert_consistent(&wd, "out", false);
        assert!(
            rows == Some(1_000) || rows == Some(300_000),
            "rows {rows:?}"
        );
    }
    assert!(finished_runs < 8, "no run was killed mid-way");
    wd.ok(&args);
    assert_eq!(assert_consistent(&wd, "out", false), Some(300_000));
    assert_eq!(wd.staging_leftovers(), Vec::<String>::new());
}

#[test]
fn sigkill_during_a_first_write_leaves_nothing_or_everything() {
    let wd = Workdir::new();
    wd.write("new.csv", big_input(200_000));
    for ms in [100u64, 700, 1_500] {
        let args = ["ingest", "new.csv", "--to", "out", "--files", "3", "-q"];
        kill_at(&wd, &args, Duration::from_millis(ms));
        if let Some(rows) = assert_consistent(&wd, "out", true) {
            assert_eq!(rows, 200_000);
            std::fs::remove_dir_all(wd.path("out")).expect("rm");
        }
    }
    wd.ok(&["ingest", "new.csv", "--to", "out", "-q"]);
    assert_eq!(assert_consistent(&wd, "out", false), Some(200_000));
}

#[test]
fn sigkill_during_append_adds_all_files_or_none() {
    let wd = Workdir::new();
    wd.write("old.csv", big_input(1_000));
    wd.write("new.csv", big_input(200_000));
    wd.ingest(&["old.csv", "--to", "out", "--files", "2"]);
    let args = [
        "ingest", "new.csv", "--to", "out", "--files", "3", "--mode", "append", "-q",
    ];
    let mut appended = 0u64;
    for ms in [150u64, 600, 1_200, 2_000] {
        let finished = kill_at(&wd, &args, Duration::from_millis(ms));
        let rows = assert_consistent(&wd, "out", false).expect("output");
        // Every completed append adds exactly 200k rows; a killed one adds nothing.
        assert_eq!((rows - 1_000) % 200_000, 0, "a partial append: {rows} rows");
        if finished {
            appended += 1;
        }
        assert!(rows >= 1_000 + appended * 200_000);
    }
    let left = wd.staging_leftovers();
    assert!(
        left.len() <= 1,
        "at most the last killed job's folder: {left:?}"
    );
    wd.ok(&args);
    let rows = assert_consistent(&wd, "out", false).expect("output");
    assert_eq!((rows - 1_000) % 200_000, 0);
    assert_eq!(wd.staging_leftovers(), Vec::<String>::new());
}
