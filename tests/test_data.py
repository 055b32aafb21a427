"""Load stage: schema validation, reading files, finding/fetching the data file, synthetic data."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import socket
import threading

import numpy as np
import pandas as pd
import pytest

from gymchurn.config import compose_config
from gymchurn.data import (
    SCHEMA_ORDER,
    ensure_data_file,
    file_sha256,
    load_customers,
    make_synthetic_customers,
    read_customers,
    table_digest,
    validate_customers,
)
from gymchurn.errors import GymchurnError


@pytest.fixture(scope="module")
def data_cfg():
    return compose_config().data


@pytest.fixture(scope="module")
def columns(data_cfg):
    return data_cfg.columns


@pytest.fixture
def table():
    """20 valid synthetic customers (a fresh copy per test, so tests may break it)."""
    return make_synthetic_customers(20, seed=1)


def validation_error(df, columns, **kwargs) -> str:
    with pytest.raises(GymchurnError) as info:
        validate_customers(df, columns, "Churn", **kwargs)
    return str(info.value)


def problem_lines(message: str) -> list[str]:
    return [line.strip() for line in message.splitlines() if line.strip().startswith("- ")]


# ---------------------------------------------------------------- validate_customers: bad input


def test_missing_column_is_named(table, columns):
    message = validation_error(table.drop(columns=["Age"]), columns)
    assert "missing column(s): Age" in message


def test_text_in_numeric_column_names_column_rule_and_row(table, columns):
    table["Age"] = table["Age"].astype(object)
    table.loc[3, "Age"] = "abc"
    message = validation_error(table, columns)
    assert "column 'Age'" in message
    assert "not a number" in message
    assert re.search(r"rows 4\b", message)
    assert "'abc'" in message


def test_text_read_from_a_csv_file_is_reported_by_row(tmp_path, table, columns):
    table["Lifetime"] = table["Lifetime"].astype(object)
    table.loc[[0, 7], "Lifetime"] = "unknown"
    path = tmp_path / "customers.csv"
    table.to_csv(path, index=False)
    message = validation_error(read_customers(path, list(columns)), columns)
    assert "column 'Lifetime': rule 'not a number' fails in 2 row(s), e.g. rows 1, 8" in message


def test_nan_is_reported(table, columns):
    table["Avg_additional_charges_total"] = table["Avg_additional_charges_total"].astype(float)
    table.loc[2, "Avg_additional_charges_total"] = np.nan
    message = validation_error(table, columns)
    assert "column 'Avg_additional_charges_total'" in message
    assert "no missing values" in message
    assert re.search(r"rows 3\b", message)


def test_out_of_range_values_are_each_reported(table, columns):
    table.loc[4, "Age"] = -3
    table.loc[6, "Phone"] = 2
    message = validation_error(table, columns)
    lines = problem_lines(message)
    age = [line for line in lines if "column 'Age'" in line]
    phone = [line for line in lines if "column 'Phone'" in line]
    assert len(age) == 1 and "between 14 and 100" in age[0] and re.search(r"rows 5\b", age[0])
    assert "-3" in age[0]
    assert len(phone) == 1 and "one of 0, 1" in phone[0] and re.search(r"rows 7\b", phone[0])


def test_non_whole_number_in_int_column(table, columns):
    table["Lifetime"] = table["Lifetime"].astype(float)
    table.loc[5, "Lifetime"] = 2.5
    message = validation_error(table, columns)
    assert "column 'Lifetime': rule 'whole_number'" in message
    assert re.search(r"rows 6\b", message)
    assert "2.5" in message


def test_month_to_end_longer_than_contract(table, columns):
    table.loc[7, "Contract_period"] = 1
    table.loc[7, "Month_to_end_contract"] = 6
    message = validation_error(table, columns)
    assert "Month_to_end_contract <= Contract_period" in message
    assert re.search(r"rows 8\b", message)
    # A table-wide rule is reported once, not once per column.
    assert message.count("Month_to_end_contract <= Contract_period") == 1


def test_a_rule_bounding_a_column_by_a_missing_one_is_a_config_error(table, columns):
    columns = {**columns, "Lifetime": {**columns["Lifetime"], "at_most": "Tenure"}}
    with pytest.raises(GymchurnError, match=r"'Lifetime' says at_most: Tenure.*Name one of"):
        validate_customers(table, columns, "Churn")


def test_row_numbers_are_positions_not_index_labels(table, columns):
    table.index = range(100, 120)[::-1]  # labels unrelated to positions
    table.iloc[1, table.columns.get_loc("Age")] = 500
    message = validation_error(table, columns)
    assert re.search(r"column 'Age'.*rows 2\b", message)


def test_at_most_five_rows_are_listed_but_all_are_counted(table, columns):
    table.loc[:9, "gender"] = 7
    message = validation_error(table, columns)
    assert "fails in 10 row(s), e.g. rows 1, 2, 3, 4, 5 (" in message


def test_every_problem_is_reported_at_once(table, columns):
    table.loc[0, "Age"] = 200
    table.loc[1, "Churn"] = 3
    table = table.drop(columns=["Partner"])
    lines = problem_lines(validation_error(table, columns))
    assert len(lines) == 3
    assert any("Partner" in line for line in lines)
    assert any("'Age'" in line and "rows 1" in line for line in lines)
    assert any("'Churn'" in line and "rows 2" in line for line in lines)


def test_empty_table_is_rejected(table, columns):
    message = validation_error(table.iloc[:0], columns)
    assert "no rows" in message


def test_duplicate_index_labels_still_give_a_clear_error(columns):
    first, second = make_synthetic_customers(5, seed=1), make_synthetic_customers(5, seed=2)
    second.loc[2, "Age"] = -1
    message = validation_error(pd.concat([first, second]), columns)
    assert re.search(r"column 'Age'.*rows 8\b", message)


@pytest.mark.parametrize("breakage", ["missing", "text"])
def test_broken_contract_column_gives_no_empty_rule_line(table, columns, breakage):
    if breakage == "missing":
        table = table.drop(columns=["Contract_period"])
    else:
        table["Contract_period"] = table["Contract_period"].astype(object)
        table.loc[1, "Contract_period"] = "twelve"
    message = validation_error(table, columns)
    assert "Contract_period" in message
    assert "0 row(s)" not in message


# ---------------------------------------------------------------- validate_customers: good input


def test_valid_table_passes_with_schema_dtypes(table, columns):
    out, extra = validate_customers(table, columns, "Churn")
    assert extra == []
    assert list(out.columns) == list(columns)
    for name, rule in columns.items():
        expected = "int64" if rule["kind"] == "int" else "float64"
        assert str(out[name].dtype) == expected, name
    pd.testing.assert_frame_equal(out, table[list(columns)], check_dtype=False)


def test_float_encoded_whole_numbers_become_int64(table, columns):
    table["Age"] = table["Age"].astype(float)
    out, _ = validate_customers(table, columns, "Churn")
    assert out["Age"].dtype == np.int64
    assert out["Age"].tolist() == table["Age"].astype(int).tolist()


def test_contract_period_three_is_accepted(table, columns):
    table.loc[0, "Contract_period"] = 3
    table.loc[0, "Month_to_end_contract"] = 3
    out, _ = validate_customers(table, columns, "Churn")
    assert out.loc[0, "Contract_period"] == 3


def test_extra_columns_are_returned_not_validated(table, columns):
    table.insert(0, "customer_id", [f"c{i}" for i in range(len(table))])
    out, extra = validate_customers(table, columns, "Churn")
    assert extra == ["customer_id"]
    assert "customer_id" not in out.columns


def test_target_may_be_absent_when_not_required(table, columns):
    out, _ = validate_customers(table.drop(columns=["Churn"]), columns, "Churn",
                                require_target=False)
    assert "Churn" not in out.columns
    assert len(out.columns) == len(columns) - 1
    message = validation_error(table.drop(columns=["Churn"]), columns)
    assert "missing column(s): Churn" in message


def test_load_customers_drops_extra_columns_with_a_warning(tmp_path, table, data_cfg):
    table.insert(0, "customer_id", range(len(table)))
    path = tmp_path / "with_ids.csv"
    table.to_csv(path, index=False)
    cfg = compose_config(overrides=[f"data.path={path}", "data.shared_path=null", "data.url=null"])
    with pytest.warns(UserWarning, match="customer_id"):
        df, provenance = load_customers(cfg.data)
    assert list(df.columns) == list(data_cfg.columns)
    assert provenance == {"path": str(path), "sha256": file_sha256(path), "rows": len(table),
                          "stored_kinds": {c: "float" if table[c].dtype.kind == "f" else "int"
                                           for c in table.columns if c != "customer_id"}}


# ---------------------------------------------------------------- read_customers


def test_read_customers_unknown_suffix(tmp_path):
    path = tmp_path / "customers.json"
    path.write_text("{}")
    with pytest.raises(GymchurnError, match=r"unknown file type '\.json'.*\.csv or \.parquet"):
        read_customers(path)


def test_read_customers_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(GymchurnError, match="could not read .*empty.csv as CSV: the file is empty"):
        read_customers(path)


def test_read_customers_missing_file(tmp_path, monkeypatch):
    with pytest.raises(GymchurnError, match="file not found: .*nowhere.csv. Check"):
        read_customers(tmp_path / "nowhere.csv")
    monkeypatch.chdir(tmp_path)  # a relative path: the message says where it was looked for
    with pytest.raises(GymchurnError) as info:
        read_customers("nowhere.csv")
    assert str(info.value) == f"file not found: nowhere.csv (looked in {tmp_path}). Check the path."


def test_read_customers_corrupt_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(GymchurnError, match="as PARQUET"):
        read_customers(path)


def test_parquet_round_trip(tmp_path, table):
    path = tmp_path / "customers.parquet"
    table.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(read_customers(path), table)


def test_csv_round_trip_validates(tmp_path, table, columns):
    path = tmp_path / "customers.csv"
    table.to_csv(path, index=False)
    out, _ = validate_customers(read_customers(path, list(columns)), columns, "Churn")
    pd.testing.assert_frame_equal(out, table[list(columns)], check_dtype=False)


# ---------------------------------------------------------------- read_customers: files as people make them

IDS = ["007", "0042", "1e3", "00", "1.50"]  # all look like numbers: read as such they change


def with_ids(table):
    table = table.head(len(IDS)).copy()
    table.insert(0, "member_id", IDS)
    return table


def read_valid(path, columns):
    raw = read_customers(path, list(columns))
    return raw, validate_customers(raw, columns, "Churn")[0]


def test_spreadsheet_csv_utf8_with_a_byte_order_mark_keeps_ids_as_written(tmp_path, table, columns):
    path = tmp_path / "customers.csv"
    with_ids(table).to_csv(path, index=False, encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfmember_id,")
    raw, out = read_valid(path, columns)
    assert list(raw.columns)[:2] == ["member_id", "gender"]
    assert raw["member_id"].tolist() == IDS
    pd.testing.assert_frame_equal(out, table.head(len(IDS))[list(columns)], check_dtype=False)


def test_semicolon_file_with_decimal_commas_is_read_as_numbers(tmp_path, table, columns):
    path = tmp_path / "customers.csv"
    with_ids(table).to_csv(path, index=False, sep=";", decimal=",")  # a European spreadsheet
    assert re.search(r";\d+,\d+;", path.read_text())  # decimal commas between semicolons
    raw, out = read_valid(path, columns)
    assert raw["member_id"].tolist() == IDS
    pd.testing.assert_frame_equal(out, table.head(len(IDS))[list(columns)], check_dtype=False)


def test_tab_separated_file_is_read(tmp_path, table, columns):
    path = tmp_path / "customers.csv"
    with_ids(table).to_csv(path, index=False, sep="\t")
    raw, out = read_valid(path, columns)
    assert raw["member_id"].tolist() == IDS
    pd.testing.assert_frame_equal(out, table.head(len(IDS))[list(columns)], check_dtype=False)


def test_a_decimal_comma_in_a_comma_separated_file_is_reported_with_its_value(tmp_path, table,
                                                                              columns):
    table["Avg_additional_charges_total"] = table["Avg_additional_charges_total"].map(
        lambda v: f"{v:.2f}".replace(".", ","))
    table.to_csv(tmp_path / "customers.csv", index=False)  # quoted: "208,69"
    message = validation_error(read_customers(tmp_path / "customers.csv", list(columns)), columns)
    assert "column 'Avg_additional_charges_total': rule 'not a number' fails in 20 row(s)" in message
    assert re.search(r"values: '\d+,\d\d'", message)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_header_spaces_and_letter_case_are_matched_to_the_schema(tmp_path, table, columns, suffix):
    messy = with_ids(table).rename(columns={"Age": " age ", "gender": "GENDER", "Churn": "churn\t",
                                            "member_id": " member_id "})
    path = tmp_path / f"customers{suffix}"
    messy.to_csv(path, index=False) if suffix == ".csv" else messy.to_parquet(path, index=False)
    raw, out = read_valid(path, columns)
    assert list(raw.columns) == ["member_id", *SCHEMA_ORDER]  # the schema's spelling
    assert raw["member_id"].tolist() == IDS
    pd.testing.assert_frame_equal(out, table.head(len(IDS))[list(columns)], check_dtype=False)


@pytest.mark.parametrize(("names", "expected"), [
    (["Age", "Age"], "names the same column more than once: 'Age' (2 times)"),
    (["Age", " age"], "'Age' and ' age' (all read as 'Age')"),
    (["note", "note "], "'note' and 'note ' (all read as 'note')"),
])
def test_a_column_named_twice_is_refused_naming_it(tmp_path, table, columns, names, expected):
    table = table.drop(columns="Age").assign(first=table["Age"], second=table["Age"])
    table.columns = [*table.columns[:-2], *names]  # pandas writes repeated names as they are
    path = tmp_path / "customers.csv"
    table.to_csv(path, index=False)
    with pytest.raises(GymchurnError, match="more than once") as info:
        read_customers(path, list(columns))
    assert expected in str(info.value) and "Keep one column of each name" in str(info.value)


def test_a_parquet_file_with_a_repeated_column_is_refused_naming_it(tmp_path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "customers.parquet"
    pq.write_table(pa.table([pa.array([30]), pa.array([31])], names=["Age", "Age"]), path)
    with pytest.raises(GymchurnError, match=r"names the same column more than once: 'Age' \(2"):
        read_customers(path, list(columns))


def test_a_file_that_is_not_utf8_says_how_to_save_it(tmp_path, table, columns):
    path = tmp_path / "customers.csv"
    table.head(3).assign(note="café").to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(GymchurnError, match="is not UTF-8 text .* Save it as 'CSV UTF-8'"):
        read_customers(path, list(columns))


def test_missing_columns_are_shown_with_the_columns_as_read(tmp_path, table, columns):
    path = tmp_path / "customers.csv"
    table.to_csv(path, index=False, sep="|")  # a separator the reader does not try
    message = validation_error(read_customers(path, list(columns)), columns)
    assert "missing column(s): Age" in message
    assert "The table's 1 column(s) as read: 'gender|Near_Location|Partner" in message


# ---------------------------------------------------------------- ensure_data_file

PAYLOAD = b"gender,Age\n1,30\n0,25\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def http_root(tmp_path):
    """(folder, base URL) of a loopback HTTP server serving that folder."""
    root = tmp_path / "served"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_url():
    """A loopback URL on a port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.csv"


def data_location(tmp_path, **kwargs):
    target_dir = tmp_path / "target"
    cfg = {"path": str(target_dir / "gym.csv"), "shared_path": None, "url": None,
           "sha256": PAYLOAD_SHA}
    cfg.update(kwargs)
    return cfg, target_dir


def test_existing_file_is_used_as_is(tmp_path, closed_url):
    cfg, target_dir = data_location(tmp_path, url=closed_url, sha256="0" * 64)
    target_dir.mkdir()
    (target_dir / "gym.csv").write_bytes(b"already here")
    assert ensure_data_file(cfg) == target_dir / "gym.csv"
    assert (target_dir / "gym.csv").read_bytes() == b"already here"


def test_copies_from_shared_path(tmp_path, closed_url):
    shared = tmp_path / "shared" / "gym.csv"
    shared.parent.mkdir()
    shared.write_bytes(PAYLOAD)
    cfg, target_dir = data_location(tmp_path, shared_path=str(shared), url=closed_url)
    path = ensure_data_file(cfg)
    assert path == target_dir / "gym.csv"
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in target_dir.iterdir()] == ["gym.csv"]


def test_downloads_and_verifies(tmp_path, http_root):
    root, base = http_root
    (root / "gym.csv").write_bytes(PAYLOAD)
    cfg, target_dir = data_location(tmp_path, url=f"{base}/gym.csv")
    path = ensure_data_file(cfg)
    assert path.read_bytes() == PAYLOAD
    assert file_sha256(path) == PAYLOAD_SHA
    assert [p.name for p in target_dir.iterdir()] == ["gym.csv"]


def test_corrupted_download_is_not_kept(tmp_path, http_root):
    root, base = http_root
    (root / "gym.csv").write_bytes(PAYLOAD + b"1,99\n")  # not the file the sha256 names
    cfg, target_dir = data_location(tmp_path, url=f"{base}/gym.csv")
    with pytest.raises(GymchurnError) as info:
        ensure_data_file(cfg)
    message = str(info.value)
    assert PAYLOAD_SHA in message and "not kept" in message
    assert list(target_dir.iterdir()) == []  # neither the file nor a .part temp file


def test_http_error_says_where_to_put_the_file(tmp_path, http_root):
    _, base = http_root
    cfg, target_dir = data_location(tmp_path, url=f"{base}/no-such-file.csv")
    with pytest.raises(GymchurnError, match=r"Put gym_churn_us.csv at .*gym\.csv"):
        ensure_data_file(cfg)
    assert list(target_dir.iterdir()) == []


def test_unreachable_url_says_where_to_put_the_file(tmp_path, closed_url):
    cfg, target_dir = data_location(tmp_path, url=closed_url)
    with pytest.raises(GymchurnError) as info:
        ensure_data_file(cfg)
    message = str(info.value)
    assert f"Put gym_churn_us.csv at {target_dir / 'gym.csv'}" in message
    assert "data.path=" in message
    assert closed_url in message
    assert not (target_dir / "gym.csv").exists()
    assert not list(target_dir.glob("*.part")) and not list(target_dir.glob(".*.part"))


def test_no_source_at_all_says_where_to_put_the_file(tmp_path):
    cfg, target_dir = data_location(tmp_path)
    with pytest.raises(GymchurnError, match=r"missing\. Put gym_churn_us.csv there"):
        ensure_data_file(cfg)


def test_corrupted_shared_copy_is_not_kept(tmp_path, closed_url):
    shared = tmp_path / "shared" / "gym.csv"
    shared.parent.mkdir()
    shared.write_bytes(PAYLOAD[:-5])  # truncated
    cfg, target_dir = data_location(tmp_path, shared_path=str(shared), url=closed_url)
    with pytest.raises(GymchurnError):
        ensure_data_file(cfg)
    assert not target_dir.exists() or list(target_dir.iterdir()) == []


# ---------------------------------------------------------------- synthetic data and digest


def test_synthetic_customers_pass_validation(columns):
    df = make_synthetic_customers(300, seed=3)
    assert df.attrs["synthetic"] is True
    assert list(df.columns) == SCHEMA_ORDER
    out, extra = validate_customers(df, columns, "Churn")
    assert extra == [] and len(out) == 300


def test_synthetic_customers_look_like_the_real_table():
    df = make_synthetic_customers(5000, seed=0)
    assert 0.2 <= df["Churn"].mean() <= 0.33
    lifetime = df.groupby("Churn")["Lifetime"].mean()
    assert lifetime[1] < lifetime[0]


def test_synthetic_customers_are_reproducible_by_seed():
    pd.testing.assert_frame_equal(make_synthetic_customers(50, seed=4),
                                  make_synthetic_customers(50, seed=4))
    assert not make_synthetic_customers(50, seed=4).equals(make_synthetic_customers(50, seed=5))


def test_table_digest_tracks_content(table):
    digest = table_digest(table)
    assert len(digest) == 64
    assert table_digest(table) == digest
    assert table_digest(table.copy()) == digest
    changed = table.copy()
    changed.loc[10, "Avg_additional_charges_total"] += 0.01
    assert table_digest(changed) != digest
    assert not table.iloc[0].equals(table.iloc[1])
    swapped = table.iloc[[1, 0, *range(2, len(table))]].reset_index(drop=True)
    assert table_digest(swapped) != digest  # same rows, different order


def test_blank_rows_a_spreadsheet_saves_below_the_table_are_not_customers(table, columns, tmp_path):
    # Review: an export ending in `,,,,` lines gave one error per column for the empty rows.
    path = tmp_path / "export.csv"
    empty = "," * (len(table.columns) - 1)
    path.write_text(table.to_csv(index=False) + f"{empty}\n{empty}\r\n")
    read = read_customers(path, list(columns))
    assert len(read) == len(table)
    validate_customers(read, columns, "Churn")  # nothing to report
    # an empty row inside the table is still a row with missing values, named by its number
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:4], empty, *lines[4:len(table) + 1]]) + "\n")
    with pytest.raises(GymchurnError, match=r"no missing values.*rows 4\b"):
        validate_customers(read_customers(path, list(columns)), columns, "Churn")
