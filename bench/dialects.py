"""Real-world odd CSV files: does each tool read the rows and columns the file really holds?

The corpus is the "survey sample" of the Pollock benchmark (Vitagliano et al., VLDB 2023,
github.com/HPI-Information-Systems/Pollock, folder `survey_sample`): 99 CSV files from open
data portals (`csv/`), each with its hand-made clean version (`clean/`: the data rows, most
under one header line) and its annotated dialect (`parameters/`: delimiter, quote, header lines,
preamble lines, footnote lines, column names). The truth for a file is the clean version's
row count (less its header line, where it has one) and width.

For every file, sluice (`sluice schema --json` for its columns, `sluice ingest` to CSV with
`--report-json` for its rows) and DuckDB (`read_csv(file)` with its sniffer) are asked
for rows and columns. Printed: per tool, how many files it read, how many with the true
rows, the true columns and both; and how often sluice's row count agrees with DuckDB's
(the figure issue 14 started from: 45%). `--no-detect` runs sluice as it was before per-file
dialect detection (comma, `"`, a header line) for the before/after.

    python3 bench/dialects.py --sluice target/release/sluice --corpus DIR [--no-detect] [-v]

DIR is the `survey_sample` folder (get it with `git clone` of the repository above; its
files are not bundled here).
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile

import duckdb


def truth(corpus, name):
    """(rows, columns) of a file by its clean version and its annotation."""
    params = json.load(open(os.path.join(corpus, "parameters", name + "_parameters.json")))
    names = [c.strip() for c in params["column_names"]]
    with open(os.path.join(corpus, "clean", name), newline="", encoding="utf-8",
              errors="replace") as f:
        lines = list(csv.reader(f))
    # Most clean versions start with the column names (col_N where the file has none); a few
    # hold only the data. The annotated names are not always right about the count: the clean
    # version's width is the truth.
    first = [c.strip() for c in lines[0]] if lines else []
    header = bool(lines) and (int(params["header_lines"]) > 0 or first == names
                              or all(re.fullmatch(r"col_\d+", c) for c in first))
    return len(lines) - header, len(first)


def run_sluice(binary, path, work, no_detect):
    """(rows, columns, note) as sluice reads `path`; rows None when the read failed."""
    extra = ["--no-detect"] if no_detect else []
    schema = subprocess.run([binary, "schema", path, "--json", *extra],
                            capture_output=True, text=True, timeout=120)
    if schema.returncode != 0:
        return None, None, schema.stderr.strip().splitlines()[-1:]
    columns = len(json.loads(schema.stdout)["columns"])
    out = os.path.join(work, "out")
    report = os.path.join(work, "report.json")
    subprocess.run(["rm", "-rf", out])
    ingest = subprocess.run([binary, "ingest", path, "--to", out, "--format-out", "csv",
                             "--report-json", report, "-q", *extra],
                            capture_output=True, text=True, timeout=300)
    if ingest.returncode != 0:
        return None, columns, ingest.stderr.strip().splitlines()[-1:]
    r = json.load(open(report))
    note = f"rejected {r['rows_rejected']}" if r["rows_rejected"] else ""
    return r["rows_out"], columns, note


def run_duckdb(path):
    """(rows, columns, note) as DuckDB's sniffer reads `path`."""
    con = duckdb.connect()
    try:
        rel = con.sql("SELECT * FROM read_csv(?)", params=[path])
        columns = len(rel.columns)
        rows = con.sql("SELECT count(*) FROM read_csv(?)", params=[path]).fetchall()[0][0]
        return rows, columns, ""
    except duckdb.Error as e:
        return None, None, str(e).splitlines()[0][:120]
    finally:
        con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--corpus", required=True, help="the survey_sample folder")
    ap.add_argument("--no-detect", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true", help="a line per file")
    ap.add_argument("--json", help="write per-file results here")
    a = ap.parse_args()
    names = sorted(n for n in os.listdir(os.path.join(a.corpus, "csv"))
                   if os.path.exists(os.path.join(a.corpus, "clean", n)))
    work = tempfile.mkdtemp(prefix="sluice-dialects-")
    results = []
    for name in names:
        path = os.path.join(a.corpus, "csv", name)
        rows, cols = truth(a.corpus, name)
        s = run_sluice(a.sluice, path, work, a.no_detect)
        d = run_duckdb(path)
        results.append({"file": name, "truth": [rows, cols], "sluice": list(s), "duckdb": list(d)})
        if a.verbose:
            mark = lambda t: "ok " if (t[0], t[1]) == (rows, cols) else "-- "
            print(f"{mark(s)}{mark(d)}{name[:60]:60} truth {rows}x{cols}  "
                  f"sluice {s[0]}x{s[1]} {s[2]}  duckdb {d[0]}x{d[1]} {d[2]}")
    subprocess.run(["rm", "-rf", work])

    def tally(tool):
        read = [r for r in results if r[tool][0] is not None]
        rows = sum(r[tool][0] == r["truth"][0] for r in read)
        cols = sum(r[tool][1] == r["truth"][1] for r in read)
        both = sum(r[tool][:2] == r["truth"] for r in read)
        return len(read), rows, cols, both

    n = len(results)
    label = "sluice --no-detect" if a.no_detect else "sluice"
    print(f"{n} files of {a.corpus}")
    print(f"{'':20}{'read':>8}{'true rows':>12}{'true cols':>12}{'both':>8}")
    for tool, name in (("sluice", label), ("duckdb", f"duckdb {duckdb.__version__}")):
        read, rows, cols, both = tally(tool)
        print(f"{name:20}{read:>8}{rows:>12}{cols:>12}{both:>8}   ({100 * both / n:.0f}% exact)")
    both_read = [r for r in results if r["sluice"][0] is not None and r["duckdb"][0] is not None]
    agree = sum(r["sluice"][0] == r["duckdb"][0] for r in both_read)
    print(f"row counts agree with DuckDB on {agree} of the {len(both_read)} files both read "
          f"({100 * agree / max(1, len(both_read)):.0f}%)")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
