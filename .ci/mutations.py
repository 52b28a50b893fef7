"""Mutation testing: which deliberate bugs does the test suite catch?

Each mutation of .ci/mutation_list.py is one small, realistic bug (a protocol constant, a
metric, a resume step, an extraction check): its file, the exact text it replaces (which must
occur once), the text put in its place, the tests that should catch it, and whether the fast
tier (-m "not slow") should catch it. For each one the script writes the bug into the file,
runs pytest, and puts the file back (always, also on Ctrl-C or SIGTERM; checked with
`git diff --quiet`). pytest's
exit code says what happened: 1 = caught (a test failed), 0 = missed, anything else = the
suite crashed on it (e.g. a collection error, 2), counted apart.

Run from the repository root with the project's Python (stdlib only):

    .venv/bin/python .ci/mutations.py                        # every mutation, its listed tests
    .venv/bin/python .ci/mutations.py --selection fast       # the fast-flagged ones, fast tier
    .venv/bin/python .ci/mutations.py --only blur-sigma-1 --only clamp-1e7
    .venv/bin/python .ci/mutations.py --only X --selection all   # the whole suite (-x)
    .venv/bin/python .ci/mutations.py --only X --tests tests/test_pinned.py   # any tests
    .venv/bin/python .ci/mutations.py --out before.md --json before.json
    .venv/bin/python .ci/mutations.py --json after.json --compare before.json
    .venv/bin/python .ci/mutations.py --list | --check

Selections: 'listed' runs the mutation's own tests; 'fast' runs `-m "not slow" tests`,
'all' runs `tests`, 'related' runs the listed tests and every test file that imports the
mutated module by name. fast, all and related name the listed test files first, so that -x
stops early on a caught mutation; which tests run is unchanged by the order. A missed
mutation under 'fast' or 'all' runs the whole tier. pytest runs under `nice` (--nice).
The script refuses to start while a file it would mutate has uncommitted changes.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = "tests"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rfE"]
CAUGHT, MISSED, CRASHED, TIMEOUT = "caught", "missed", "error", "timeout"
STALE, INVALID, STALE_SELECTION = "stale mutation", "invalid mutation", "stale selection"
SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) (.+?)(?: - (.*))?$")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_list import MUTATIONS  # noqa: E402 - the list lives beside this script



# ---------------------------------------------------------------- running one mutation

def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def dirty_files(files):
    """The files among `files` with uncommitted changes (staged, unstaged or untracked)."""
    out = git("status", "--porcelain", "--", *sorted(files))
    if out.returncode != 0:
        sys.exit(f"error: git status failed in {ROOT}: {out.stderr.strip()}")
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def test_files(mutation):
    """The listed test files, in order, without node ids and repeats."""
    return list(dict.fromkeys(t.split("::")[0] for t in mutation.tests))


def importers(module_file):
    """Test files that import the module of `module_file` by name (import x / from x import,
    from pkg import x, from pkg.x import)."""
    dotted = module_file[:-3].replace("/", ".")
    pkg, _, leaf = dotted.rpartition(".")
    patterns = [rf"^\s*import {re.escape(dotted)}\b", rf"^\s*from {re.escape(dotted)} import"]
    if pkg:
        patterns.append(rf"^\s*from {re.escape(pkg)} import .*\b{re.escape(leaf)}\b")
    found = re.compile("|".join(patterns), re.M)
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / TESTS).rglob("test_*.py")
                  if found.search(p.read_text(encoding="utf-8", errors="replace")))


def all_test_files():
    """Every file pytest collects under tests/ (its default names), sorted as pytest does."""
    found = {*(ROOT / TESTS).rglob("test_*.py"), *(ROOT / TESTS).rglob("*_test.py")}
    return sorted(str(p.relative_to(ROOT)) for p in found)


def pytest_command(mutation, selection, custom=()):
    """The listed tests; or a tier with the listed files first. Files are named one by one:
    pytest keeps the order of file arguments, but sorts a folder's files among its own."""
    if custom:
        return PYTEST + list(custom)
    if selection == "listed":
        return PYTEST + list(mutation.tests)
    first = test_files(mutation)
    if selection == "related":
        return PYTEST + list(dict.fromkeys([*first, *importers(mutation.file)]))
    ordered = list(dict.fromkeys([*first, *all_test_files()]))
    return PYTEST + (["-m", "not slow"] if selection == "fast" else []) + ordered


def first_failure(output):
    """(node id, first line of the reason) of the first FAILED/ERROR line of pytest's short
    summary (the output above it may hold a program's own 'ERROR ...' lines)."""
    lines = output.splitlines()
    marks = [i for i, line in enumerate(lines) if "short test summary info" in line]
    for line in lines[marks[-1] + 1:] if marks else lines:
        hit = SUMMARY_LINE.match(line.strip())
        if hit:
            return hit.group(2), (hit.group(3) or "").strip()
    return "", ""


def run_pytest(command, timeout, niceness, log=None):
    """(exit code or None on timeout, output). pytest runs in its own process group, killed
    whole on a timeout or Ctrl-C (tests start processes of their own)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # no .pyc of a mutated file is kept
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True,
                            preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if log:
        log.write_text(" ".join(command) + "\n\n" + output)
    return code, output


def classify(code, output):
    """(result, caught by, reason) from pytest's exit code and output."""
    test, reason = first_failure(output)
    if code is None:
        return TIMEOUT, test, "timed out"
    if code == 0:
        return MISSED, "", ""
    if code == 1:
        return CAUGHT, test, reason
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if code == 4 and any("not found" in line for line in lines):
        return STALE_SELECTION, "", next(line for line in lines if "not found" in line)
    return CRASHED, test or f"pytest exit {code}", reason or (lines[-1] if lines else "")


class Restorer:
    """Puts a mutated file back: bytes and modification time, with Ctrl-C/SIGTERM held off
    while it writes, then proves it with git diff --quiet."""

    def __init__(self, path):
        self.path = path
        self.original = path.read_bytes()
        self.stat = path.stat()

    def restore(self):
        blocked = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self.path.write_bytes(self.original)
            os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        rel = str(self.path.relative_to(ROOT))
        if git("diff", "--quiet", "--", rel).returncode != 0:
            sys.exit(f"FATAL: {rel} differs from git after restoring it; run "
                     f"`git diff -- {rel}` and `git checkout -- {rel}`")


def run_mutation(mutation, selection, timeout, niceness, log_dir, custom=()):
    """One row of results: the mutation applied, its tests run, the file put back."""
    row = {"name": mutation.name, "file": mutation.file, "fast": mutation.fast,
           "what": mutation.what, "selection": selection, "result": "", "caught_by": "",
           "reason": "", "seconds": 0.0}
    path = ROOT / mutation.file
    text = path.read_bytes().decode("utf-8")  # bytes: line endings stay as they are
    count = text.count(mutation.old)
    if count != 1:
        row.update(result=STALE, reason=f"old text found {count} times, expected once")
        return row
    mutated = text.replace(mutation.old, mutation.new)
    try:
        compile(mutated, str(path), "exec")
    except SyntaxError as e:
        row.update(result=INVALID, reason=f"mutated file does not compile: {e}")
        return row
    log = log_dir / f"{mutation.name}.{selection}.log" if log_dir else None
    started = time.perf_counter()
    restorer = Restorer(path)
    try:
        path.write_bytes(mutated.encode("utf-8"))
        code, output = run_pytest(pytest_command(mutation, selection, custom), timeout,
                                  niceness, log)
    finally:
        restorer.restore()
    result, caught_by, reason = classify(code, output)
    row.update(result=result, caught_by=caught_by, reason=reason[:160],
               seconds=round(time.perf_counter() - started, 1))
    return row


# ---------------------------------------------------------------- reports

def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(rows, args, elapsed, commit):
    counts = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    lines = [f"# Mutation testing ({args.selection} selection)", "",
             f"Commit {commit}; {len(rows)} mutation(s)"
             + "".join(f", {n} {k}" for k, n in sorted(counts.items()))
             + f"; {elapsed / 60:.1f} min in all.", "",
             "| mutation | file | fast tier expected | result | caught by | seconds |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        caught_by = row["caught_by"] + (f" ({row['reason']})" if row["result"] != CAUGHT
                                        and row["reason"] else "")
        lines.append(f"| {cell(row['name'])}: {cell(row['what'])} | {cell(row['file'])} | "
                     f"{'yes' if row['fast'] else 'no'} | {row['result']} | {cell(caught_by)} | "
                     f"{row['seconds']:.1f} |")
    missed = [row["name"] for row in rows if row["result"] != CAUGHT]
    lines += ["", "Not caught: " + (", ".join(missed) if missed else "none"), ""]
    return "\n".join(lines)


def compare(rows, before_path):
    """Mutations the earlier results caught that these do not (by name)."""
    before = {r["name"]: r for r in json.loads(Path(before_path).read_text())["rows"]}
    lost = [r["name"] for r in rows if r["name"] in before
            and before[r["name"]]["result"] == CAUGHT and r["result"] != CAUGHT]
    gained = [r["name"] for r in rows if r["name"] in before
              and before[r["name"]]["result"] != CAUGHT and r["result"] == CAUGHT]
    print(f"\ncompared with {before_path}: lost {lost or 'none'}; newly caught {gained or 'none'}")
    return lost


# ---------------------------------------------------------------- command line

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run this mutation only (repeatable)")
    parser.add_argument("--selection", choices=("listed", "fast", "all", "related"),
                        default="listed", help="which tests run against each mutation")
    parser.add_argument("--tests", nargs="+", metavar="TEST", default=[],
                        help="run these test files or node ids instead of a selection "
                             "(reported as selection 'custom')")
    parser.add_argument("--out", help="write the results as a markdown table to this file")
    parser.add_argument("--json", help="write the results as JSON to this file (for --compare)")
    parser.add_argument("--compare", metavar="JSON", help="say which mutations an earlier "
                        "--json caught that this run does not; exit 1 if any")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per pytest run (default 300; 'all' may need more)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of pytest (default 10)")
    parser.add_argument("--logs", metavar="DIR", help="keep each pytest output in DIR")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--check", action="store_true",
                        help="check that every mutation still applies (text found once, "
                             "compiles), run nothing")
    args = parser.parse_args(argv)
    if args.tests:
        args.selection = "custom"
    return args


def chosen(args):
    names = {mu.name for mu in MUTATIONS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        sys.exit(f"error: unknown mutation(s) {unknown}; --list names them")
    if args.only:
        return [mu for mu in MUTATIONS if mu.name in args.only]
    if args.selection == "fast":  # only those the fast tier should catch, unless named
        return [mu for mu in MUTATIONS if mu.fast]
    return list(MUTATIONS)


def check_only(mutations):
    bad = 0
    for mu in mutations:
        text = (ROOT / mu.file).read_bytes().decode("utf-8")
        count = text.count(mu.old)
        problem = f"old text found {count} times" if count != 1 else ""
        if not problem:
            try:
                compile(text.replace(mu.old, mu.new), mu.file, "exec")
            except SyntaxError as e:
                problem = f"does not compile: {e}"
        bad += bool(problem)
        print(f"{'STALE' if problem else 'ok   '} {mu.name:32} {mu.file} {problem}")
    return 1 if bad else 0


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(argv)
    mutations = chosen(args)
    if args.list:
        for mu in mutations:
            print(f"{mu.name:32} {'fast' if mu.fast else 'slow'}  {mu.file:22} {mu.what}")
        return 0
    if args.check:
        return check_only(mutations)
    dirty = dirty_files({mu.file for mu in mutations})
    if dirty:
        sys.exit(f"error: uncommitted changes in {', '.join(dirty)}; commit or stash them "
                 f"first (the script rewrites these files and puts back the committed text)")
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    log_dir = Path(args.logs).resolve() if args.logs else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    rows, started, interrupted = [], time.perf_counter(), False
    try:
        for i, mu in enumerate(mutations, 1):
            print(f"[{i}/{len(mutations)}] {mu.name} ({mu.file}) ...", end=" ", flush=True)
            row = run_mutation(mu, args.selection, args.timeout, args.nice, log_dir,
                               args.tests)
            rows.append(row)
            print(f"{row['result']} {row['caught_by']} {row['reason'][:80] if row['result'] != CAUGHT else ''}"
                  f" ({row['seconds']:.1f} s)", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: files restored; writing the results so far", file=sys.stderr)
    elapsed = time.perf_counter() - started
    report = markdown(rows, args, elapsed, commit)
    print("\n" + report)
    if args.out:
        Path(args.out).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"commit": commit, "selection": args.selection,
                                               "seconds": round(elapsed, 1), "rows": rows},
                                              indent=1))
    if interrupted:
        return 130
    if args.compare and compare(rows, args.compare):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `--list | head`: the reader stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
