"""psycopg's own test suite, directly against PostgreSQL and through pgtenant.

Runs the vendored suite (tests/drivers/psycopg-3.2.13-tests.tar.gz, psycopg
3.2.13's tests, LGPL-3.0) once against PostgreSQL as pgtenant's session role
and once through pgtenant per pool mode, all at the same time, and prints
every test that passes directly but not through pgtenant. Each one must be a
refusal by design listed in psycopg_refusals.txt (with its reason, also in
the README), or pass through pgtenant when run again (a timing test that
fails now and then, directly too); any other is a bug, and the exit status is 1.

usage: psycopg_suite.py SUITE_DIR subset|full|SELECTION[,SELECTION...] DIRECT_DSN MODE=DSN [MODE=DSN ...]
"""

import concurrent.futures
import fnmatch
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))

# What .ci/run runs: connection, cursors, COPY, prepared statements,
# pipelines, transactions, notifications, errors and common types, without
# the tests psycopg marks slow, timing (they measure sleeps) or flakey.
SUBSET = [
    "tests/test_connection.py",
    "tests/test_cursor.py",
    "tests/test_copy.py",
    "tests/test_prepared.py",
    "tests/test_pipeline.py",
    "tests/test_transaction.py",
    "tests/test_notify.py",
    "tests/test_errors.py",
    "tests/types/test_string.py",
    "tests/types/test_numeric.py",
    "tests/types/test_datetime.py",
]
SUBSET_FILTER = ["-m", "not slow and not timing and not flakey", "-k", "not test_leak"]
FULL_IGNORES = [
    "--ignore=tests/pool",
    "--ignore=tests/crdb",
    "--ignore=tests/test_typing.py",
    "--ignore=tests/test_gevent.py",
    "--ignore=tests/types/test_numpy.py",
    "--ignore=tests/types/test_shapely.py",
    # They can crash the interpreter (VENDORED.txt), directly as well.
    "--ignore=tests/test_concurrency.py",
    "--ignore=tests/test_concurrency_async.py",
]


def run(suite_dir, scope, label, dsn):
    if scope == "subset":
        selection = SUBSET + SUBSET_FILTER
    elif scope == "full":
        selection = ["tests"] + FULL_IGNORES
    else:
        # A comma-separated list of pytest selections (files, ids), to look again at a few.
        selection = scope.split(",")
    return run_selection(suite_dir, selection, label, dsn)


def run_selection(suite_dir, selection, label, dsn):
    report = os.path.join(suite_dir, f"report-{label}.xml")
    command = [sys.executable, "-m", "pytest", *selection, "--test-dsn", dsn, "--timeout=60", "-q",
               "-p", "no:randomly", "-o", f"cache_dir={suite_dir}/.cache-{label}", f"--junitxml={report}"]
    # The log is a file so that a long full run can be followed while it goes.
    log_path = os.path.join(suite_dir, f"log-{label}.txt")
    with open(log_path, "w") as log:
        subprocess.run(command, cwd=suite_dir, stdout=log, stderr=subprocess.STDOUT)
    with open(log_path) as log:
        output = log.read()
    summary = output.strip().splitlines()[-1:] or ["(no output)"]
    if not os.path.exists(report):
        sys.exit(f"{label}: pytest wrote no report:\n{output[-3000:]}")
    return label, summary[0], report


def outcomes(report):
    result = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        name = f"{path}::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None:
            result[name] = ("skipped", "")
        elif problem is not None:
            result[name] = ("failed", " ".join((problem.get("message") or "").split())[:300])
        else:
            result[name] = ("passed", "")
    return result


def second_chance(suite_dir, label, direct_dsn, dsn, names):
    """Runs `names` again, directly and through pgtenant, one after the other."""
    try:
        _, _, direct_report = run_selection(suite_dir, names, f"{label}-again-direct", direct_dsn)
        _, _, through_report = run_selection(suite_dir, names, f"{label}-again", dsn)
    except SystemExit as e:
        # No report (an id pytest cannot find): no second chance; they count as differences.
        print(f"  {label:11} no second chance: {e}")
        return {}
    direct, through = outcomes(direct_report), outcomes(through_report)
    return {n: (direct.get(n, ("missing", ""))[0], through.get(n, ("missing", ""))[0]) for n in names}


def refusals():
    rules = []
    with open(os.path.join(HERE, "psycopg_refusals.txt")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            modes, pattern, failure, reason = (part.strip() for part in line.split("|", 3))
            rules.append((set(modes.split(",")), pattern, failure, reason))
    return rules


def main():
    suite_dir, scope, direct_dsn, *targets = sys.argv[1:]
    runs = [("direct", direct_dsn)] + [tuple(t.split("=", 1)) for t in targets]
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        results = list(pool.map(lambda r: run(suite_dir, scope, *r), runs))
    for label, summary, _ in results:
        print(f"{label:12} {summary}")
    direct = outcomes(results[0][2])
    rules = refusals()
    unexpected = 0
    for (label, _, report), (_, dsn) in zip(results[1:], runs[1:]):
        through = outcomes(report)
        differs = {}
        for name, (status, _) in sorted(direct.items()):
            if status != "passed" or through.get(name, ("missing", ""))[0] == "passed":
                continue
            why = through.get(name, ("missing", ""))[1]
            reason = next(
                (r for modes, p, f, r in rules if label in modes and fnmatch.fnmatch(name, p) and f in why), None
            )
            if reason:
                print(f"  {label:11} refused by design  {name}  ({reason})")
            else:
                differs[name] = why
        # A second chance, alone and on a quieter machine: timing assertions of a
        # few milliseconds fail now and then, directly as well as through pgtenant.
        again = second_chance(suite_dir, label, direct_dsn, dsn, sorted(differs)) if differs else {}
        for name, why in sorted(differs.items()):
            direct_again, through_again = again.get(name, ("missing", "missing"))
            if direct_again == "passed" and through_again != "passed":
                unexpected += 1
                print(f"  {label:11} DIFFERS            {name}  {why}")
            else:
                print(f"  {label:11} flaky              {name}  (again: directly {direct_again}, through {through_again})")
    print(f"{unexpected} test(s) pass directly but not through pgtenant, outside the refusals by design")
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
