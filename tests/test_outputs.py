"""Where commands may write (gymchurn.outputs): only new or empty paths and their own previous
outputs are replaced; nothing else is touched, symbolic links included; ordinary permissions."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from gymchurn.config import PROJECT_ROOT
from gymchurn.data import write_table
from gymchurn.errors import GymchurnError
from gymchurn.outputs import (
    REPORT_MARKER,
    check_file,
    check_report_folder,
    is_scores_file,
    new_beside,
    write_text,
)
from gymchurn.plots import plt
from gymchurn.reporting.blocks import Figure, Section, Text
from gymchurn.reporting.render import replace_folder, write_report


def snapshot(folder):
    """Every path under `folder` with its bytes (links as their target): equal = untouched."""
    return {str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else
            (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def store_folder(tmp_path):
    """A folder that is not a report: an MLflow store."""
    folder = tmp_path / "mlruns"
    (folder / "artifacts" / "1").mkdir(parents=True)
    (folder / "mlflow.db").write_bytes(b"SQLite format 3\0")
    (folder / "optuna.db").write_bytes(b"SQLite format 3\0")
    (folder / "artifacts" / "1" / "model.skops").write_bytes(b"weights")
    return folder


def new_report(tmp_path, text="fresh"):
    """A staging folder written by write_report (marker, report.html, report.md, figures/)."""
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    sections = [Section("s", "Section", [Text(text), Figure("line", "a line", fig)])]
    sources = {"n_customers": 3, "data_digest": "0" * 64, "classifier": "c v1",
               "segmentation": "s v1"}
    staging = new_beside(tmp_path / "out", "new", folder=True)
    write_report(sections, sources, staging)
    return staging


def pre_marker_report(folder):
    """A report as written before the marker existed (experiments/retention-strategy/)."""
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "old_figure.png").write_bytes(b"\x89PNG old")
    (folder / "report.html").write_text("<html>old</html>")
    (folder / "report.md").write_text("# old")
    return folder


# ---------------------------------------------------------------- the report folder


def test_the_committed_report_folder_is_a_previous_report():
    folder = PROJECT_ROOT / "experiments" / "retention-strategy"
    assert check_report_folder(folder) == folder


def test_a_store_folder_is_refused_and_left_untouched(tmp_path, store_folder):
    before = snapshot(store_folder)
    with pytest.raises(GymchurnError, match=r"is a folder that is not a previous report .*: it "
                                            r"holds artifacts, mlflow.db, optuna.db"):
        check_report_folder(store_folder)
    staging = new_report(tmp_path)
    # The last step checks again: even a caller that skipped the first check deletes nothing.
    with pytest.raises(GymchurnError, match="not a previous report"):
        replace_folder(staging, store_folder)
    assert snapshot(store_folder) == before
    assert (staging / "report.html").exists()  # the new report was not moved either


@pytest.mark.parametrize("extra", ["notes.txt", "figures/data.csv", "figures/sub/x.png"])
def test_a_report_folder_holding_anything_else_is_refused(tmp_path, extra):
    folder = pre_marker_report(tmp_path / "out")
    (folder / extra).parent.mkdir(parents=True, exist_ok=True)
    (folder / extra).write_text("mine")
    before = snapshot(folder)
    with pytest.raises(GymchurnError, match="not a previous report"):
        replace_folder(new_report(tmp_path), folder)
    assert snapshot(folder) == before


def test_a_marked_report_folder_holding_anything_else_is_refused(tmp_path):
    folder = tmp_path / "out"
    replace_folder(new_report(tmp_path), folder)
    (folder / "mlflow.db").write_bytes(b"SQLite format 3\0")
    with pytest.raises(GymchurnError, match="it holds .gymchurn-report, figures, mlflow.db"):
        check_report_folder(folder)


@pytest.mark.parametrize("layout", ["marked", "pre-marker", "empty"])
def test_a_previous_report_or_an_empty_folder_is_replaced(tmp_path, layout):
    folder = tmp_path / "out"
    if layout == "marked":
        replace_folder(new_report(tmp_path, "first"), folder)
        assert (folder / REPORT_MARKER).is_file()
    elif layout == "pre-marker":
        pre_marker_report(folder)
    else:
        folder.mkdir()
    assert check_report_folder(folder) == folder
    replace_folder(new_report(tmp_path, "second"), folder)
    assert "second" in (folder / "report.md").read_text()
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["line.png"]
    assert (folder / REPORT_MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left


def test_a_symbolic_link_is_refused_and_what_it_points_at_kept(tmp_path, store_folder):
    link = tmp_path / "out"
    link.symlink_to(store_folder, target_is_directory=True)
    before = snapshot(store_folder)
    with pytest.raises(GymchurnError, match="is a symbolic link"):
        replace_folder(new_report(tmp_path), link)
    assert link.is_symlink() and snapshot(store_folder) == before

    # A report whose figures/ is a link elsewhere is not one the report wrote.
    folder = pre_marker_report(tmp_path / "report")
    shutil.rmtree(folder / "figures")
    (folder / "figures").symlink_to(store_folder, target_is_directory=True)
    with pytest.raises(GymchurnError, match="not a previous report"):
        replace_folder(new_report(tmp_path), folder)
    assert snapshot(store_folder) == before


def test_a_file_or_a_path_under_a_file_is_refused_as_the_report_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GymchurnError, match="is an existing file, not a folder"):
        check_report_folder(tmp_path / "notes.txt")
    with pytest.raises(GymchurnError, match="notes.txt is a file, not a folder"):
        check_report_folder(tmp_path / "notes.txt" / "report")
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- files


def scores_table():
    return pd.DataFrame({"customer_id": ["007"], "churn_probability": [0.5], "churn_flag": [1],
                         "risk_band": ["high"]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_previous_scores_file_is_recognised_by_its_columns(tmp_path, suffix):
    path = tmp_path / f"scores{suffix}"
    write_table(scores_table(), path)
    assert is_scores_file(path)
    with_reasons = scores_table().assign(reason_1=["Age = 20 (+0.10)"], reason_2=[None],
                                         reason_3=[None])
    write_table(with_reasons, path)
    assert is_scores_file(path)
    # A column after the scores (someone's notes) makes it someone else's file.
    write_table(with_reasons.assign(called=["yes"]), path)
    assert not is_scores_file(path)
    path.write_bytes(b"\x00\x01not a table")
    assert not is_scores_file(path)


def test_a_foreign_file_is_refused_an_empty_one_accepted(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("id,name\n1,ann\n")
    with pytest.raises(GymchurnError, match="already exists and is not a scores file"):
        check_file(path, "output", is_scores_file, "a scores file")
    assert path.read_text() == "id,name\n1,ann\n"
    path.write_text("")
    assert check_file(path, "output", is_scores_file, "a scores file") == path
    with pytest.raises(GymchurnError, match="is an existing folder, not a file"):
        check_file(tmp_path, "output", is_scores_file, "a scores file")
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    with pytest.raises(GymchurnError, match="is a symbolic link"):
        check_file(link, "output", is_scores_file, "a scores file")


@pytest.fixture
def umask_027():
    """A stricter umask than the usual 022, so 'ordinary' and 'fixed' permissions differ."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_written_files_and_folders_have_ordinary_permissions(tmp_path, umask_027):
    for suffix in (".csv", ".parquet"):
        write_table(scores_table(), tmp_path / f"scores{suffix}")
        assert (tmp_path / f"scores{suffix}").stat().st_mode & 0o777 == 0o666 & ~umask_027
    write_text(tmp_path / "bench.md", "# x\n")
    assert (tmp_path / "bench.md").stat().st_mode & 0o777 == 0o640
    folder = tmp_path / "out"
    replace_folder(new_report(tmp_path), folder)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask_027
    assert (folder / "figures").stat().st_mode & 0o777 == 0o750
    for path in [folder / "report.html", folder / "report.md", folder / REPORT_MARKER,
                 *(folder / "figures").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o640, path
