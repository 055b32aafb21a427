"""Load stage: find or fetch the customer table, read it, validate it against the schema.

The schema lives in `conf/data/gym.yaml` (column kinds and domains); pandera checks it and
every failure is reported in one message that names the column, the rule and some rows.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gymchurn.config import resolve_path
from gymchurn.errors import GymchurnError, looked_for
from gymchurn.outputs import new_beside, write_file

MAX_ROWS_SHOWN = 5
MAX_COLUMNS_SHOWN = 16


# ---------------------------------------------------------------- finding the file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_verified(source: str, dest: Path, sha256: str | None, timeout: float = 30.0) -> Path:
    """Copy a local file or download a URL to `dest` through a temp file beside it.

    The file is kept only if its sha256 matches, so a failed or corrupted fetch leaves nothing.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_beside(dest, "fetch", suffix=".part")  # ordinary permissions, unlike mkstemp's
    try:
        with open(tmp, "wb") as out:
            if "://" in source:
                with urllib.request.urlopen(source, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out)
        actual = file_sha256(tmp)
        if sha256 and actual != sha256:
            raise GymchurnError(
                f"the copy of {source} has sha256 {actual}, expected {sha256}; it was not "
                f"kept. Put a verified copy of the data at {dest}."
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def ensure_data_file(data_cfg: Mapping) -> Path:
    """Return the table's path; copy it from ../shared/data or download it if it is missing."""
    path = resolve_path(data_cfg["path"])
    if path.exists():
        return path
    shared = resolve_path(data_cfg["shared_path"]) if data_cfg.get("shared_path") else None
    if shared is not None and shared.exists():
        print(f"data: copying {shared} -> {path}", flush=True)
        return fetch_verified(str(shared), path, data_cfg.get("sha256"))
    url = data_cfg.get("url")
    if url:
        print(f"data: downloading {url} -> {path}", flush=True)
        try:
            return fetch_verified(url, path, data_cfg["sha256"])
        except (urllib.error.URLError, OSError) as err:
            raise GymchurnError(
                f"the data file {path} is missing and could not be downloaded from {url} "
                f"({err}). Put gym_churn_us.csv at {path}, or set data.path=/path/to/file.csv."
            ) from err
    raise GymchurnError(
        f"the data file {path} is missing. Put gym_churn_us.csv there, or set data.path=..."
    )


# ---------------------------------------------------------------- reading


FILE_TYPES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_type(path: Path, what: str = "input") -> str:
    """'csv' or 'parquet' from the file name, or one clear error naming the choices."""
    kind = FILE_TYPES.get(Path(path).suffix.lower())
    if kind is None:
        raise GymchurnError(
            f"unknown file type '{Path(path).suffix or Path(path).name}' for the {what} {path}: "
            "use a .csv or .parquet file."
        )
    return kind


CSV_DELIMITERS = (",", ";", "\t")


def _csv_header(path: Path) -> tuple[list[str], str]:
    """The header's names and the file's delimiter: whichever of `,` `;` tab splits the first
    line into the most names (`,` on a tie). utf-8-sig: a spreadsheet's "CSV UTF-8" starts with
    a byte-order mark, which must not become part of the first name."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        line = f.readline()
        if not line.strip():
            problem = "the first line is blank" if f.read(1 << 16).strip() else "the file is empty"
            raise GymchurnError(f"could not read {path} as CSV: {problem}. Expected a header "
                                "row first, then at least one customer.")
    split = {d: next(csv.reader([line], delimiter=d)) for d in CSV_DELIMITERS}
    delimiter = max(CSV_DELIMITERS, key=lambda d: len(split[d]))
    return split[delimiter], delimiter


def _schema_names(names: Sequence[str], schema_columns: Sequence[str], path: Path) -> list[str]:
    """Column names as the schema spells them: surrounding spaces stripped and schema names
    matched whatever their letter case (' age' -> 'Age'); a column named twice, before or after
    that, is refused (which of the two would be the customers' age?)."""
    by_lower = {str(c).lower(): c for c in schema_columns}
    renamed = [by_lower.get(str(n).strip().lower(), str(n).strip()) for n in names]
    sources: dict[str, list[str]] = {}
    for raw, name in zip(names, renamed, strict=True):
        sources.setdefault(name, []).append(str(raw))
    repeated = [
        f"'{raws[0]}' ({len(raws)} times)" if len(set(raws)) == 1
        else " and ".join(repr(r) for r in raws) + f" (all read as '{name}')"
        for name, raws in sources.items() if len(raws) > 1
    ]
    if repeated:
        raise GymchurnError(
            f"{path} names the same column more than once: {'; '.join(repeated)}. Keep one "
            "column of each name (column names are compared without surrounding spaces, and "
            "schema names whatever their letter case)."
        )
    return renamed


def read_customers(path: str | Path, schema_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV or Parquet table of customers (pyarrow, multi-threaded): the one reader for
    training, scoring and every later command, with one clear error per way it can fail.

    Column names are stripped of surrounding spaces and schema names matched whatever their
    case; a repeated name is refused. CSV files may start with a byte-order mark and be
    separated by `,`, `;` or tabs; a `;` file is read with decimal commas (`12,5`), the
    convention of the spreadsheets that write `;` (other files keep the decimal point, so a
    `12,5` there is reported as not a number). CSV columns outside `schema_columns` (ids, notes)
    are read as text, so they are carried through exactly as written (an id 007 stays 007);
    schema columns are inferred and then validated (`validate_customers`).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    kind = file_type(path)
    if not path.exists():
        raise GymchurnError(f"file not found: {looked_for(path)}. Check the path.")
    try:
        if kind == "parquet":
            _schema_names(pq.read_schema(path).names, schema_columns, path)  # before reading
            df = pq.read_table(path).to_pandas()
            df.columns = _schema_names(list(df.columns), schema_columns, path)
            return df
        header, delimiter = _csv_header(path)
        names = _schema_names(header, schema_columns, path)
        text = {name: pa.string() for name in names if name not in set(schema_columns)}
        table = pacsv.read_csv(
            path,
            # The names checked above, not the file's own header row again.
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=text, decimal_point="," if delimiter == ";" else "."),
        )
        return without_trailing_blank_rows(table.to_pandas())
    except (UnicodeDecodeError, pa.ArrowInvalid) as err:
        if isinstance(err, UnicodeDecodeError) or "UTF8" in str(err):
            raise GymchurnError(
                f"could not read {path}: it is not UTF-8 text ({str(err).splitlines()[0]}). "
                "Save it as 'CSV UTF-8' (or Parquet) and try again."
            ) from err
        raise _unreadable(path, kind, err) from err
    except (pa.ArrowException, OSError, csv.Error) as err:
        raise _unreadable(path, kind, err) from err


def without_trailing_blank_rows(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without the empty rows at its end: a spreadsheet saves the blank rows below a table
    as lines of separators only (`,,,,`), which are no customers. (Blank rows inside the table
    stay, and are reported by their row number.)"""
    def blank(rows: pd.DataFrame) -> np.ndarray:
        return (rows.isna() | rows.eq("")).all(axis=1).to_numpy()

    if len(df) == 0 or not blank(df.tail(1))[0]:
        return df  # the usual case: one row looked at
    filled = np.flatnonzero(~blank(df))
    return df.iloc[:filled[-1] + 1 if len(filled) else 0]


def _unreadable(path: Path, kind: str, err: Exception) -> GymchurnError:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return GymchurnError(
        f"could not read {path} as {kind.upper()}: {first_line}. "
        "Check that the file is a complete table with a header row."
    )


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet to a temp file beside `path`, then rename: readers never see a
    partial file, a failed write leaves nothing, and the file gets ordinary permissions
    (0666 less the umask). Whether `path` may be replaced is the caller's check
    (gymchurn.outputs)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    kind = file_type(path, "output")
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    write_file(path, lambda tmp: pq.write_table(arrow, tmp) if kind == "parquet"
               else pacsv.write_csv(arrow, tmp))


def table_digest(df: pd.DataFrame) -> str:
    """sha256 of the table's content (columns, dtypes and every value), not only a sample."""
    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- validation


def build_schema(columns: Mapping, target: str, require_target: bool = True):
    """pandera schema from the config's column rules.

    Every column is read as float (so text fails coercion and is reported by row); `int` columns
    must then hold whole numbers and are cast to int64 after validation.
    """
    import pandera.pandas as pa  # seconds to import: only commands that validate pay for it

    schema_columns = {}
    for name, rule in columns.items():
        checks = []
        # Each check named in words: the messages quote the rule to people who never read the
        # config ("one of 1, 3, 6, 12", not pandera's "isin([1, 3, 6, 12])").
        if rule.get("values") is not None:
            checks.append(pa.Check.isin(list(rule["values"]), error="one of " + ", ".join(
                f"{v:g}" for v in rule["values"])))
        low, high = rule.get("min"), rule.get("max")
        if low is not None or high is not None:
            words = (f"between {low:g} and {high:g}" if low is not None and high is not None
                     else f"at least {low:g}" if low is not None else f"at most {high:g}")
            checks.append(pa.Check.in_range(-np.inf if low is None else low,
                                            np.inf if high is None else high, error=words))
        if rule["kind"] == "int":
            checks.append(pa.Check(lambda s: s == np.floor(s), name="whole_number"))
        schema_columns[name] = pa.Column(
            float,
            checks=checks,
            nullable=False,
            coerce=True,
            required=require_target or name != target,
        )
    frame_checks = []
    for name, rule in columns.items():
        high = rule.get("at_most")
        if high is None:
            continue
        if high not in columns:
            raise GymchurnError(
                f"the data rule of '{name}' says at_most: {high}, which is not a column. "
                f"Name one of: {', '.join(map(str, columns))} (conf/data).")
        frame_checks.append(pa.Check(lambda df, low=name, high=high: df[low] <= df[high],
                                     name=f"{name} <= {high}"))
    return pa.DataFrameSchema(schema_columns, checks=frame_checks, strict=False)


def _describe_failures(failures: pd.DataFrame) -> list[str]:
    """One line per (column, rule): what failed, how often, which rows (1 = first data row)."""
    failures = failures.copy()
    failures["check"] = failures["check"].astype(str)
    # A table-wide rule is reported once, not once per column pandera lists it under.
    failures["where"] = np.where(
        failures["schema_context"] == "Column", failures["column"].astype(str), ""
    )
    # Text in a numeric column fails coercion; the dtype/range checks that then fail on the
    # same column are consequences, not separate problems.
    not_numeric = set(failures.loc[failures["check"].str.startswith("coerce_dtype"), "where"])
    lines = []
    for (where, check), group in failures.groupby(["where", "check"], sort=False):
        if check == "column_in_dataframe":
            missing = ", ".join(sorted(map(str, group["failure_case"])))
            lines.append(f"missing column(s): {missing}. Add them (see conf/data/gym.yaml).")
            continue
        if where in not_numeric and not check.startswith("coerce_dtype"):
            continue
        group = group.drop_duplicates("index") if where == "" else group
        rows = [int(i) + 1 for i in group["index"].dropna()]  # validated with a 0..n-1 index
        if not rows and not where:
            continue  # a table rule that could not run because its column is missing or text
        shown = ", ".join(map(str, rows[:MAX_ROWS_SHOWN]))
        rule = "not a number" if check.startswith("coerce_dtype") else check
        rule = {"not_nullable": "no missing values"}.get(rule, rule)
        if where:
            values = ", ".join(repr(v) for v in group["failure_case"].iloc[:MAX_ROWS_SHOWN])
            lines.append(
                f"column '{where}': rule '{rule}' fails in {len(rows)} row(s), "
                f"e.g. rows {shown} (values: {values})"
            )
        else:
            lines.append(f"rule '{rule}' fails in {len(rows)} row(s), e.g. rows {shown}")
    return lines


def validate_customers(
    df: pd.DataFrame, columns: Mapping, target: str, require_target: bool = True
) -> tuple[pd.DataFrame, list[str]]:
    """Check `df` against the column rules.

    Returns the schema's columns (in schema order, typed) and the names of extra columns
    (the caller decides: training drops them, scoring carries them through). Raises a
    GymchurnError that lists every broken rule with a few row numbers.
    """
    if len(df) == 0:
        raise GymchurnError("the table has no rows. Provide at least one customer.")
    from pandera.errors import SchemaErrors

    schema = build_schema(columns, target, require_target)
    original_index = df.index
    try:
        # Positions, not labels: row numbers stay right for any index (repeated labels too).
        validated = schema.validate(df.reset_index(drop=True), lazy=True)
    except SchemaErrors as err:
        problems = _describe_failures(err.failure_cases)
        # With the header as read, a wrong separator or misspelt names show at once.
        found = ", ".join(repr(str(c)[:60] + ("..." if len(str(c)) > 60 else ""))
                          for c in df.columns[:MAX_COLUMNS_SHOWN])
        more = f" and {len(df.columns) - MAX_COLUMNS_SHOWN} more" \
            if len(df.columns) > MAX_COLUMNS_SHOWN else ""
        problems = [f"{p} The table's {len(df.columns)} column(s) as read: {found}{more}."
                    if p.startswith("missing column(s)") else p for p in problems]
        raise GymchurnError(
            "the customer table does not match the schema "
            "(row numbers count data rows from 1):\n  - "
            + "\n  - ".join(problems)
            + "\nFix those values or rows; the rules are in conf/data/gym.yaml."
        ) from None
    known = [c for c in columns if c in validated.columns]
    extra = [c for c in df.columns if c not in columns]
    out = validated[known].copy()
    out.index = original_index
    for name in known:
        out[name] = out[name].astype("int64" if columns[name]["kind"] == "int" else "float64")
    return out, extra


def load_customers(data_cfg: Mapping) -> tuple[pd.DataFrame, dict]:
    """Find, read and validate the customer table for training.

    Returns the table (schema columns only) and its provenance: path, file sha256, row count,
    and how the file stores each column (int or float).
    """
    path = ensure_data_file(data_cfg)
    raw = read_customers(path, list(data_cfg["columns"]))
    df, extra = validate_customers(raw, data_cfg["columns"], data_cfg["target"])
    if extra:
        warnings.warn(f"{path}: ignoring columns not in the schema: {extra}", stacklevel=2)
    # How the file stores each column: the real table writes months left as 5.0, so it reads
    # as float although the schema's values are whole; the models' input examples show the
    # table as its source writes it (gymchurn.serving.schema_typed).
    stored = {c: "float" if raw[c].dtype.kind == "f" else "int" for c in df.columns}
    return df, {"path": str(path), "sha256": file_sha256(path), "rows": len(df),
                "stored_kinds": stored}


def feature_columns(data_cfg: Mapping) -> list[str]:
    """The columns a model takes: every schema column but the target."""
    return [c for c in data_cfg["columns"] if c != data_cfg["target"]]


def split_holdout(df: pd.DataFrame, data_cfg: Mapping, test_size: float, seed: int) -> list:
    """X_train, X_test, y_train, y_test: the stratified holdout every stage draws the same way
    (training, promotion's re-scoring, the report, the benchmark), so equal settings give the
    same customers."""
    from sklearn.model_selection import train_test_split

    target = data_cfg["target"]
    return train_test_split(df[feature_columns(data_cfg)], df[target], test_size=float(test_size),
                            stratify=df[target], random_state=int(seed))


# ---------------------------------------------------------------- synthetic data (tests, benchmarks)

# Class-conditional parameters measured on the real table (4,000 customers, churn 26.5 %):
# for stayers (index 0) and churners (index 1).
SCHEMA_ORDER = [
    "gender", "Near_Location", "Partner", "Promo_friends", "Phone", "Contract_period",
    "Group_visits", "Age", "Avg_additional_charges_total", "Month_to_end_contract", "Lifetime",
    "Avg_class_frequency_total", "Avg_class_frequency_current_month", "Churn",
]
_SYNTH_CHURN_RATE = 0.2653
_SYNTH_CONTRACT = {0: ([1, 6, 12], [0.433, 0.248, 0.319]), 1: ([1, 6, 12], [0.880, 0.098, 0.022])}
_SYNTH_BINARY = {  # P(column = 1 | churn)
    "gender": (0.51, 0.51), "Near_Location": (0.87, 0.77), "Partner": (0.53, 0.36),
    "Promo_friends": (0.35, 0.18), "Phone": (0.90, 0.90), "Group_visits": (0.46, 0.27),
}


def make_synthetic_customers(n: int, seed: int = 0) -> pd.DataFrame:
    """A table of `n` SYNTHETIC customers with the real schema, for tests and benchmarks only.

    Churn is drawn first, then each column from its distribution given churn (calibrated to
    the real table's means and spreads), so the relationships point the same way as in the
    real data: churners are younger, newer, on short contracts, and visiting less this month.
    The frame is marked `df.attrs["synthetic"] = True`.
    """
    rng = np.random.default_rng(seed)
    churn = (rng.random(n) < _SYNTH_CHURN_RATE).astype(int)
    df = pd.DataFrame(index=range(n))
    for column, (p_stay, p_churn) in _SYNTH_BINARY.items():
        df[column] = (rng.random(n) < np.where(churn == 1, p_churn, p_stay)).astype(int)
    contract = np.empty(n, dtype=int)
    for label, (values, probs) in _SYNTH_CONTRACT.items():
        mask = churn == label
        contract[mask] = rng.choice(values, size=mask.sum(), p=probs)
    df["Contract_period"] = contract
    age = np.where(churn == 1, rng.normal(27.0, 2.9, n), rng.normal(30.0, 3.0, n))
    df["Age"] = np.clip(np.round(age), 18, 41).astype(int)
    charges = np.where(churn == 1, rng.gamma(2.2, 115.0 / 2.2, n), rng.gamma(2.5, 158.0 / 2.5, n))
    df["Avg_additional_charges_total"] = np.clip(charges, 0.15, 550.0)
    fresh = rng.random(n) < 0.84  # most customers are at the start of their contract
    df["Month_to_end_contract"] = np.where(
        fresh, contract, np.ceil(rng.random(n) * contract)
    ).astype(int)
    lifetime = np.where(churn == 1, rng.geometric(1 / 2.0, n) - 1, rng.geometric(1 / 5.7, n) - 1)
    df["Lifetime"] = np.clip(lifetime, 0, 31).astype(int)
    total = np.where(churn == 1, rng.gamma(4.5, 1.47 / 4.5, n), rng.gamma(4.0, 2.02 / 4.0, n))
    trend = np.where(churn == 1, rng.normal(0.68, 0.25, n), rng.normal(1.0, 0.08, n))
    df["Avg_class_frequency_total"] = np.clip(total, 0, 6.0)
    df["Avg_class_frequency_current_month"] = np.clip(total * np.clip(trend, 0, 1.3), 0, 6.1)
    df["Churn"] = churn
    df = df[SCHEMA_ORDER]
    df.attrs["synthetic"] = True
    return df
