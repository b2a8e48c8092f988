"""The tap's settings: their JSON schema and the start-up checks the schema cannot express."""

from __future__ import annotations

import ast
import difflib
import fnmatch
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from singer_sdk import typing as th

from tap_cliniko.cliniko import (
    USER_AGENT_PATTERN,
    ClinikoError,
    base_url_for_key,
    check_base_url,
)
from tap_cliniko.records import PRIVACY_MODES, UNKNOWN_FIELD_MODES

CLINIKO_REQUESTS_PER_MINUTE = 200

CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "api_key",
        th.StringType(nullable=False),
        required=True,
        secret=True,
        title="API key",
        description="Cliniko API key (My Info > Manage API keys). Its suffix (-au1, -uk2, ...)"
        " picks the shard.",
    ),
    th.Property(
        "user_agent",
        th.StringType(nullable=False),
        required=True,
        title="User-Agent",
        description="Sent as User-Agent, in Cliniko's required form 'App name (contact e-mail)',"
        " e.g. 'Acme reporting (data@acme.example)'.",
    ),
    th.Property(
        "start_date",
        th.DateTimeType(nullable=True),
        description="Sync only rows updated at or after this UTC date-time"
        " (e.g. 2024-01-01T00:00:00Z). A stored bookmark wins when it is later."
        " Full-table streams always read every row.",
    ),
    th.Property(
        "base_url",
        th.StringType(nullable=True),
        description="Override the API base URL (a proxy, or the local Cliniko). HTTPS only,"
        " except loopback addresses. Default: https://api.{shard}.cliniko.com/v1.",
    ),
    th.Property(
        "per_page",
        th.IntegerType(nullable=False, minimum=1, maximum=100),
        default=100,
        description="Records per request, 1 to 100.",
    ),
    th.Property(
        "request_timeout",
        th.IntegerType(nullable=False, minimum=1, maximum=600),
        default=60,
        description="Seconds one response may take, from the request to its last byte, before"
        " it is retried.",
    ),
    th.Property(
        "max_requests_per_minute",
        th.IntegerType(nullable=False, minimum=0, maximum=CLINIKO_REQUESTS_PER_MINUTE),
        default=190,
        description="Client-side request budget per rolling minute, shared by all streams"
        " (Cliniko allows 200 per user). 0 turns the throttle off: only for the local Cliniko"
        " or a proxy that limits for you.",
    ),
    th.Property(
        "max_concurrency",
        th.IntegerType(nullable=False, minimum=1, maximum=32),
        default=8,
        description="Most requests in flight at once, shared by all streams (Cliniko documents"
        " no limit; 8 stays polite and reaches the per-minute budget at any round trip).",
    ),
    th.Property(
        "max_retry_seconds",
        th.IntegerType(nullable=False, minimum=0, maximum=3600),
        default=600,
        description="How long one request may keep retrying (rate limits, 5xx, timeouts)"
        " before the sync fails.",
    ),
    th.Property(
        "lookback_seconds",
        th.IntegerType(nullable=False, minimum=0, maximum=86400),
        default=300,
        description="How far before Cliniko's clock at the start of a stream the saved bookmark"
        " stays, so that a row saved by another of Cliniko's machines while the stream was"
        " read is read again next time (duplicates are possible, losses are not).",
    ),
    th.Property(
        "full_reread_days",
        th.NumberType(nullable=False, minimum=0),
        default=7,
        description="Re-read a stream's whole list when its last whole read is older than this"
        " many days, repairing anything an incremental run cannot see (an unarchived patient"
        " whose updated_at did not move, a clock fault). 0: every run.",
    ),
    th.Property(
        "emit_activate_version_messages",
        th.BooleanType(nullable=False),
        default=True,
        description="Send ACTIVATE_VERSION for full-table streams, so that targets which"
        " support it drop rows that are gone from Cliniko. Incremental streams never send it.",
    ),
    th.Property(
        "unknown_fields",
        th.StringType(nullable=False, allowed_values=list(UNKNOWN_FIELD_MODES)),
        default="drop",
        description="What to do with fields Cliniko sends that a stream's schema lacks (the"
        " run names them either way): 'drop' them, or 'keep' them in the record's"
        " `unknown_fields` object, so no new field is lost (a new field of a health-data"
        " API may be sensitive: passing it on is your decision; privacy_redaction blanks it).",
    ),
    th.Property(
        "privacy_redaction",
        th.StringType(nullable=False, allowed_values=list(PRIVACY_MODES)),
        default="off",
        description="Blank personal fields of patients who rejected the privacy policy"
        " ('rejected'), or also of those who never answered ('rejected_or_unanswered'),"
        " in the patient streams and in every row of other streams that names such a"
        " patient. 'off' emits everything.",
    ),
).to_dict()


#: The SDK's own settings, described for this tap (the SDK's text is generic) and with the
#: defaults the SDK applies (it declares none): what --about, plugin.yaml and README say.
SDK_SETTINGS: dict[str, dict[str, Any]] = {
    "stream_maps": {
        "description": 'The SDK\'s stream maps: hash, drop or add fields (`"*"` matches every'
        " selected stream; read a field some stream lacks as `record.get('field')`); see"
        " README's Privacy."
    },
    "stream_map_config": {
        "description": "Values stream maps read as `config['...']`, e.g. a hashing salt."
    },
    "faker_config": {"description": "Seed and locales for `fake` in stream maps."},
    "flattening_enabled": {
        "description": "Flatten nested objects into `name__field` columns (needs"
        " `flattening_max_depth`)."
    },
    "flattening_max_depth": {
        "description": "How many levels of nesting to flatten (1 is enough for CSV)."
    },
    "flattening_max_key_length": {
        "description": "The longest flattened column name.",
        "default": 255,
    },
    "flattening_separator": {
        "description": "Between the parts of a flattened column name.",
        "default": "__",
    },
    "batch_config": {
        "description": "Write BATCH files instead of RECORD messages: `jsonl`, `gzip` or"
        " `none`; refused with stream maps, flattening or deselected fields (README: Settings)."
    },
}


def describe_sdk_settings(config_jsonschema: dict[str, Any]) -> None:
    """Give the SDK's settings in config_jsonschema this tap's descriptions and defaults."""
    properties = config_jsonschema.setdefault("properties", {})
    for name, words in SDK_SETTINGS.items():
        if name in properties:  # a copy: the SDK's own schema constants stay as they are
            properties[name] = {**properties[name], **words}


def resolve_base_url(config: Mapping[str, Any]) -> str:
    """Return the API base URL: base_url when set, else the key's shard URL."""
    if config.get("base_url"):
        return check_base_url(str(config["base_url"]))
    return base_url_for_key(str(config["api_key"]))


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse at start-up, in one line, what the JSON schema cannot check."""
    api_key = config.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        raise ClinikoError(
            "api_key is missing or empty: set it (TAP_CLINIKO_API_KEY, or api_key in the config)"
        )
    if any(character.isspace() for character in api_key):
        raise ClinikoError(
            "api_key holds a space or a line break (at its start or end?): set it to the key"
            " alone, as Cliniko's My Info > Manage API keys shows it"
        )
    user_agent = config.get("user_agent")
    if not isinstance(user_agent, str) or not USER_AGENT_PATTERN.match(user_agent):
        raise ClinikoError(
            "user_agent must name your app and a contact e-mail, as Cliniko requires:"
            " e.g. 'Acme reporting (data@acme.example)'"
        )
    start_date = config.get("start_date")
    if start_date is not None and not _is_datetime(start_date):
        raise ClinikoError(
            "start_date is not a date-time: use ISO 8601 in UTC, e.g. 2024-01-01T00:00:00Z"
        )
    if config.get("flattening_enabled") and config.get("flattening_max_depth") is None:
        raise ClinikoError(
            "flattening_enabled needs flattening_max_depth too: set it to how many levels of"
            " nested objects to flatten, e.g. 1"
        )
    resolve_base_url(config)


#: How alike (difflib's ratio) a key and a setting are when the key is a typo of it: every
#: one-letter slip of a setting is 0.9 or more; other tools' settings (`start_time`, 0.8;
#: `process_activate_version_messages`, 0.86) are less.
TYPO = 0.9


def check_config_keys(config: Mapping[str, Any], known: frozenset[str]) -> list[str]:
    """Refuse a key that looks like a misspelt setting; return the other unknown keys.

    A misspelt `privacy_redaction` would be ignored and blank nothing, so a key within a
    typo of a setting (`perpage`, `start-date`, `Privacy_Redaction`) stops the tap; a key
    like nothing the tap has (another tool's setting in a shared file: a target's
    `process_activate_version_messages`, another tap's `start_time`) is only reported.
    """
    unknown = sorted(key for key in config if key not in known)
    ignored = []
    for key in unknown:
        spelt = key.strip().lower().replace("-", "_").replace(" ", "_")
        near = [spelt] if spelt in known else difflib.get_close_matches(spelt, known, 1, TYPO)
        if near and near[0] not in config:  # with the setting itself there, no misspelling
            raise ClinikoError(
                f"the config key {key!r} is not a setting of tap-cliniko: did you mean"
                f" {near[0]!r}? Rename it (tap-cliniko --about lists every setting)"
            )
        ignored.append(key)
    return ignored


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


STATE_EXAMPLE = '{"bookmarks": {"patients": {"replication_key_value": "2024-01-01T00:00:00Z"}}}'
NO_STATE = "fix it, or leave out --state to start a full sync"


def state_from_document(document: object) -> tuple[dict[str, Any], str | None]:
    """Return the Singer state a state file holds, and what it was wrapped in, if anything.

    Meltano's `state get` wraps the state in {"singer_state": ...} and a target's output line
    is a whole STATE message; both are unwrapped, because ignoring them would silently turn
    an incremental run into a full one.
    """
    wrapper = None
    if isinstance(document, dict) and "bookmarks" not in document:
        if "singer_state" in document:
            document, wrapper = document["singer_state"], 'Meltano\'s {"singer_state": ...}'
        elif document.get("type") == "STATE" and "value" in document:
            document, wrapper = document["value"], 'a whole {"type": "STATE"} message'
    if not isinstance(document, dict):
        raise ClinikoError(f"does not hold a JSON object such as {STATE_EXAMPLE}: {NO_STATE}")
    if document and "bookmarks" not in document and set(document) - {"currently_syncing"}:
        raise ClinikoError(
            f"holds no 'bookmarks': pass the state the tap or target last emitted, such as"
            f" {STATE_EXAMPLE}, or {NO_STATE.removeprefix('fix it, or ')}"
        )
    bookmarks = document.get("bookmarks", {})
    if not isinstance(bookmarks, dict):
        raise ClinikoError(f"has 'bookmarks' that do not map stream names to objects: {NO_STATE}")
    for stream, stream_state in bookmarks.items():
        _check_stream_state(stream, stream_state)
    return document, wrapper


def _check_stream_state(stream: str, stream_state: object) -> None:
    where = f"bookmarks.{stream}"
    if not isinstance(stream_state, dict):
        raise ClinikoError(f"has {where} that is not an object, as in {STATE_EXAMPLE}: {NO_STATE}")
    value = stream_state.get("replication_key_value")
    if value is not None and not _is_datetime(value):
        raise ClinikoError(
            f"has {where}.replication_key_value that is not a date-time"
            f" (e.g. 2024-01-01T00:00:00Z): {NO_STATE}"
        )
    for key in ("progress_markers", "unsearchable_filters"):
        if not isinstance(stream_state.get(key, {}), dict):
            raise ClinikoError(f"has {where}.{key} that is not an object: {NO_STATE}")


DISCOVER = "run tap-cliniko --discover for a fresh catalog"


def check_catalog(document: object, known_streams: frozenset[str]) -> None:
    """Refuse a catalog whose shape the SDK would trip over later, in one line."""
    streams = document.get("streams") if isinstance(document, dict) else None
    if not isinstance(streams, list):
        raise ClinikoError(f"holds no list of 'streams': {DISCOVER}")
    for index, entry in enumerate(streams):
        if not isinstance(entry, dict):
            raise ClinikoError(f"has streams[{index}] that is not an object: {DISCOVER}")
        name = entry.get("tap_stream_id") or entry.get("stream")
        if name not in known_streams:
            raise ClinikoError(
                f"names an unknown stream {name!r} (this tap has"
                f" {', '.join(sorted(known_streams))}): {DISCOVER}"
            )
        schema = entry.get("schema")
        if not isinstance(schema, dict):
            raise ClinikoError(f"has stream {name!r} without a schema object: {DISCOVER}")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict) or not all(
            isinstance(p, dict) for p in properties.values()
        ):
            raise ClinikoError(
                f"has stream {name!r} whose schema properties are not objects: {DISCOVER}"
            )
        metadata = entry.get("metadata", [])
        if not isinstance(metadata, list) or not all(
            isinstance(item, dict)
            and isinstance(item.get("breadcrumb"), list)
            and isinstance(item.get("metadata"), dict)
            for item in metadata
        ):
            raise ClinikoError(
                f"has stream {name!r} with malformed metadata (a list of {{'breadcrumb': [...],"
                f" 'metadata': {{...}}}} is expected): {DISCOVER}"
            )
        _check_keys(name, entry, metadata)


def _check_keys(name: str, entry: dict[str, Any], metadata: list[dict[str, Any]]) -> None:
    """The stream's keys as the tap has them: the SDK would fail mid-sync on others."""
    top: dict[str, Any] = next((m["metadata"] for m in metadata if m["breadcrumb"] == []), {})
    for replication_key in (entry.get("replication_key"), top.get("replication-key")):
        if replication_key not in (None, "updated_at"):
            raise ClinikoError(
                f"sets the replication key of stream {name!r} to {replication_key!r}; this"
                f" tap bookmarks on updated_at only: {DISCOVER}"
            )
    for keys in (entry.get("key_properties"), top.get("table-key-properties")):
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
        ):
            raise ClinikoError(
                f"has stream {name!r} whose key properties are not a list of names: {DISCOVER}"
            )


def check_batch_config(config: Mapping[str, Any], fields_deselected: bool) -> None:
    """Refuse BATCH output combined with what the SDK does not apply to batch files.

    The SDK writes batch files from the records before stream maps, flattening and field
    selection apply, so hashed or dropped fields would reach them in clear.
    """
    batch = config.get("batch_config")
    if not batch:
        return
    fmt = (batch.get("encoding") or {}).get("format") if isinstance(batch, dict) else None
    if fmt == "parquet":
        raise ClinikoError(
            "batch_config format 'parquet' is not supported: use format 'jsonl'"
            " (with compression 'gzip' or 'none')"
        )
    unapplied = [
        name
        for name, used in (
            ("stream_maps", bool(config.get("stream_maps"))),
            ("flattening_enabled", bool(config.get("flattening_enabled"))),
            ("a catalog that deselects fields", fields_deselected),
        )
        if used
    ]
    if unapplied:
        raise ClinikoError(
            f"batch_config cannot be combined with {' or '.join(unapplied)}: the SDK writes"
            " batch files before maps, flattening and field selection apply, so dropped or"
            " hashed fields would reach them; remove batch_config (or the other setting)"
        )


#: Names a stream map expression has besides the record's fields (singer_sdk.mapper).
MAP_NAMES = frozenset(
    {"record", "_", "config", "fake", "__stream_name__", "__original_stream_name__"}
    | {"float", "int", "rand", "randint", "str", "md5", "sha256", "datetime", "bool", "json"}
)
#: The stream map value that drops a field (or a whole stream).
NULL = "__NULL__"
#: Stream map options whose values are no expression on the record.
MAP_OPTIONS = frozenset({"__source__", "__alias__", "__key_properties__", "__else__"})


def check_stream_maps(stream_maps: object, fields: Mapping[str, frozenset[str]]) -> None:
    """Refuse a map that reads a field some stream it applies to lacks, naming both.

    fields: the selected streams' top-level fields. A map keyed "*" applies to every
    stream, and `record['email']` in a stream without email would fail mid-sync, after
    output was written; `record.get('email')` or `'email' in record` reads it safely.
    """
    if not isinstance(stream_maps, Mapping):
        return
    for key, definition in stream_maps.items():
        if not isinstance(definition, Mapping) or str(key).startswith("__"):
            continue
        source = str(definition.get("__source__", key))
        for stream in sorted(fields):
            if stream != source and not fnmatch.fnmatchcase(stream, source):
                continue
            for prop, expression in definition.items():
                if prop in MAP_OPTIONS or not isinstance(expression, str) or expression == NULL:
                    continue
                missing = sorted(fields_read(expression, prop) - fields[stream])
                if missing:
                    raise ClinikoError(
                        f"stream_maps {key!r} reads {missing[0]!r} (in {prop!r}), which stream"
                        f" {stream!r} does not have: read it as record.get('{missing[0]}'), or"
                        " key the map by the streams that have it"
                    )


def fields_read(expression: str, prop: str) -> frozenset[str]:
    """The record fields a stream map expression reads without checking they exist.

    `record['f']`, `_['f']`, a bare `f` and `self` (the mapped property) read a field;
    `record.get('f')` or `'f' in record` anywhere in the expression guards it.
    """
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return frozenset()  # the SDK refuses it, in its own words
    read: set[str] = set()
    guarded: set[str] = set()
    bound = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.comprehension)
        for target in ast.walk(node.target)
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_record(node.value):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                read.add(node.slice.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and _is_record(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            guarded.add(str(node.args[0].value))
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
            if any(isinstance(op, ast.In | ast.NotIn) for op in node.ops) and any(
                _is_record(c) for c in node.comparators
            ):
                guarded.add(str(node.left.value))
        elif isinstance(node, ast.Name) and node.id not in MAP_NAMES | bound:
            read.add(prop if node.id == "self" else node.id)
    return frozenset(read - guarded)


def _is_record(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("record", "_")
