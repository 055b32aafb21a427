"""Registered models for the lifecycle tests (promote, predict, serve), trained once per test run.

`trained_store` trains three small churn versions into one temp store per test run (shared by the
pytest-xdist workers); each test copies its SQLite file (`copy_store`) so the registry changes one
test makes never reach another. The artifacts stay where they are: tests only read them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gymchurn.config import compose_config
from gymchurn.data import make_synthetic_customers
from gymchurn.experiment import run
from gymchurn.registry import log_pipeline_model, register_version
from gymchurn.segments import served as segment_served
from gymchurn.tracking import setup_experiment

CLASSIFIER = "gym-churn-classifier"
SEGMENTATION = "gym-churn-segmentation"
_SESSION: dict = {}

# Version 1: lgbm on engineered features; 2: logreg on raw columns (both split seed 42, so the
# same holdout); 3: logreg on engineered features with split seed 7 (another holdout).
VERSIONS = [
    ["model=lgbm", "features=engineered"],
    ["model=logreg", "features=raw"],
    ["model=logreg", "features=engineered", "split.seed=7"],
]


def store_overrides(root: Path) -> list[str]:
    return [
        f"data.path={root / 'customers.csv'}", "data.shared_path=null", "data.url=null",
        f"tracking.uri=sqlite:///{root}/mlflow.db",
    ]


def trained_store(tmp_path_factory) -> Path:
    """A folder with customers.csv and mlflow.db holding versions 1-3 of the classifier."""
    if "root" not in _SESSION:
        _SESSION["root"] = made_once(tmp_path_factory, "lifecycle", train_versions)
        mlflow.set_tracking_uri(None)
    return _SESSION["root"]


def train_versions(root: Path) -> None:
    make_synthetic_customers(600, seed=7).to_csv(root / "customers.csv", index=False)
    for overrides in VERSIONS:
        cfg = compose_config(overrides=[
            *store_overrides(root), f"tune.storage=sqlite:///{root}/optuna.db",
            "tune=fast", "tune.n_trials=2", "tune.folds=2", "evaluation.repeated_cv_repeats=0",
            "evaluation.permutation_repeats=1", *overrides,
        ])
        run(cfg, printer=lambda line: None)


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder `name`, filled by `make(folder)` once per test run. Under pytest-xdist the
    workers share it: it sits in the run's folder above theirs, the first to get there makes
    it under a file lock, and the others wait for the lock and read it (a worker that died half
    way leaves no `.made` file, so the next one makes it again)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: its own temp folder
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    run_folder = tmp_path_factory.getbasetemp().parent
    folder = run_folder / name
    with open(run_folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when this block ends, or the process dies
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


def copy_store(root: Path, dest: Path) -> list[str]:
    """Copy the trained store's database into `dest`; return the overrides that use it."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "mlflow.db", dest / "mlflow.db")
    return [
        f"data.path={root / 'customers.csv'}", "data.shared_path=null", "data.url=null",
        f"tracking.uri=sqlite:///{dest}/mlflow.db",
    ]


def store_with_champion(tmp_path_factory, dest: Path) -> list[str]:
    """A private copy of the trained registry with @champion on version 1 (lgbm, engineered);
    MLflow points at it. Returns the overrides that use it."""
    overrides = copy_store(trained_store(tmp_path_factory), dest)
    mlflow.set_tracking_uri(overrides[-1].split("=", 1)[1])
    MlflowClient().set_registered_model_alias(CLASSIFIER, "champion", "1")
    return overrides


def registry_snapshot(uri: str) -> dict:
    """Every registered model's aliases and every version's tags: equal before/after = unchanged."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    return {
        m.name: (dict(m.aliases), {v.version: dict(v.tags)
                                   for v in client.search_model_versions(f"name='{m.name}'")})
        for m in client.search_registered_models()
    }


def register_segmentation(customers: pd.DataFrame, n_segments: int, tags: dict) -> str:
    """Register a small k-means segmentation version the way segment.py does (segments/served.py
    pyfunc); return its version number. The model is logged in a run of an experiment whose
    artifacts live beside the current store (MLflow's Default experiment would write them to
    ./mlruns, the repo's own store)."""
    X = customers.drop(columns="Churn")  # as the schema types them: the signature says long
    pipeline = make_pipeline(StandardScaler(), KMeans(n_segments, n_init=3, random_state=0)).fit(X)
    names = {s: f"segment {s}" for s in range(n_segments)}
    example = X.head(5)
    predicted = pipeline.predict(example).astype("int64")
    output = pd.DataFrame({"segment": predicted, "segment_name": [names[s] for s in predicted]})
    experiment_id = setup_experiment({"uri": mlflow.get_tracking_uri()}, SEGMENTATION)
    with mlflow.start_run(experiment_id=experiment_id):
        info = log_pipeline_model(
            pipeline, Path(segment_served.__file__), example, output,
            model_config={"segment_names": {str(s): n for s, n in names.items()},
                          "feature_columns": list(X.columns)},
        )
    return register_version(info.model_uri, SEGMENTATION, tags, "challenger").version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STARTUP_TIMEOUT = 180  # seconds; a loaded 2-core machine starts servers slowly

# `mlflow server` (MLflow 3) also starts a job runner and seven Huey consumer processes for its
# GenAI jobs, each importing MLflow and then polling: a core's worth of CPU while the server
# runs. gymchurn runs no such jobs, so the test servers start without them.
WITHOUT_SERVER_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def running(command: list[str], port: int, log: Path, env: dict | None = None,
            ready: str = "/health"):
    """Start `command` (a server on 127.0.0.1:`port`) in its own process group, poll the path
    `ready` until it answers, against a generous deadline; yield the server's URL; stop it
    after (MLflow's servers answer /health; optuna-dashboard its /api/studies)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{port}{ready}", timeout=(5, 30)).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or busy starting: poll again until the deadline
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in {STARTUP_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def run_module(module: str, *overrides: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *overrides], capture_output=True,
                          text=True, timeout=timeout)


def run_modules(module: str, runs: list[list[str]], timeout: float = 900):
    """Run `python -m module` once per override list, all at once (most of each run is start-up
    time), and return their CompletedProcess results in order."""
    procs = [subprocess.Popen([sys.executable, "-m", module, *overrides], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for overrides in runs]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def new_customers(n: int = 40, seed: int = 11) -> pd.DataFrame:
    """Customers to score: no target, a text id that must come back exactly as written."""
    df = make_synthetic_customers(n, seed=seed).drop(columns="Churn")
    df.insert(0, "customer_id", [f"{i:03d}" for i in range(n)])  # leading zeros: text ids
    return df


def assert_no_partial_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".part")]
    assert not leftovers, leftovers


def lose_model_files(db: Path, name: str, version: int, where: Path) -> None:
    """In a copied store, point a version's model files at `where`, a folder that does not
    exist: the registry as a user leaves it after deleting or moving an artifacts folder."""
    import sqlite3

    with sqlite3.connect(db) as con:
        (source,) = con.execute("SELECT source FROM model_versions WHERE name = ? AND version = ?",
                                (name, version)).fetchone()
        model_id = source.rsplit("/", 1)[-1]  # models:/m-...: the logged model holding the files
        con.execute("UPDATE logged_models SET artifact_location = ? WHERE model_id = ?",
                    (where.as_uri(), model_id))
        con.execute("UPDATE model_versions SET storage_location = ? WHERE name = ? AND version = ?",
                    (where.as_uri(), name, version))


ALIASES = ("champion", "previous-champion")


def assert_decisions_match_aliases(start: dict, final: dict) -> list:
    """Replay the FINISHED decision runs of gym-churn-promotion in the order they ran: each saw
    the aliases the one before left (`before.*` tags), and the last left the final aliases
    (`after.*`). Returns the runs."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name("gym-churn-promotion")
    runs = sorted(client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'"),
                  key=lambda r: r.info.start_time)
    state = {a: start.get(a, "none") for a in ALIASES}
    for decision in runs:
        tags = decision.data.tags
        seen = {a: tags[f"before.{a}"] for a in ALIASES}
        assert seen == state, (tags["decision"], tags["candidate_version"], seen, state)
        assert tags["champion_version"] == state["champion"]
        state = {a: tags[f"after.{a}"] for a in ALIASES}
    assert state == {a: final.get(a, "none") for a in ALIASES}
    return runs


def aliases() -> dict:
    """The classifier's aliases in the current store: alias -> version number as text."""
    return {a: str(v) for a, v in MlflowClient().get_registered_model(CLASSIFIER).aliases.items()}


def set_aliases(**pairs) -> None:
    """set_aliases(champion=1, previous_champion=2): `_` in a name stands for `-`."""
    for alias, version in pairs.items():
        MlflowClient().set_registered_model_alias(CLASSIFIER, alias.replace("_", "-"), str(version))


def start_aliases(**pairs) -> dict:
    set_aliases(**pairs)
    return aliases()


def check_concurrent_runs(done, uri: str, start: dict) -> None:
    """Promotions run at once: every process succeeded in one piece, and every decision it
    printed is a FINISHED run that matches the final aliases; the lock is gone."""
    for result in done:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    mlflow.set_tracking_uri(uri)
    final = aliases()
    runs = assert_decisions_match_aliases(start, final)
    printed = [line.split(" run ")[1].split()[0] for r in done for line in r.stdout.splitlines()
               if line.startswith("recorded:")]
    assert sorted(printed) == sorted(r.info.run_id for r in runs)  # none lost, none extra
    assert len(runs) >= len(done) - 1  # at most one found nothing to do
    names = [m.name for m in MlflowClient().search_registered_models()]
    assert not [n for n in names if n.endswith(".promotion-lock")]


# A Python that sees the venv's packages but neither this repository nor its editable install:
# -I ignores PYTHON* variables and the current folder, -S skips `site`, so no .pth file (the
# editable install is one) runs; only site-packages itself is put on the path.
ELSEWHERE = """
import json, sys
sys.path.append({site!r})
try:
    import gymchurn
    print("gymchurn is importable without the model", file=sys.stderr)
    sys.exit(3)
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model({uri!r})
rows = pd.read_parquet({rows!r})
model.predict(rows).to_parquet({out!r})
try:  # a broken data rule: the full validation's code loads too (and must be installable)
    model.predict(rows.head(2).assign(Age=-5))
    sys.exit("a negative age was accepted")
except mlflow.exceptions.MlflowException as err:
    assert "Age" in str(err), err
json.dump({{"gymchurn": sys.modules["gymchurn"].__file__,
            "files": sorted(m.__file__ for n, m in list(sys.modules.items())
                            if n.split(".")[0] == "gymchurn" and getattr(m, "__file__", None))}},
          open({info!r}, "w"))
"""


def predict_elsewhere(model_uri: str, tracking_uri: str, rows: pd.DataFrame, folder: Path):
    """Load `model_uri` and score `rows` in a clean process that cannot import gymchurn from
    this repository; return (predictions, where gymchurn was loaded from, the gymchurn module
    files that process loaded)."""
    import json
    import sysconfig

    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: str(folder / f"{k}.{ext}") for k, ext in
             (("rows", "parquet"), ("out", "parquet"), ("info", "json"))}
    rows.to_parquet(paths["rows"])
    code = ELSEWHERE.format(site=sysconfig.get_paths()["purelib"], uri=model_uri, **paths)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=folder, text=True,
                          capture_output=True, timeout=600,
                          env={"MLFLOW_TRACKING_URI": tracking_uri, "PATH": os.environ["PATH"],
                               "HOME": os.environ.get("HOME", str(folder))})
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(Path(paths["info"]).read_text())
    return pd.read_parquet(paths["out"]), info["gymchurn"], info["files"]


def required_closure(model_uri: str) -> set[str]:
    """Normalised names of the distributions the model's requirements.txt installs, with
    everything they depend on."""
    import re
    from importlib import metadata

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    lines = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().splitlines()
    todo = [re.split(r"[<>=!~;\[ ]", line.strip())[0] for line in lines
            if line.strip() and not line.startswith(("#", "-"))]
    seen: set[str] = set()
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [re.split(r"[<>=!~;\[ (]", r)[0] for r in requires if "extra ==" not in r]
    return seen


def unlisted_imports(files: list[str], model_uri: str) -> list[str]:
    """Third-party top-level modules that the gymchurn code in `files` imports (read from the
    source, function-level imports included) whose distribution the model's requirements do
    not install. (Libraries' own optional imports, such as skops importing pytest when it is
    there, are their business, not the model's requirements'.)"""
    import ast
    import re
    from importlib import metadata

    imported = set()
    for file in files:
        for node in ast.walk(ast.parse(Path(file).read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    closure = required_closure(model_uri)
    providers = metadata.packages_distributions()
    missing = []
    for module in sorted(imported - set(sys.stdlib_module_names) - {"gymchurn", "__future__"}):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [module])}
        if not dists & closure:
            missing.append(module)
    return missing
