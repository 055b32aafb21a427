"""The benchmark (`make bench`) runs end to end at tiny sizes and writes every section's figures."""

from __future__ import annotations

import re
import sys

import pytest

from gymchurn.config import PROJECT_ROOT
from gymchurn.errors import GymchurnError

BENCH = PROJECT_ROOT / "benchmarks" / "bench.py"  # a script outside the package: run as one

SECTIONS = ["## Machine", "## Targets", "## 1. Tracking overhead", "## 2. Tuning throughput",
            "## 3. Training time and memory", "## 4. Batch scoring", "## 5. Start-up",
            "## 6. Monitoring a month", "## Conclusions"]
NUMBER = r"\d+(?:[.,]\d+)*"


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/bench.py imported as when it runs as a script: its folder first on sys.path
    (it imports benchmarks/imports.py from there)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    import bench

    return bench


@pytest.mark.slow
def test_quick_bench_writes_every_section_with_figures(bench, tmp_path, monkeypatch):
    # In this process: a fresh interpreter would add seconds of imports and nothing the test
    # checks (the sections that time fresh processes start their own).
    output = tmp_path / "benchmarks.md"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--quick", "--output", str(output)])
    monkeypatch.chdir(PROJECT_ROOT)
    assert bench.main() == output

    text = output.read_text()
    for heading in SECTIONS:
        assert heading in text, heading
    assert re.search(rf"{NUMBER} cores", text) and re.search(rf"{NUMBER} GB RAM", text)
    assert re.search(rf"at the start {NUMBER} / {NUMBER} / {NUMBER}", text)
    assert "python benchmarks/bench.py --quick" in text  # the command that reproduces it
    targets = section(text, "## Targets")
    assert len(re.findall(r"\| \*\*(?:met|missed|unclear)\*\*", targets)) == 7
    monitoring = section(text, "## 6. Monitoring a month")
    assert re.search(rf"\| 2,000 \| {NUMBER} s \| {NUMBER} s \| {NUMBER} s \| {NUMBER} GB \|", monitoring)
    overhead = section(text, "## 1. Tracking overhead")
    assert re.search(rf"\| with MLflow \| {NUMBER} s \| {NUMBER} s \| {NUMBER} \|", overhead)
    assert re.search(rf"\| without MLflow \(2\) \| {NUMBER} s \|", overhead)
    assert re.search(rf"\| \*\*all\*\* \| \*\*{NUMBER}\*\* \| \*\*{NUMBER}%\*\* \|", overhead)
    assert "same trials (same parameters, states and scores): **yes**" in overhead
    workers = section(text, "## 2. Tuning throughput")
    assert re.search(rf"\| 2 \| {NUMBER} \({NUMBER}\) \| {NUMBER} s \| {NUMBER} s \| {NUMBER} \| {NUMBER} \| "
                     rf"{NUMBER} \| {NUMBER}× \|", workers)
    training = section(text, "## 3. Training time and memory")
    row = (rf"\| {NUMBER} \| {NUMBER} \| {NUMBER} s \| {NUMBER} s \| {NUMBER} \| {NUMBER} GB \| "
           rf"{NUMBER} GB \| {NUMBER} \|")
    assert len(re.findall(row, training)) == 3  # two sizes, then the largest with n_jobs = cores
    assert re.search(rf"wall time -?{NUMBER} fitted over all sizes", training)
    scoring = section(text, "## 4. Batch scoring")
    assert re.search(rf"\| 2,000 \| {NUMBER} s \| {NUMBER} \|", scoring)
    assert "## 5. Start-up" in text  # --quick measures no command: see test_import_times below
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_import_times_compare_our_modules_with_the_libraries_alone():
    """benchmarks/imports.py on a cheap stand-in command: our config module, which needs Hydra."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        import imports
    finally:
        sys.path.remove(str(BENCH.parent))
    measured = imports.measure(runs=1, say=lambda line: None,
                               commands={"config": (["gymchurn.config"], [])})
    row = measured["commands"]["config"]
    assert "hydra" in row["needed"] and "omegaconf" in row["needed"]
    assert "mlflow" not in row["needed"]  # config needs no tracking library
    assert 0 < row["libraries"]["median"] and 0 < row["run"]["median"]
    table = "\n".join(imports.markdown(measured, 1))
    assert re.search(rf"\| config \| {NUMBER} s \| {NUMBER} s \| {NUMBER} s \| {NUMBER}× \| .*hydra", table)


def test_the_committed_record_may_be_replaced_by_the_next_run(bench):
    record = PROJECT_ROOT / "experiments" / "benchmarks.md"
    assert bench.check_output(record) == record


def test_a_foreign_output_is_refused_before_any_work(bench, tmp_path, monkeypatch, capsys):
    output = tmp_path / "README.md"
    output.write_text("# My notes\n\nnot a benchmark record\n")

    def first_work():
        raise AssertionError("the benchmark started before --output was checked")

    monkeypatch.setattr(bench, "machine", first_work)
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--output", str(output)])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the --output {output} already exists and is not a benchmark "
                          "record written by benchmarks/bench.py"), err
    assert output.read_text() == "# My notes\n\nnot a benchmark record\n"
    with pytest.raises(GymchurnError, match="is an existing folder, not a file"):
        bench.check_output(tmp_path)


def test_an_unknown_import_command_is_refused_before_any_work(
        bench, tmp_path, monkeypatch, capsys):
    import imports

    assert "monitor" in imports.COMMANDS
    output = tmp_path / "benchmarks.md"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--import-commands", "predict,nope",
                                      "--output", str(output)])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 2 and not output.exists()
    assert f"nope unknown; benchmarks/imports.py has {', '.join(imports.COMMANDS)}" in capsys.readouterr().err
