"""Where a command may write: a new path, an empty one, or a previous output of the same command.

Every command that writes files (predict's scores, the report's folder, the benchmark's
Markdown) checks its output here BEFORE any work, and again just before it replaces anything:
an existing file or folder is replaced only when it is recognisably what that command wrote
before, so a mistyped path (`output_dir=mlruns`, `output=customers.csv`) is refused instead of
deleting someone's data. A symbolic link is never replaced (nor followed to delete what it
points at).

New files and folders get ordinary permissions (0666 / 0777 less the process umask), unlike
`tempfile.mkstemp`/`mkdtemp`, which make them private to their owner.

How each output is recognised:
- the report folder: the marker file `REPORT_MARKER` that the report writes into it, or, for
  reports written before the marker existed (experiments/retention-strategy/ as committed),
  exactly report.html + report.md + figures/ of PNGs; in both cases the folder may hold nothing
  but those (anything else in it would be deleted with it);
- a scores file: its columns end with the score columns `make predict` writes, in its order
  (the CSV header, the Parquet schema), today's or the layout before priority_rank and
  suggested_action were added;
- the benchmark record: its first line (benchmarks/bench.py passes it).
"""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from gymchurn.errors import GymchurnError

REPORT_MARKER = ".gymchurn-report"
REPORT_MARKER_TEXT = (
    "This folder was written by `make report` (python -m gymchurn.report). The next report\n"
    "replaces the whole folder: keep nothing else in it.\n"
)
REPORT_FILES = {"report.html", "report.md"}
REPORT_EXTRA_FILES = {"call_list.csv"}  # written since the report has a marker
MONITORING_MARKER = ".gymchurn-monitoring"
MONITORING_MARKER_TEXT = (
    "This folder was written by `make monitor` (python -m gymchurn.monitor). The next check of\n"
    "the same month replaces the whole folder: keep nothing else in it.\n"
)
MONITORING_EXTRA_FILES = {"feature_drift.csv", "call_list.csv"}
FOUND_SHOWN = 5  # foreign entries named in a refusal


# ---------------------------------------------------------------- checking before any work


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_parent(path: Path, what: str) -> None:
    """The folder the output goes into (or its nearest existing ancestor) must be a writable folder."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise GymchurnError(f"the {what} {path} cannot be written: {parent} is a file, not a "
                            "folder. Choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GymchurnError(f"the {what} {path} cannot be written: the folder {parent} is not "
                            "writable. Choose another path.")


def check_file(path: Path, what: str, is_ours: Callable[[Path], bool], ours: str) -> Path:
    """Refuse `path` as an output file unless it is new, empty, or `is_ours` (a previous output
    of this command, described by `ours`). Call it before any work and again before writing;
    write to the path it returns (`..` resolved, so the checked path is the written one)."""
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        raise GymchurnError(f"the {what} {path} is a symbolic link; nothing was changed. Give the "
                            "path of a new file (or of a previous output itself).")
    if path.is_dir():
        raise GymchurnError(f"the {what} {path} is an existing folder, not a file; give the "
                            "path of a file (in that folder or elsewhere).")
    if path.exists():
        if not path.is_file():
            raise GymchurnError(f"the {what} {path} exists and is not a regular file; choose "
                                "another path.")
        if path.stat().st_size and not is_ours(path):
            raise GymchurnError(
                f"the {what} {path} already exists and is not {ours}, so it was left as it is. "
                "Give a new file name, or move that file away first."
            )
    _check_parent(path, what)
    return path


def check_folder(path: Path, what: str, is_ours: Callable[[Path], bool], ours: str) -> Path:
    """Refuse `path` as an output folder that will be replaced as a whole, unless it is new,
    empty, or `is_ours`. Call it before any work and again before replacing; use the path it
    returns (`..` resolved: `report/figures/..` is the report folder, not a name in figures/)."""
    path = Path(os.path.abspath(path))
    if path.is_symlink():
        raise GymchurnError(f"the {what} {path} is a symbolic link; nothing was changed. Give the "
                            "path of a new folder (or of a previous output itself).")
    if path.exists() and not path.is_dir():
        raise GymchurnError(f"the {what} {path} is an existing file, not a folder; give a folder "
                            "path that does not exist yet.")
    if path.is_dir():
        try:
            found = sorted(p.name for p in path.iterdir())
            ours_already = not found or is_ours(path)
        except OSError as err:
            raise GymchurnError(f"the {what} {path} cannot be read ({err.strerror}); give a new "
                                "or empty folder.") from err
        if not ours_already:
            shown = ", ".join(found[:FOUND_SHOWN]) + (
                f" and {len(found) - FOUND_SHOWN} more" if len(found) > FOUND_SHOWN else "")
            raise GymchurnError(
                f"the {what} {path} is a folder that is not {ours}: it holds {shown}. It would "
                "be replaced as a whole, so it was left as it is; give a new or empty folder."
            )
    _check_parent(path, what)
    return path


# ---------------------------------------------------------------- recognising previous outputs


def is_report_folder(folder: Path, marker: str = REPORT_MARKER, marker_text: str = REPORT_MARKER_TEXT,
                     extra_files: frozenset | set = REPORT_EXTRA_FILES) -> bool:
    """A previous `make report` output: only the files the report writes, plus its marker (or,
    before the marker existed, exactly report.html + report.md + figures/). With another
    `marker` (and its text and extra files): a previous output of that command, marker required."""
    with os.scandir(folder) as scan:
        entries = {e.name: e for e in scan}
    if set(entries) - REPORT_FILES - set(extra_files) - {"figures", marker}:
        return False
    files = [e for name, e in entries.items() if name != "figures"]
    if not all(e.is_file(follow_symlinks=False) for e in files):
        return False
    if "figures" in entries:
        if not entries["figures"].is_dir(follow_symlinks=False):
            return False
        with os.scandir(entries["figures"].path) as scan:
            if not all(e.name.endswith(".png") and e.is_file(follow_symlinks=False) for e in scan):
                return False
    if marker in entries:
        with open(entries[marker].path, encoding="utf-8", errors="replace") as f:
            return f.read(len(marker_text)) == marker_text
    # an old report had no other file
    return marker == REPORT_MARKER and set(entries) == REPORT_FILES | {"figures"}


def is_monitoring_folder(folder: Path) -> bool:
    """A previous `make monitor` output (its marker, report.html, report.md, figures/, the CSV)."""
    return is_report_folder(folder, MONITORING_MARKER, MONITORING_MARKER_TEXT, MONITORING_EXTRA_FILES)


def check_report_folder(target: Path) -> Path:
    """`target` may be replaced by a report: it is new, empty or a previous report (never a
    folder of anything else, e.g. output_dir=mlruns)."""
    return check_folder(target, "output_dir", is_report_folder, "a previous report (only "
                        f"report.html, report.md, figures/ and the {REPORT_MARKER} marker)")


def check_monitoring_folder(target: Path) -> Path:
    """`target` may be replaced by a monitoring report: new, empty or a previous one."""
    return check_folder(target, "output_dir", is_monitoring_folder, "a previous monitoring "
                        "report (only report.html, report.md, feature_drift.csv, "
                        "call_list.csv, figures/ and "
                        f"the {MONITORING_MARKER} marker)")


def score_column_tails() -> list[list[str]]:
    """The column lists a scores table ends with (gymchurn.churn.score's order): rank,
    probability, flag, band, the segment pair and the reasons when they were asked for, the
    suggested action; and the layout before the rank and the action existed (probability,
    flag, band, segment pair, reasons), so an earlier output can still be replaced."""
    from gymchurn.churn.reasons import REASON_COLUMNS
    from gymchurn.churn.score import ACTION_COLUMN, BASE_COLUMNS, RANK_COLUMN, SEGMENT_COLUMNS

    optional = [[], SEGMENT_COLUMNS, REASON_COLUMNS, SEGMENT_COLUMNS + REASON_COLUMNS]
    current = [[RANK_COLUMN, *BASE_COLUMNS, *middle, ACTION_COLUMN] for middle in optional]
    previous = [[*BASE_COLUMNS, *middle] for middle in optional]
    return current + previous


def column_names(path: Path) -> list[str]:
    """The column names of a CSV (its first line) or Parquet (its schema) file; [] if unreadable."""
    if Path(path).suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                return next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return []
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return []


def is_scores_file(path: Path) -> bool:
    """A previous `make predict` output: its columns end with the score columns, in order."""
    names = column_names(path)
    return any(names[-len(tail):] == tail for tail in score_column_tails() if len(names) >= len(tail))


def first_line_is(line: str) -> Callable[[Path], bool]:
    """A recogniser: the file's first line is exactly `line`."""

    def recognise(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n") == line
        except (OSError, UnicodeDecodeError):
            return False

    return recognise


# ---------------------------------------------------------------- writing


def new_beside(path: Path, tag: str, suffix: str = "", folder: bool = False) -> Path:
    """Create a new hidden file (or folder) `.<name>.<tag>-<random><suffix>` beside `path`, with
    the permissions of any new file (0666, folders 0777, less the umask: the kernel applies it)."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}{suffix}")
        try:
            if folder:
                os.mkdir(candidate, 0o777)
            else:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_file(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temp)` to a new file beside `path`, then rename it over `path`: a reader sees the
    old file or the new one, and a failed write leaves nothing."""
    tmp = new_beside(path, "new", suffix=".part")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
