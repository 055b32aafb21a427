"""SQLite against Optuna's JournalStorage (file backend) for tuning workers sharing one study
(issue 15): `python benchmarks/optuna_storage.py` prints the tables of
experiments/optuna-storage.md and writes every run's figures to --raw (JSON).

1. throughput: --workers (2) spawned workers run one fresh study to its total, as `make
   experiment workers=2` runs them (`gymchurn.churn.fit.open_churn_study`: seeded TPE, median pruning;
   `gymchurn.tuning.run_trials` with the progress printer), timed from a barrier both pass
   once their study is open until both stop. Two objectives: a cheap one (the LightGBM search
   space, 5 reported folds, no fitting: the storage's cost shows) and the real LightGBM
   objective on the real data (`fit.TuningJob.run`, nested MLflow trial runs off). Backends
   alternate run by run, starting side swapped every repetition (ABBA), so a change of load
   hits both. Each worker times the calls its main thread makes to the storage's public
   methods (Optuna's stale-trial check and the heartbeat thread are outside that).
2. correctness after each run: trials in the study, numbers 0..n-1 once each, none left
   RUNNING or WAITING, trials the workers say they ran = trials in the study, the study's
   finished count against its total, "locked" errors (raised, logged or recorded as a
   trial's failure reason) and storage calls that waited over 1 s.
3. resume: 2 workers on a slow cheap objective (5 folds of 0.05 s); worker 1 SIGKILLed at a
   random moment of a trial once a quarter of the total is finished; (a) worker 0 carries on
   alone; (b) worker 0 is SIGKILLed too at half. After the heartbeat's grace period the same
   command is rerun with 2 workers. Journal locks the workers had to break are counted.
4. a process killed while it holds the storage's write lock: how long the next write waits.

Both sides are opened by the project's `gymchurn.tuning.open_storage`: sqlite:///<path> is an
RDBStorage (60 s lock timeout, heartbeats), journal:///<path> a
`JournalStorage(JournalFileBackend(path))`. Everything is written under a temp folder; nothing
in the repo but --raw.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing
import os
import queue
import random
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from gymchurn import tuning
from gymchurn.churn import fit
from gymchurn.config import compose_config
from gymchurn.data import load_customers
from gymchurn.tracking import quiet_libraries

BACKENDS = ("sqlite", "journal")
GRACE_SECONDS = 3 * tuning.HEARTBEAT_SECONDS  # the project's heartbeat grace period
BROKEN_LOCKS = "locks_broken.log"  # one line per journal lock a worker had to break


def broken_locks(folder: Path) -> int:
    path = folder / BROKEN_LOCKS
    return len(path.read_text().splitlines()) if path.exists() else 0


def say(line: str) -> None:
    print(f"[storage {datetime.now():%H:%M:%S}] {line}", flush=True)


def storage_string(backend: str, folder: Path) -> str:
    return f"{backend}:///{folder}/optuna.{'db' if backend == 'sqlite' else 'journal'}"


def storage_file(url: str) -> str:
    return url.split(":///", 1)[1]


def busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (Linux)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_tree() -> float:
    """CPU seconds of this process and its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_self() + children.ru_utime + children.ru_stime


# ---------------------------------------------------------------- timing storage calls


class StorageTimer:
    """Wraps the public methods of the storage classes: seconds the main thread spends in
    storage calls (outermost call only), how many, the longest, how many waited over 1 s."""

    def __init__(self):
        self.seconds, self.calls, self.longest, self.over_1s = 0.0, 0, 0.0, 0
        self._depth = 0

    def install(self) -> None:
        from optuna.storages._cached_storage import _CachedStorage

        for cls in (_CachedStorage, optuna.storages.RDBStorage, optuna.storages.JournalStorage):
            for name, fn in list(vars(cls).items()):
                if callable(fn) and not name.startswith("_"):
                    setattr(cls, name, self._wrap(fn))

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread() or self._depth:
                return fn(*args, **kwargs)  # heartbeat thread, or a call inside a timed call
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self._depth -= 1
                self.seconds += took
                self.calls += 1
                self.longest = max(self.longest, took)
                self.over_1s += took > 1.0

        return timed


class LockMessages(logging.Handler):
    """Counts log records that mention a lock ("database is locked", the journal's lock file),
    and the journal's "Forcibly releasing the lock file" (a lock left by a killed worker, broken
    after its 30 s grace period), each written at once to `broken_log` so a worker killed later
    still leaves its count."""

    def __init__(self, broken_log: Path):
        super().__init__(logging.DEBUG)
        self.count, self.first, self.broken_log = 0, None, broken_log

    def emit(self, record):
        text = record.getMessage()
        if "lock" in text.lower():
            self.count += 1
            self.first = self.first or text[:300]
        if "forcibly releasing" in text.lower():
            with open(self.broken_log, "a") as log:
                log.write(f"{time.time():.3f} {text}\n")


# ---------------------------------------------------------------- objectives


def cheap_objective(space, folds: int, sleep: float = 0.0):
    """What the real objective writes to the storage (the LightGBM parameters, one report per
    fold, a pruning check, cv_std) without fitting: a made-up score from the parameters."""

    def cross_validate(trial: optuna.Trial) -> float:
        params = tuning.suggest_params(trial, space)
        rng = random.Random(trial.number)
        base = 0.9 - 0.05 * abs(math.log(params["learning_rate"] / 0.05)) - 0.0001 * params["num_leaves"]
        scores = []
        for step in range(folds):
            if sleep:
                time.sleep(sleep)
            scores.append(base + rng.gauss(0, 0.01))
            trial.report(statistics.fmean(scores), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("cv_std", statistics.pstdev(scores))
        return statistics.fmean(scores)

    return tuning.recording_failures(cross_validate)


# ---------------------------------------------------------------- one worker process

RAN: list[int] = []  # numbers of the trials this process ran (the real objective's workers)


class CountRan:
    """A picklable recipe (like `trial_logging`) for a callback recording each trial run here."""

    def __call__(self):
        return lambda study, trial: RAN.append(trial.number)



def worker_main(spec: dict, worker: int, barrier, results) -> None:
    """Open the shared study, wait for the other worker, run trials to the total, report."""
    log = open(Path(spec["folder"]) / f"worker{worker}.log", "a", buffering=1)  # noqa: SIM115
    sys.stdout = sys.stderr = log
    quiet_libraries()
    locks = LockMessages(Path(spec["folder"]) / BROKEN_LOCKS)
    for name in ("optuna", "sqlalchemy"):
        logging.getLogger(name).addHandler(locks)
    timer = StorageTimer()
    timer.install()
    cfg = OmegaConf.create(spec["cfg"])
    start_open = time.time()
    study = fit.open_churn_study(cfg.tune, spec["study_name"], worker)
    open_s = time.time() - start_open
    if barrier is not None:
        barrier.wait()
    out = {"worker": worker, "open_s": open_s, "error": None}
    start, cpu = time.time(), cpu_self()
    timer.seconds, timer.calls, timer.longest, timer.over_1s = 0.0, 0, 0.0, 0
    try:
        if spec["workload"] == "lgbm":
            spec["job"].trial_logging = CountRan()  # the job's one slot for an extra callback
            spec["job"].run(worker, study)
            out["ran"] = len(RAN)
        else:
            objective = cheap_objective(cfg.model.search_space, int(cfg.tune.folds), spec["sleep"])
            printer = tuning.ProgressPrinter(int(cfg.tune.n_trials), [cfg.tune.metric],
                                             printer=lambda line: print(f"[worker {worker}]{line}"))
            out["ran"] = tuning.run_trials(study, objective, int(cfg.tune.n_trials), None, [printer])
    except Exception as err:  # noqa: BLE001 - reported, counted as a failure of the run
        out["error"] = f"{type(err).__name__}: {err}"[:500]
    out.update(start=start, end=time.time(), cpu_s=cpu_self() - cpu, storage_s=timer.seconds,
               storage_calls=timer.calls, longest_call_s=timer.longest, calls_over_1s=timer.over_1s,
               lock_messages=locks.count, first_lock_message=locks.first)
    results.put(out)


# ---------------------------------------------------------------- checking a study


def check_study(url: str, name: str, n_total: int, ran: int | None = None) -> dict:
    """What the study holds after a run, read by a fresh process-level opener."""
    storage = tuning.open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    out = {
        "trials": len(trials),
        "finished": len(tuning.finished_trials(study)),
        "n_total": n_total,
        "numbers_ok": sorted(numbers) == list(range(len(trials))),
        "states": {k: v for k, v in states.items() if v},
        "locked_failures": sum("lock" in str(t.user_attrs.get("error", "")).lower() for t in trials),
        # What killed workers left: trials RUNNING or WAITING, or FAIL without a recorded reason.
        # "no params": killed before its objective suggested any (just after the trial began).
        "dead": {t.number: t.state.name + ("" if t.params else " (no params)") for t in trials
                 if t.state in (TrialState.RUNNING, TrialState.WAITING)
                 or (t.state == TrialState.FAIL and "error" not in t.user_attrs)},
    }
    if ran is not None:
        out["ran_equals_trials"] = ran == len(trials)
    return out


# ---------------------------------------------------------------- 1-2. throughput and correctness


def fresh_cfg(base: list[str], folder: Path, backend: str, n_total: int, name: str,
              workers: int = 2):
    folder.mkdir(parents=True)
    return compose_config(overrides=[*base, f"tune.storage={storage_string(backend, folder)}",
                                     f"tune.n_trials={n_total}", f"tune.study_name={name}",
                                     f"tracking.uri=sqlite:///{folder}/mlflow.db",
                                     f"workers={workers}"])


class Workers:
    """`n` spawned workers on one study; holds the queue and barrier until they are done (a
    collected barrier's semaphore would be gone before the children unpickle it)."""

    def __init__(self, spec: dict, barrier: bool = True, n: int = 2):
        ctx = multiprocessing.get_context("spawn")
        self.results = ctx.Queue()
        self.gate = ctx.Barrier(n) if barrier else None
        self.procs = [ctx.Process(target=worker_main, args=(spec, i, self.gate, self.results))
                      for i in range(n)]
        for p in self.procs:
            p.start()

    def collect(self, expected: int | None = None) -> list[dict]:
        """The reports of `expected` workers (all); an error if the workers die without one."""
        expected = len(self.procs) if expected is None else expected
        out = []
        while len(out) < expected:
            try:
                out.append(self.results.get(timeout=1))
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs) and self.results.empty():
                    raise RuntimeError("the workers stopped without reporting; see their logs") from None
        for p in self.procs:
            p.join()
        return sorted(out, key=lambda r: r["worker"])


def throughput_run(backend: str, workload: str, n_total: int, base: list[str], work: Path,
                   tag: str, data=None, workers: int = 2) -> dict:
    folder = work / tag
    name = f"bench-{workload}"
    cfg = fresh_cfg(base, folder, backend, n_total, name, workers)
    fit.open_churn_study(cfg.tune, name)  # created before the workers start, as make experiment does
    spec = {"folder": str(folder), "study_name": name, "workload": workload, "sleep": 0.0}
    if workload == "lgbm":
        plan = fit.plan(cfg, *data)
        spec["cfg"] = OmegaConf.to_container(plan.cfg, resolve=True)
        spec["job"] = fit.TuningJob(spec["cfg"], plan.X_train, plan.y_train, name)
    else:
        spec["cfg"] = OmegaConf.to_container(cfg, resolve=True)
    # Other jobs' cores over the whole run (workers' start-up included): the machine's CPU time
    # less this process tree's, per second.
    load, busy, own, since = os.getloadavg()[0], busy_seconds(), cpu_tree(), time.monotonic()
    rows = Workers(spec, n=workers).collect()
    others = max(0.0, (busy_seconds() - busy - (cpu_tree() - own)) / (time.monotonic() - since))
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    check = check_study(cfg.tune.storage, name, n_total, sum(r["ran"] or 0 for r in rows))
    n = check["trials"]
    return {"backend": backend, "workload": workload, "workers_n": workers, "tag": tag, "wall_s": wall,
            "trials_per_s": n / wall, "load1": load, "other_cores": others,
            "storage_ms_per_trial": 1000 * sum(r["storage_s"] for r in rows) / n,
            "cpu_s_per_trial": sum(r["cpu_s"] for r in rows) / n,
            "pruned": check["states"].get("PRUNED", 0), "check": check, "workers": rows}


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


# ---------------------------------------------------------------- 3. resume after SIGKILL


def wait_finished(url: str, name: str, at_least: int, procs) -> None:
    storage = tuning.open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    while len(tuning.finished_trials(study)) < at_least:
        if not any(p.is_alive() for p in procs):
            return
        time.sleep(0.05)


def resume_run(backend: str, scenario: str, n_total: int, base: list[str], work: Path,
               tag: str, sleep: float) -> dict:
    folder = work / tag
    name = "bench-resume"
    cfg = fresh_cfg(base, folder, backend, n_total, name)
    fit.open_churn_study(cfg.tune, name)
    spec = {"folder": str(folder), "study_name": name, "workload": "cheap", "sleep": sleep,
            "cfg": OmegaConf.to_container(cfg, resolve=True)}
    url = cfg.tune.storage
    # Each kill lands at a random moment of a trial (the objective sleeps 5 x `sleep` s), not
    # right after the poll saw a trial finish (that would favour landing in a storage write).
    rng = random.Random(tag)
    first = Workers(spec, barrier=False)
    killed = []
    for worker, share in ((1, 4), (0, 2)) if scenario == "both" else ((1, 4),):
        wait_finished(url, name, n_total // share, first.procs)
        time.sleep(rng.uniform(0, 5 * sleep))
        os.kill(first.procs[worker].pid, signal.SIGKILL)
        killed.append(worker)
    start = time.monotonic()
    survivors = first.collect(2 - len(killed))
    survivor_s = time.monotonic() - start
    after_run = check_study(url, name, n_total)
    time.sleep(GRACE_SECONDS + 2)  # a human rerunning later: the heartbeat's grace period is over
    start = time.monotonic()
    rerun = Workers(spec, barrier=False).collect()
    rerun_s = time.monotonic() - start
    after_rerun = check_study(url, name, n_total)
    return {"backend": backend, "scenario": scenario, "tag": tag, "killed": killed,
            "survivor_ran": [r["ran"] for r in survivors],
            "survivor_s": survivor_s,
            "survivor_longest_call_s": [r["longest_call_s"] for r in survivors],
            "survivor_error": [r["error"] for r in survivors],
            "after_run": after_run, "rerun_ran": [r["ran"] for r in rerun], "rerun_s": rerun_s,
            "rerun_longest_call_s": max(r["longest_call_s"] for r in rerun),
            "locks_broken": broken_locks(folder),
            "rerun_errors": [r["error"] for r in rerun if r["error"]],
            "after_rerun": after_rerun}


# ---------------------------------------------------------------- 4. a lock holder killed


LOCK_HOLDER = {
    # Takes the database's write lock, writes, and is killed before it commits.
    "sqlite": "import os, signal, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "c.execute('BEGIN IMMEDIATE'); c.execute(\"UPDATE studies SET study_name = study_name\")\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n",
    # Takes the journal's lock (as append_logs does) and is killed before it releases it.
    "journal": "import os, signal, sys\n"
               "from optuna.storages.journal import JournalFileSymlinkLock\n"
               "JournalFileSymlinkLock(sys.argv[1]).acquire()\n"
               "os.kill(os.getpid(), signal.SIGKILL)\n",
}


def killed_lock_holder(backend: str, base: list[str], work: Path, tag: str) -> dict:
    folder = work / tag
    name = "bench-lock"
    cfg = fresh_cfg(base, folder, backend, 1, name)
    study = fit.open_churn_study(cfg.tune, name)
    path = storage_file(cfg.tune.storage)
    holder = subprocess.run([sys.executable, "-c", LOCK_HOLDER[backend], path], check=False)
    start = time.perf_counter()
    trial = study.ask()
    study.tell(trial, 0.5)
    waited = time.perf_counter() - start
    check = check_study(cfg.tune.storage, name, 1)
    return {"backend": backend, "holder_returncode": holder.returncode, "next_write_s": waited,
            "trials": check["trials"], "states": check["states"]}


# ---------------------------------------------------------------- main


def versions() -> dict:
    return {name: metadata.version(name) for name in ("optuna", "SQLAlchemy", "lightgbm")} | {
        "sqlite": sqlite3.sqlite_version, "python": sys.version.split()[0], "cores": os.cpu_count()}


def table(rows: list[dict], workload: str) -> list[str]:
    n = next(r["workers_n"] for r in rows if r["workload"] == workload)
    lines = [f"| {workload}, {n} worker(s) | backend | runs | trials/s median (min-max) | storage ms/trial | "
             "CPU s/trial | load (1 min) | other jobs' cores | pruned |",
             "|---|---|---|---|---|---|---|---|---|"]
    for backend in BACKENDS:
        mine = [r for r in rows if r["backend"] == backend and r["workload"] == workload]
        if not mine:
            continue
        lines.append("| | " + " | ".join([
            backend, str(len(mine)), median_spread([r["trials_per_s"] for r in mine]),
            median_spread([r["storage_ms_per_trial"] for r in mine]),
            median_spread([r["cpu_s_per_trial"] for r in mine]),
            median_spread([r["load1"] for r in mine]), median_spread([r["other_cores"] for r in mine]),
            median_spread([r["pruned"] for r in mine])]) + " |")
    return lines


def correctness(rows: list[dict]) -> list[str]:
    lines = ["| backend | workload | runs | trials (total) | numbers 0..n-1 once | left RUNNING/WAITING | "
             "ran = in study | lock errors | lock log lines | calls > 1 s | longest call s | worker errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for backend in BACKENDS:
        for workload in ("cheap", "lgbm"):
            mine = [r for r in rows if r["backend"] == backend and r["workload"] == workload]
            if not mine:
                continue
            checks = [r["check"] for r in mine]
            workers = [w for r in mine for w in r["workers"]]
            ran = [c["ran_equals_trials"] for c in checks if "ran_equals_trials" in c]
            lines.append("| " + " | ".join([
                backend, workload, str(len(mine)),
                ", ".join(sorted({f"{c['trials']} ({c['n_total']})" for c in checks})),
                f"{sum(c['numbers_ok'] for c in checks)}/{len(checks)}",
                str(sum(c["states"].get("RUNNING", 0) + c["states"].get("WAITING", 0) for c in checks)),
                f"{sum(ran)}/{len(ran)}" if ran else "n/a",
                str(sum(c["locked_failures"] for c in checks)),
                str(sum(w["lock_messages"] for w in workers)),
                str(sum(w["calls_over_1s"] for w in workers)),
                f"{max(w['longest_call_s'] for w in workers):.3f}",
                str(sum(bool(w["error"]) for w in workers))]) + " |")
    return lines


def states_of(dead: dict) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(
        {s: list(dead.values()).count(s) for s in set(dead.values())}.items())) or "none"


def resume_table(rows: list[dict]) -> list[str]:
    lines = ["| backend | scenario | run | finished after the run (total) | dead trials then | "
             "rerun ran | finished after the rerun | dead trials then | numbers 0..n-1 once | "
             "stale locks broken | longest storage call after kill, s | rerun s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["after_run"], r["after_rerun"]
        longest = [*r["survivor_longest_call_s"], r["rerun_longest_call_s"]]
        lines.append("| " + " | ".join([
            r["backend"], r["scenario"], r["tag"].rsplit("-", 1)[1],
            f"{a['finished']} ({a['n_total']})", states_of(a["dead"]),
            "+".join(str(x) for x in r["rerun_ran"]), str(b["finished"]), states_of(b["dead"]),
            str(a["numbers_ok"] and b["numbers_ok"]),
            str(r["locks_broken"]),
            f"{max(longest):.2f}", f"{r['rerun_s']:.1f}"]) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="throughput runs per backend and objective")
    parser.add_argument("--workers", type=int, default=2, help="tuning processes in the throughput runs")
    parser.add_argument("--cheap-trials", type=int, default=200)
    parser.add_argument("--lgbm-trials", type=int, default=40)
    parser.add_argument("--resume-reps", type=int, default=2)
    parser.add_argument("--resume-trials", type=int, default=40)
    parser.add_argument("--resume-sleep", type=float, default=0.05, help="seconds per fold")
    parser.add_argument("--only", default="throughput,lgbm,resume,lock",
                        help="sections: throughput (cheap), lgbm, resume, lock")
    parser.add_argument("--raw", type=Path, default=None, help="JSON file for every run's figures")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    quiet_libraries()
    base = ["model=lgbm", "tune.timeout=null"]
    measured = {"versions": versions(), "started": datetime.now().isoformat(timespec="seconds"),
                "args": vars(args) | {"raw": str(args.raw)}, "runs": [], "resume": [], "lock": []}
    with tempfile.TemporaryDirectory(prefix="optuna-storage-") as tmp:
        work = Path(tmp)
        data = None
        for workload, n_total in (("cheap", args.cheap_trials), ("lgbm", args.lgbm_trials)):
            if (workload == "cheap" and "throughput" not in sections) or \
                    (workload == "lgbm" and "lgbm" not in sections):
                continue
            if workload == "lgbm":
                data = load_customers(compose_config(overrides=base).data)
            for rep in range(args.reps):
                order = BACKENDS if rep % 2 == 0 else BACKENDS[::-1]  # ABBA
                for backend in order:
                    tag = f"{workload}-{backend}-{rep}"
                    row = throughput_run(backend, workload, n_total, base, work, tag, data,
                                         args.workers)
                    measured["runs"].append(row)
                    say(f"{tag}: {row['check']['trials']} trials in {row['wall_s']:.1f} s "
                        f"({row['trials_per_s']:.2f}/s), storage {row['storage_ms_per_trial']:.1f} "
                        f"ms/trial, load {row['load1']:.2f}, check {row['check']}")
        if "resume" in sections:
            for rep in range(args.resume_reps):
                for scenario in ("one", "both"):
                    for backend in (BACKENDS if rep % 2 == 0 else BACKENDS[::-1]):
                        tag = f"resume-{scenario}-{backend}-{rep}"
                        row = resume_run(backend, scenario, args.resume_trials, base, work, tag,
                                         args.resume_sleep)
                        measured["resume"].append(row)
                        say(f"{tag}: {json.dumps(row, default=str)}")
        if "lock" in sections:
            for backend in BACKENDS:
                row = killed_lock_holder(backend, base, work, f"lock-{backend}")
                measured["lock"].append(row)
                say(f"lock holder killed, {backend}: {row}")
    measured["finished"] = datetime.now().isoformat(timespec="seconds")
    if args.raw:
        args.raw.write_text(json.dumps(measured, indent=1, default=str) + "\n")
    print("\n".join(["", f"versions: {measured['versions']}", ""]))
    for workload in ("cheap", "lgbm"):
        if any(r["workload"] == workload for r in measured["runs"]):
            print("\n".join(table(measured["runs"], workload)) + "\n")
    if measured["runs"]:
        print("\n".join(correctness(measured["runs"])) + "\n")
    if measured["resume"]:
        print("\n".join(resume_table(measured["resume"])) + "\n")
    for r in measured["lock"]:
        print(f"lock holder SIGKILLed, {r['backend']}: next write took {r['next_write_s']:.2f} s "
              f"(holder exit {r['holder_returncode']}, study then {r['trials']} trial(s) {r['states']})")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
