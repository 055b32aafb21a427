"""Benchmark of batch scoring and serving: `python benchmarks/predict_bench.py` (see
experiments/predict-benchmark.md for the figures and the machine they were measured on).

In one run, on SYNTHETIC customers (gymchurn.data.make_synthetic_customers):
1. a 500-tree LightGBM pipeline (conf/model/lgbm.yaml, engineered features) is trained on
   4,000 customers and registered as @champion in a temp MLflow store;
2. the bare booster's predict time on the 1,000,000 rows' model features (the floor);
3. `python -m gymchurn.predict` end to end as a child process, reasons=none and
   reasons=flagged: wall time, CPU time and peak memory (wait4 rusage of that child);
4. exact contribution paths on a sample of flagged rows (rows/s);
5. `mlflow models serve` of the champion: latency of 100-customer requests once warm.

Everything but --report is written to a temp folder. benchmarks/bench.py (`make bench`) uses
`train_champion` for its scoring section.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from gymchurn.churn import PROBABILITY_COLUMN, fit
from gymchurn.churn.evaluate import choose_threshold
from gymchurn.churn.reasons import LightGBMContributions
from gymchurn.config import compose_config, resolve_path
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.errors import exit_on_user_error
from gymchurn.outputs import check_file
from gymchurn.pipeline import build_pipeline
from gymchurn.serving import data_schema
from gymchurn.tracking import ModelSpec, Registration, RunRecord, quiet_libraries, record, tracked_run

NAME = "gym-churn-classifier"


def train_champion(store: Path, n_estimators: int) -> tuple:
    """Fit the benchmark pipeline on 4,000 synthetic customers and register it as @champion in
    the store <store>/mlflow.db (artifacts beside it), logged as `make experiment` logs its model."""
    cfg = compose_config(overrides=["model=lgbm", "features=engineered"])
    columns = feature_columns(cfg.data)
    train, valid = make_synthetic_customers(4000, seed=3), make_synthetic_customers(4000, seed=4)
    pipeline = build_pipeline(cfg.features, cfg.model, columns, {"n_estimators": n_estimators})
    pipeline.fit(train[columns], train["Churn"])
    threshold = choose_threshold(valid["Churn"], pipeline.predict_proba(valid[columns])[:, 1])
    example = train[columns].head(5).astype("float64")
    output = pd.DataFrame({PROBABILITY_COLUMN: pipeline.predict_proba(example)[:, 1]},
                          index=example.index)
    model = ModelSpec(pipeline, fit.SERVED_MODEL, example, output,
                      {"threshold": threshold, "feature_columns": columns,
                       "data_schema": data_schema(cfg.data)})
    registration = Registration(NAME, {"model_family": "lgbm", "feature_set": "engineered",
                                       "threshold": f"{threshold:.6f}"}, "champion")
    # An experiment of its own: its artifacts live beside the temp store, not in ./mlruns.
    tracking = {"uri": f"sqlite:///{store}/mlflow.db", "experiment": "gym-churn-bench"}
    with tracked_run(tracking, "bench-champion", {"run_type": "bench"}) as run:
        record(RunRecord(model=model, registration=registration), run)
    return pipeline, threshold, columns


def run_child(command: list[str], env: dict) -> dict:
    """Run a command; its wall time, CPU time and peak RSS (of that child alone), and output."""
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_gb": usage.ru_maxrss / 1024**2, "output": output}


def contribution_paths(pipeline, X, n_rows: int) -> list[tuple[str, float]]:
    """Rows/s of each exact contribution path on the same `n_rows` model-feature rows."""
    import shap

    booster = pipeline[-1].booster_
    rows = X[:n_rows]
    results = []

    def timed(name, fn):
        start = time.monotonic()
        fn()
        results.append((name, n_rows / (time.monotonic() - start)))

    timed("lightgbm pred_contrib, 1 thread", lambda: booster.predict(rows, pred_contrib=True,
                                                                      num_threads=1))
    timed("lightgbm pred_contrib, 2 threads",
          lambda: booster.predict(rows, pred_contrib=True, num_threads=2))
    by_pattern = LightGBMContributions(pipeline[-1])
    by_pattern.min_rows = 0  # the pattern path even on this sample (it gains with more rows)
    timed("compiled TreeSHAP per tree pattern, 2 threads (used by predict), on this sample",
          lambda: by_pattern(rows, 2))
    halves = np.array_split(rows, 2)
    with ThreadPoolExecutor(2) as pool:
        timed("lightgbm pred_contrib, 2 parallel batches x 1 thread", lambda: list(pool.map(
            lambda part: booster.predict(part, pred_contrib=True, num_threads=1), halves)))
    explainer = shap.TreeExplainer(pipeline[-1])
    timed("shap TreeExplainer (same algorithm, generic)",
          lambda: explainer.shap_values(rows, check_additivity=False))
    return results


def serve_latency(store: Path, customers, n_requests: int = 50) -> dict:
    """Median and p90 latency of 100-customer /invocations requests to the served champion."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(store / "serve.log", "w")
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m",
                             f"models:/{NAME}@champion", "--env-manager", "local", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server not ready: {(store / 'serve.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        rows = customers.head(100).astype("float64")
        payload = {"dataframe_split": {"columns": list(rows.columns), "data": rows.values.tolist()}}
        session = requests.Session()
        for _ in range(5):  # warm-up
            session.post(f"{url}/invocations", json=payload, timeout=60).raise_for_status()
        times = []
        for _ in range(n_requests):
            start = time.monotonic()
            session.post(f"{url}/invocations", json=payload, timeout=60).raise_for_status()
            times.append(time.monotonic() - start)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    return {"median_ms": 1000 * float(np.median(times)),
            "p90_ms": 1000 * float(np.percentile(times, 90)), "n": n_requests}


def versions() -> str:
    names = ["python", "lightgbm", "scikit-learn", "pandas", "pyarrow", "pandera", "mlflow", "shap"]
    found = [f"Python {platform.python_version()}"]
    found += [f"{n} {metadata.version(n)}" for n in names[1:]]
    return ", ".join(found)


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--contrib-sample", type=int, default=4000,
                        help="flagged rows used to compare contribution paths")
    parser.add_argument("--reasons", default="none,flagged",
                        help="end-to-end runs to make, by their reasons= option")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--report", default="experiments/predict-benchmark-raw.txt")
    args = parser.parse_args()
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="gymchurn-bench-"))
    # Replaces only a previous raw record of this script (its first line is the machine's).
    report = check_file(resolve_path(args.report), "--report file",
                        lambda path: path.read_text(errors="replace").startswith("machine: "),
                        "a raw record of this script (first line 'machine: ...')")
    report.write_text("")

    class Lines(list):
        """Each figure is printed and written to the report as soon as it is measured."""

        def append(self, line):
            super().append(line)
            print(line, flush=True)
            with open(report, "a") as out:
                out.write(line + "\n")

    lines = Lines()
    lines.append(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                 f"load average at start {os.getloadavg()}")
    lines.append(f"versions: {versions()}")
    try:
        pipeline, threshold, columns = train_champion(work, args.trees)
        customers = make_synthetic_customers(args.rows, seed=1).drop(columns="Churn")
        customers.insert(0, "customer_id", [f"C{i:07d}" for i in range(args.rows)])
        source = work / "customers.csv"
        pacsv.write_csv(pa.Table.from_pandas(customers, preserve_index=False), source)
        lines.append(f"input: {args.rows:,} synthetic customers, {source.stat().st_size / 1e6:.0f} MB "
                     f"CSV; model: {args.trees}-tree LightGBM, threshold {threshold:.3f}")

        features = pipeline[:-1].transform(customers[columns]).to_numpy(np.float64)
        booster = pipeline[-1].booster_
        start = time.monotonic()
        proba = booster.predict(features, num_threads=2)
        bare = time.monotonic() - start
        flagged = np.flatnonzero(proba >= threshold)
        lines.append(f"bare booster predict (2 threads, features precomputed): {bare:.1f} s; "
                     f"flagged {len(flagged):,} ({len(flagged) / args.rows:.1%})")

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for reasons in args.reasons.split(","):
            output = work / f"scores_{reasons}.csv"
            result = run_child([sys.executable, "-m", "gymchurn.predict", f"input={source}",
                                f"output={output}", f"reasons={reasons}",
                                f"tracking.uri=sqlite:///{work}/mlflow.db"], env)
            inner = re.search(r"columns\) in ([\d.]+) s", result["output"])
            reasons_time = re.search(r"customers \(.*\) in ([\d.]+) s", result["output"])
            lines.append(
                f"make predict reasons={reasons}: process wall {result['wall']:.1f} s "
                f"({result['wall'] / bare:.2f}x bare booster), in-process stages "
                f"{float(inner.group(1)) if inner else float('nan'):.1f} s, CPU {result['cpu']:.1f} s, "
                f"peak memory {result['peak_gb']:.2f} GB"
                + (f", reasons {float(reasons_time.group(1)):.1f} s" if reasons_time else "")
            )
            lines.append("    " + "\n    ".join(result["output"].strip().splitlines()))

        sample = features[flagged[: args.contrib_sample]]
        for name, rate in contribution_paths(pipeline, sample, len(sample)):
            lines.append(f"contributions on {len(sample):,} flagged rows, {name}: {rate:,.0f} "
                         f"rows/s -> {len(flagged) / rate:,.0f} s for the {len(flagged):,} flagged")
        start = time.monotonic()
        LightGBMContributions(pipeline[-1])(features[flagged], 2)
        took = time.monotonic() - start
        lines.append(f"contributions on all {len(flagged):,} flagged rows, compiled TreeSHAP per "
                     f"tree pattern, 2 threads: {took:.1f} s ({len(flagged) / took:,.0f} rows/s)")
        if not args.skip_serve:
            try:
                latency = serve_latency(work, customers[columns])
                lines.append(f"/invocations, 100 customers, warm: median "
                             f"{latency['median_ms']:.1f} ms, p90 {latency['p90_ms']:.1f} ms "
                             f"({latency['n']} requests)")
            except (RuntimeError, requests.RequestException) as err:
                lines.append(f"/invocations: not measured ({err})")
        lines.append(f"load average at end {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"written to {report}")


if __name__ == "__main__":
    main()
