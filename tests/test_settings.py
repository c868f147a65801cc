"""Settings: the schema's defaults, TOML and DESQ_* loading, and one-line errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from desq.settings import SCHEMA, Option, Settings, SettingsError, dump_toml, load_settings, markdown_table, value_of

ROOT = Path(__file__).resolve().parents[1]

# The example block of CONTRACT section 2, verbatim in values.
CONTRACT_EXAMPLE = """
mode = "name"
shard_bits = 8
queue_count = 4
timezone = "UTC"

[source]
db_url = "sqlite:///desq-data/source.db"
table = "files"
root = ""
uid_kind = "int"
name_prefix = ""

[source.columns]
id = "id"
created_at = "created_at"
path = "path"
des_name = "des_name"
des_shard = "des_hash_bits"
des_status = "des_status"

[archive]
url = "desq-data/archive"
s3_endpoint_url = ""
after_days = 7
delete_originals = false
big_file_bytes = 67108864

[broker]
url = ""

[web]
backends = []
api_tokens = []
original_url = ""
"""


def write(tmp_path: Path, text: str, name: str = "desq.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(config: Path | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(config, env=env or {})
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


# --- defaults and loading -------------------------------------------------------------------


def test_defaults_are_the_contracts(tmp_path: Path) -> None:
    assert load_settings(env={}) == load_settings(write(tmp_path, CONTRACT_EXAMPLE), env={}) == Settings()


def test_embedded_default_lives_under_desq_data() -> None:
    s = load_settings(env={})
    assert s.source.db_url == "sqlite:///desq-data/source.db"
    assert s.archive.url == "desq-data/archive" and s.data_dir == "desq-data" and s.broker.url == ""


def test_every_option_has_a_meaning_and_a_variable() -> None:
    assert len({o.env for o in SCHEMA}) == len(SCHEMA)
    for option in SCHEMA:
        assert option.help and re.fullmatch(r"DESQ_[A-Z0-9_]+", option.env)


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'mode = "uid"\nshard_bits = 10\nqueue_count = 8\ntimezone = "Europe/Warsaw"\n'
        '[source]\nuid_kind = "text"\n[source.columns]\nid = "uid"\n'
        '[archive]\nurl = "s3://archive-bucket/desq"\ns3_endpoint_url = "http://127.0.0.1:9000"\ndelete_originals = true\n'
        '[web]\nbackends = ["http://a:8080", "http://b:8080"]\noriginal_url = "s3://live/{uid}"\n',
    )
    s = load_settings(path, env={})
    assert (s.mode, s.shard_bits, s.queue_count, s.timezone) == ("uid", 10, 8, "Europe/Warsaw")
    assert s.source.uid_kind == "text" and s.source.columns.id == "uid" and s.archive.delete_originals is True
    assert s.web.backends == ("http://a:8080", "http://b:8080")
    assert s.layout.queue_names()[-1] == "shards-380-3ff" and str(s.zone) == "Europe/Warsaw"


def test_config_from_desq_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "shard_bits = 12\n")
    assert load_settings(env={"DESQ_CONFIG": str(path)}).shard_bits == 12


def test_variables_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "shard_bits = 12\n[archive]\nafter_days = 3\n")
    s = load_settings(path, env={"DESQ_SHARD_BITS": "10", "DESQ_ARCHIVE_URL": "s3://abc/x"})
    assert (s.shard_bits, s.archive.url, s.archive.after_days) == (10, "s3://abc/x", 3)


@pytest.mark.parametrize(
    ("variable", "text", "key", "expected"),
    [
        ("DESQ_SHARD_BITS", " 10 ", "shard_bits", 10),
        ("DESQ_ARCHIVE_DELETE_ORIGINALS", "yes", "archive.delete_originals", True),
        ("DESQ_ARCHIVE_DELETE_ORIGINALS", "0", "archive.delete_originals", False),
        ("DESQ_ARCHIVE_DELETE_ORIGINALS", "TRUE", "archive.delete_originals", True),
        ("DESQ_WEB_BACKENDS", "http://a:1, http://b:2", "web.backends", ("http://a:1", "http://b:2")),
        ("DESQ_WEB_BACKENDS", '["http://a:1"]', "web.backends", ("http://a:1",)),
        ("DESQ_WEB_BACKENDS", "", "web.backends", ()),
        ("DESQ_SOURCE_COLUMNS_DES_SHARD", "shard", "source.columns.des_shard", "shard"),
        ("DESQ_SOURCE_DB_URL", "postgresql://u:p@h/db", "source.db_url", "postgresql://u:p@h/db"),
        ("DESQ_BROKER_URL", "redis://127.0.0.1:6379/0", "broker.url", "redis://127.0.0.1:6379/0"),
    ],
)
def test_variable_types(variable: str, text: str, key: str, expected: object) -> None:
    assert value_of(load_settings(env={variable: text}), key) == expected


# --- bad input: every key with a value of the wrong type ------------------------------------

WRONG_TOML = {str: "1", int: '"8"', bool: '"yes"', tuple: '"http://a:1"'}


def _toml_for(option: Option, literal: str) -> str:
    section, _, name = option.key.rpartition(".")
    return (f"[{section}]\n" if section else "") + f"{name} = {literal}\n"


@pytest.mark.parametrize("option", SCHEMA, ids=lambda o: o.key)
def test_wrong_type_in_file_names_the_key(tmp_path: Path, option: Option) -> None:
    message = error_of(write(tmp_path, _toml_for(option, WRONG_TOML[option.kind])))
    assert option.key in message and "expected" in message


@pytest.mark.parametrize("option", [o for o in SCHEMA if o.kind in (int, bool)], ids=lambda o: o.env)
def test_wrong_type_in_variable_names_the_variable(option: Option) -> None:
    message = error_of(env={option.env: "abc"})
    assert message.startswith(f"{option.env} ({option.key}):")


@pytest.mark.parametrize(
    ("key", "literal", "words"),
    [
        ("shard_bits", "40", "between 1 and 16"),
        ("shard_bits", "0", "between 1 and 16"),
        ("shard_bits", "true", "expected an integer"),
        ("shard_bits", "8.0", "expected an integer"),
        ("queue_count", "0", "between"),
        ("mode", '"both"', "one of name, uid"),
        ("timezone", '"Mars/Olympus"', "unknown time zone"),
        ("timezone", '""', "unknown time zone"),
        ("data_dir", '" "', "must not be empty"),
        ("source.db_url", '"not a url"', "SQLAlchemy"),
        ("source.table", '""', "must not be empty"),
        ("source.uid_kind", '"uuid"', "one of int, text"),
        ("source.name_prefix", '"a_b"', "[A-Za-z0-9-]+"),
        ("source.name_prefix", '"20251120"', "8 digits"),
        ("source.columns.id", '""', "must not be empty"),
        ("archive.url", '""', "must not be empty"),
        ("archive.url", '"ftp://host/x"', "not supported"),
        ("archive.url", '"s3://ab/x"', "bucket"),
        ("archive.url", '"s3://Bad_Bucket/x"', "bucket"),
        ("archive.url", '"file://relative/x"', "absolute"),
        ("archive.s3_endpoint_url", '"localhost:9000"', "http(s) URL"),
        ("archive.s3_endpoint_url", '"http://h:99999"', "invalid port"),
        ("archive.after_days", "-1", "between 0"),
        ("archive.big_file_bytes", "0", "between 1"),
        ("broker.url", '"localhost"', "broker URL"),
        ("web.backends", '["http://a:1", "http://a:1"]', "twice"),
        ("web.backends", '["a:1"]', "http(s) URL"),
        ("web.backends", "[1]", "list of strings"),
        ("web.api_tokens", '["short"]', "16 printable"),
        ("web.api_tokens", '["has a space in the token"]', "16 printable"),
        ("web.original_url", '"s3://live/x"', "{uid}"),
        ("web.original_url", '"s3://live/{uid}/{name}"', "placeholders {uid}, {date} and {path}, not ['name']"),
        ("web.original_url", '"s3://live/{date}"', "{uid} or {path}"),
        ("web.original_url", '"s3://{path}"', "bucket, host or folder before {path}"),
        ("web.original_url", '"https://{uid}.live/{path}"', "bucket, host or folder before {path}"),
        ("web.original_url", '"file://{path}"', "bucket, host or folder before {path}"),
        ("web.original_url", '"file:///{path}"', "not /"),
        ("web.original_url", '"s3://live/{path}/{path}"', "only once"),
        ("web.original_url", '"s3://live/{path!r}"', "no format spec"),
        ("web.original_url", '"s3://live/{uid:>9}"', "no format spec"),
        ("web.original_url", '"s3://live/{uid"', "template"),
        ("web.original_url", '"ftp://live/{uid}"', "URL template"),
        ("s3.bucket", '"ab"', "not an S3 bucket name"),
        ("s3.bucket", '"Desq"', "not an S3 bucket name"),
        ("s3.bucket", '"a..b"', "not an S3 bucket name"),
        ("s3.bucket", '"-desq"', "not an S3 bucket name"),
        ("s3.bucket", '"10.0.0.1"', "IP address"),
        ("s3.bucket", '"xn--desq"', "reserves"),
        ("s3.bucket", '"metrics"', "serves itself"),
        ("s3.credentials", '["no-colon-here"]', "entry 1 is not ACCESS_KEY_ID:SECRET_ACCESS_KEY"),
        ("s3.credentials", '["AKIDEXAMPLE:has a space"]', "entry 1 is not"),
        ("s3.credentials", '["ab:long-enough-secret"]', "entry 1 is not"),
        ("s3.credentials", '["AKIDEXAMPLE:long-enough-secret", "AKIDEXAMPLE:another-secret"]', "entry 2 repeats the access key id 'AKIDEXAMPLE'"),
        ("s3.region", '"US East"', "not a region name"),
        ("s3.region", '""', "not a region name"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, key: str, literal: str, words: str) -> None:
    option = next(o for o in SCHEMA if o.key == key)
    message = error_of(write(tmp_path, _toml_for(option, literal)))
    assert key in message and words in message


def test_bad_variable_values() -> None:
    assert "between 1 and 16, got 40" in error_of(env={"DESQ_SHARD_BITS": "40"})
    assert "expected an integer, got 'abc'" in error_of(env={"DESQ_SHARD_BITS": "abc"})
    assert "expected true or false" in error_of(env={"DESQ_ARCHIVE_DELETE_ORIGINALS": "maybe"})
    assert "JSON array" in error_of(env={"DESQ_WEB_BACKENDS": "[1, 2"})
    assert "JSON array of strings" in error_of(env={"DESQ_WEB_BACKENDS": "[1, 2]"})


# --- bad input: unknown keys and broken files -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("shard_bit = 8\n", "unknown key 'shard_bit' (did you mean 'shard_bits'?)"),
        ("[source]\ntabel = 'x'\n", "unknown key 'source.tabel' (did you mean 'source.table'?)"),
        ("[source.colums]\nid = 'x'\n", "unknown key 'source.colums' (did you mean 'source.columns'?)"),
        ("[source.columns]\nuid = 'x'\n", "unknown key 'source.columns.uid'"),
        ("[cache]\nsize = 1\n", "unknown key 'cache'"),
        ("source = 'x'\n", "[source] must be a table"),
        ("[shard_bits]\nx = 1\n", "shard_bits: expected an integer, got a table"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, words: str) -> None:
    assert words in error_of(write(tmp_path, text))


def test_unknown_variable() -> None:
    assert error_of(env={"DESQ_SHARDBITS": "8"}) == "unknown setting variable DESQ_SHARDBITS (did you mean DESQ_SHARD_BITS?)"
    assert "DESQ_NOPE" in error_of(env={"DESQ_NOPE": "1"})


def test_non_setting_variables_are_allowed() -> None:
    assert load_settings(env={"DESQ_DEBUG": "1", "OTHER": "x"}) == Settings()


def test_broken_files(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "missing.toml")
    assert "is a directory" in error_of(tmp_path)
    assert "not valid TOML" in error_of(write(tmp_path, "shard_bits = = 8\n"))
    assert "not valid TOML" in error_of(write(tmp_path, "shard_bits = 8\nshard_bits = 9\n"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not" in error_of(binary)


# --- checks across keys ---------------------------------------------------------------------


def test_queue_count_beyond_the_shards(tmp_path: Path) -> None:
    assert error_of(env={"DESQ_SHARD_BITS": "1", "DESQ_QUEUE_COUNT": "4"}).startswith("DESQ_QUEUE_COUNT (queue_count):")
    assert error_of(env={"DESQ_QUEUE_COUNT": "3"}).startswith("DESQ_QUEUE_COUNT (queue_count): queue_count must be a power of two")
    path = write(tmp_path, "shard_bits = 2\nqueue_count = 8\n")
    assert error_of(path).startswith(f"{path}: queue_count:")


def test_a_column_mapped_twice() -> None:
    message = error_of(env={"DESQ_SOURCE_COLUMNS_PATH": "id"})
    assert message.startswith("DESQ_SOURCE_COLUMNS_PATH (source.columns.path)") and "already mapped" in message
    # uid mode does not use the three des_* columns, so they may repeat there.
    assert load_settings(env={"DESQ_MODE": "uid", "DESQ_SOURCE_COLUMNS_DES_NAME": "id"}).mode == "uid"


def test_result_backend_needed_for_a_non_redis_broker() -> None:
    assert "broker.result_backend" in error_of(env={"DESQ_BROKER_URL": "amqp://h//"})
    s = load_settings(env={"DESQ_BROKER_URL": "amqp://h//", "DESQ_BROKER_RESULT_BACKEND": "redis://h/1"})
    assert s.broker.result_backend == "redis://h/1"


# --- presenting -----------------------------------------------------------------------------


def test_dump_masks_secrets_and_reads_back(tmp_path: Path) -> None:
    env = {
        "DESQ_SOURCE_DB_URL": "postgresql://user:s3cret@db/files",
        "DESQ_BROKER_URL": "redis://:hunter2hunter2@cache:6379/0",
        "DESQ_WEB_API_TOKENS": "tok-0123456789abcdef",
    }
    text = dump_toml(load_settings(env=env))
    assert "s3cret" not in text and "hunter2" not in text and "tok-0123456789abcdef" not in text
    assert "postgresql://user:***@db/files" in text
    plain = dump_toml(load_settings(env={"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"}))
    assert load_settings(write(tmp_path, plain), env={}) == load_settings(env={"DESQ_SHARD_BITS": "10", "DESQ_QUEUE_COUNT": "8"})


def test_s3_credentials_are_never_shown(tmp_path: Path) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    good = load_settings(env={"DESQ_S3_CREDENTIALS": f"AKIDEXAMPLE:{secret},OTHERKEY:other-secret-1"})
    assert good.s3.secrets() == {"AKIDEXAMPLE": secret, "OTHERKEY": "other-secret-1"}
    assert secret not in dump_toml(good) and 'credentials = ["***", "***"]' in dump_toml(good)
    for bad in (f"AKIDEXAMPLE:{secret} x", f"AKIDEXAMPLE:{secret},AKIDEXAMPLE:{secret}", f"A:{secret}"):
        message = error_of(env={"DESQ_S3_CREDENTIALS": bad})
        assert message.startswith("DESQ_S3_CREDENTIALS (s3.credentials):") and secret not in message
    assert secret not in error_of(write(tmp_path, f's3.credentials = "AKIDEXAMPLE:{secret}"\n'))


def test_readme_table_matches_the_schema() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README.md's configuration table is stale: paste `desq config --markdown`"


# --- the erasure-coded archive: ec://K+M and its nodes ----------------------------------------

SIX = ["/srv/a", "file:///srv/b", "rel/c", "s3://desq-d/x", "s3://desq-e/y?endpoint=http://127.0.0.1:9000", "s3://desq-f"]


def test_an_erasure_coded_archive_takes_exactly_k_plus_m_nodes(tmp_path: Path) -> None:
    path = write(tmp_path, f'[archive]\nurl = "ec://4+2"\nnodes = {json.dumps(SIX)}\n')
    assert load_settings(path).archive.nodes == tuple(SIX)
    assert load_settings(env={"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a, b"}).archive.nodes == ("a", "b")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DESQ_ARCHIVE_URL": "ec://4+2"}, "archive.nodes: ec://4+2 needs exactly 6 nodes, 0 given"),
        ({"DESQ_ARCHIVE_URL": "ec://4+2", "DESQ_ARCHIVE_NODES": json.dumps(SIX[:5])}, "needs exactly 6 nodes, 5 given"),
        ({"DESQ_ARCHIVE_URL": "ec://0+2"}, "need K >= 1, M >= 1 and K + M <= 64"),
        ({"DESQ_ARCHIVE_URL": "ec://40+40"}, "need K >= 1, M >= 1 and K + M <= 64"),
        ({"DESQ_ARCHIVE_URL": "ec://4"}, "'ec://4' is not ec://K+M (e.g. ec://4+2)"),
        ({"DESQ_ARCHIVE_URL": "ec://4+2/x"}, "is not ec://K+M"),
        ({"DESQ_ARCHIVE_NODES": "a"}, "nodes are for an erasure-coded archive"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a, a"}, "lists a node twice"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a, ec://1+1"}, "not another ec:// archive"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a, s3://B_ad/x"}, "is not a valid bucket name"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a, s3://desq-x/p?region=eu"}, "only ?endpoint=http(s)://host:port"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a, s3://desq-x/p?endpoint=ftp://h"}, "is not an http(s) URL"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "a?endpoint=http://h:1, b"}, "only s3:// nodes take a query"),
        ({"DESQ_ARCHIVE_URL": "ec://1+1", "DESQ_ARCHIVE_NODES": "file://rel, b"}, "a file URL must be absolute"),
    ],
)
def test_bad_erasure_coded_archives(env: dict[str, str], words: str) -> None:
    assert words in error_of(env=env)
