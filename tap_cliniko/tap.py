"""TapCliniko: the settings and the stream list."""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import MapExpressionError, StreamMapConfigError, SyncLifecycleSignal
from singer_sdk.helpers._catalog import get_selected_schema
from singer_sdk.helpers._state import StateWriter
from singer_sdk.helpers.capabilities import CapabilitiesEnum, TapCapabilities
from singer_sdk.helpers.types import TapState
from singer_sdk.plugin_base import PluginBase
from singer_sdk.singerlib.encoding.simple import (
    Message,
    RecordMessage,
    SchemaMessage,
    StateMessage,
)
from singer_sdk.streams.core import Stream
from singer_sdk.tap_base import Tap
from typing_extensions import override

from tap_cliniko.api import ClinikoAPI
from tap_cliniko.client import STATE_LOCK, ClinikoStream
from tap_cliniko.cliniko import DEFAULT_SHARD, ClinikoError, has_shard_suffix
from tap_cliniko.concurrency import Feed, ReadAhead, Rows, Scheduler
from tap_cliniko.records import drop_nulls_outside
from tap_cliniko.settings import (
    CONFIG_SCHEMA,
    check_batch_config,
    check_catalog,
    check_config,
    check_config_keys,
    check_stream_maps,
    describe_sdk_settings,
    resolve_base_url,
    state_from_document,
)
from tap_cliniko.streams import STREAM_NAMES, STREAM_TYPES, ConsentBook

#: The SDK's state key for where a stream's sync starts.
STARTING_MARKER = "starting_replication_value"
#: Pages that streams waiting for their turn may hold in memory between them.
READ_AHEAD_PAGES = 50

SDK_UNHANDLED_ERROR = "An unhandled error occurred while syncing '%s'"
SDK_UNSORTED_WARNING = "Stream is assumed to be unsorted"
SDK_CONFIG_INVALID = "Config validation failed"
SDK_STARTING_LINE = "Starting incremental sync of"
SDK_METRICS_LOGGER = "singer_sdk.metrics"


class QuietKnownNoise(logging.Filter):
    """Drops SDK log lines that mislead or repeat here; README says what they meant."""

    #: True while a stream's start is worked out ahead of its turn: the SDK logs where the
    #: stream starts then, and again at its turn.
    planning = False

    #: The writer of the tap running: until Cliniko answers, it holds the output.
    writer: BufferedWriter | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == SDK_CONFIG_INVALID:
            return False
        if self.planning and str(record.msg).startswith(SDK_STARTING_LINE):
            return False
        if record.name == SDK_METRICS_LOGGER:
            # Before Cliniko has answered, metrics count nothing and bury the error line.
            return self.writer is None or self.writer.held is None
        if record.msg == SDK_UNHANDLED_ERROR:
            # Logged inside the SDK's `except`: a ClinikoError is reported by main() in one
            # line, and a lifecycle signal (--test's record limit) is no error at all.
            return not isinstance(sys.exc_info()[1], ClinikoError | SyncLifecycleSignal)
        # Bookmarks are written when a stream completes (README: How incremental syncs work).
        return not str(record.msg).startswith(SDK_UNSORTED_WARNING)


QUIET_KNOWN_NOISE = QuietKnownNoise()


class BufferedWriter(MsgSpecWriter):
    """msgspec output that flushes at STATE and other control messages, not every record.

    A STATE line reaches the target only together with every record before it, so a killed
    tap never leaves a target holding state that points past records it did not receive.
    Records after the last STATE are flushed with stdout when the process ends.
    """

    #: True while a message is being written: a signal then waits for the line to end.
    writing = False
    #: What a signal that arrived mid-write asked for, run once the line is complete.
    deferred: Callable[[], None] | None = None
    #: With flattening on: each stream's SCHEMA properties, which its records must match.
    flattened: dict[str, frozenset[str]] | None = None
    #: Lines held back until Cliniko has answered once (or a stream completed without
    #: asking): a refused key, shard or permission then leaves stdout empty. None: released.
    held: list[bytes] | None = None
    #: Cliniko's first answer may reach a page reader's thread while the writer writes.
    held_lock = threading.RLock()
    #: Whether the last message written was a STATE.
    ended_with_state = False

    def release(self) -> None:
        """Write the held lines: Cliniko has answered, so the sync is under way."""
        with self.held_lock:
            if self.held:
                sys.stdout.buffer.write(b"".join(self.held))
                sys.stdout.flush()
            self.held = None

    @override
    def write_message(self, message: Message) -> None:
        self.ended_with_state = isinstance(message, StateMessage)
        if self.flattened is not None:
            if isinstance(message, SchemaMessage):
                self.flattened[message.stream] = frozenset(message.schema.get("properties", {}))
            elif isinstance(message, RecordMessage) and message.stream in self.flattened:
                message.record = drop_nulls_outside(message.record, self.flattened[message.stream])
        if self.held is not None:
            with self.held_lock:
                if self.held is not None and not isinstance(message, StateMessage):
                    self.held.append(bytes(self.format_message(message)))
                    return
                self.release()
        self.writing = True
        try:
            sys.stdout.buffer.write(self.format_message(message))
            if not isinstance(message, RecordMessage):
                sys.stdout.flush()
        finally:
            self.writing = False
        if self.deferred is not None:
            self.deferred()


class LockedStateWriter(StateWriter):
    """The SDK's STATE writer, copying the state only while no page reader changes it."""

    @override
    def write_state(self, state: TapState) -> None:
        with STATE_LOCK:
            super().write_state(state)


class TapCliniko(Tap):
    """Singer tap for Cliniko: patients and every other collection of the API."""

    name = "tap-cliniko"
    config_jsonschema = CONFIG_SCHEMA
    message_writer_class = BufferedWriter
    # --test is the SDK's; it only needs declaring, for Meltano and the Hub definition.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [*Tap.capabilities, TapCapabilities.TEST]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name in ("singer_sdk", SDK_METRICS_LOGGER):
            logging.getLogger(name).addFilter(QUIET_KNOWN_NOISE)
        super().__init__(*args, **kwargs)
        self._state_writer = LockedStateWriter(self.message_writer)
        writer = self.message_writer
        if isinstance(writer, BufferedWriter):
            writer.held = []
            QUIET_KNOWN_NOISE.writer = writer
            if self.config.get("flattening_enabled"):
                writer.flattened = {}
        # Here, not in sync_all (final in the SDK): the catalog is known, nothing is written yet.
        deselected = any(not all(s.mask.values()) for s in self.streams.values() if s.selected)
        check_batch_config(self.config, fields_deselected=deselected)

    @override
    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict[str, Any]) -> None:
        super().append_builtin_config(config_jsonschema)
        describe_sdk_settings(config_jsonschema)

    @classmethod
    def setting_names(cls) -> frozenset[str]:
        """Every setting a config may hold: the tap's own and the SDK's."""
        settings: dict[str, Any] = {"properties": dict(cls.config_jsonschema["properties"])}
        cls.append_builtin_config(settings)
        return frozenset(settings["properties"])

    @override
    def setup_mapper(self) -> None:
        # The SDK registers a deselected stream with an empty schema, on which any "*" map
        # fails (its key `id` is gone); it writes nothing, so with stream maps its whole
        # schema is registered. Without, the empty schema (copying 42 schemas was most of
        # a tap's start-up).
        PluginBase.setup_mapper(self)
        maps = bool(self.config.get("stream_maps"))
        selected: dict[str, frozenset[str]] = {}
        registered = []
        for entry in self.catalog.streams:
            name = entry.stream or entry.tap_stream_id
            mask = entry.metadata.resolve_selection()
            if mask[()]:
                schema = get_selected_schema(name, entry.schema.to_dict(), mask)
                selected[name] = frozenset(schema.get("properties", {}))
            else:
                schema = entry.schema.to_dict() if maps else {"type": "object", "properties": {}}
            registered.append((name, schema, entry.key_properties))
        check_stream_maps(self.config.get("stream_maps"), selected)
        for name, schema, keys in registered:
            try:
                self.mapper.register_raw_stream_schema(name, schema, keys)
            except (StreamMapConfigError, MapExpressionError, NotImplementedError) as exc:
                raise ClinikoError(f"stream_maps refused for stream {name!r}: {exc}") from None

    @override
    def discover_streams(self) -> list[Stream]:
        streams: list[Stream] = [stream_type(self) for stream_type in STREAM_TYPES]
        for stream in streams:
            stream.logger.addFilter(QUIET_KNOWN_NOISE)
        return streams

    @override
    def load_state(self, state: dict[str, Any]) -> None:
        state, wrapper = state_from_document(state)
        if wrapper:
            self.logger.info("The state file held %s: using the state inside it", wrapper)
        super().load_state(state)

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        # A blocked write to stdout runs this handler mid-line: exiting there would cut a
        # record in half, so the writer finishes the line and stops then.
        writer = self.message_writer
        if isinstance(writer, BufferedWriter) and writer.writing:
            writer.deferred = lambda: self._stop(signum)
            return
        self._stop(signum)

    def _stop(self, signum: int) -> None:
        # The SDK writes the current state (bookmarks of completed streams only) and exits 0;
        # an orchestrator must see an interrupted run as failed: 128 + signal, as shells do.
        if isinstance(self.message_writer, BufferedWriter):
            self.message_writer.deferred = None
        try:
            self._state_writer.write_state(self.state)
        finally:
            sys.stdout.flush()
            silence_logging()
            print(
                f"tap-cliniko: stopped by {signal.Signals(signum).name}: the last STATE covers"
                " the streams that completed; run again to finish",
                file=sys.stderr,
            )
            sys.exit(128 + signum)

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # The SDK warns "Config validation failed" too: --discover needs no key (README),
        # and a sync gets the one error line below saying what.
        self.logger.addFilter(QUIET_KNOWN_NOISE)
        try:
            if not raise_errors:
                return super()._validate_config(raise_errors=False)
            check_config(self.config)
            # Before the SDK fills in the defaults: only the keys given count.
            ignored = check_config_keys(self.config, self.setting_names())
            errors = super()._validate_config(raise_errors=False)
        finally:
            self.logger.removeFilter(QUIET_KNOWN_NOISE)
        if errors:
            raise ClinikoError(f"invalid config: {errors[0]}")
        api_key = str(self.config["api_key"])
        if ignored:  # a key's name only, cut short, and never one that holds the API key
            names = [k[:40] if api_key not in k else "(one holding api_key)" for k in ignored]
            self.logger.warning(
                "The config holds keys tap-cliniko does not know, ignored: %s"
                " (tap-cliniko --about lists every setting)",
                ", ".join(names),
            )
        if not self.config.get("base_url") and not has_shard_suffix(api_key):
            self.logger.info(
                "api_key has no shard suffix: reading shard %s, where Cliniko keeps such keys"
                " (a 401 means the key belongs to another shard: copy it whole)",
                DEFAULT_SHARD,
            )
        return errors

    # The SDK marks write_schemas final for typing only; this extends it and changes nothing.
    @override  # type: ignore[misc]
    def write_schemas(self) -> None:
        super().write_schemas()
        # --test=schema asks Cliniko nothing, so no answer would release the SCHEMA lines.
        self._release_output()

    @cached_property
    def forbidden_streams(self) -> set[str]:
        """Streams skipped in this run because the key's user may not read them (403)."""
        return set()

    @cached_property
    def consent_book(self) -> ConsentBook | None:
        """Whose rows privacy_redaction blanks in streams that name patients (None: off)."""
        mode = self.config.get("privacy_redaction", "off")
        if mode == "off":
            return None
        return ConsentBook(self.api, mode, int(self.config.get("per_page", 100)))

    # The SDK marks sync_all final for typing only; this extends it and changes nothing inside.
    @override  # type: ignore[misc]
    def sync_all(self) -> None:
        self._reading_ahead = True
        try:
            super().sync_all()
        finally:
            self._warn_unknown_fields()
        writer = self.message_writer
        if isinstance(writer, BufferedWriter) and not writer.ended_with_state:
            # The SDK skips a STATE equal to the last one, but targets such as target-jsonl
            # keep only a STATE that follows the last record: a complete run ends with one.
            with STATE_LOCK:
                writer.write_message(StateMessage(value=self.state))
        selected = {s.name for s in self.streams.values() if s.selected}
        if selected and selected <= self.forbidden_streams:
            raise ClinikoError(
                "HTTP 403 on every selected stream: the API key's Cliniko user lacks permission"
                " to read them; give that user access in its role, or use another user's key"
            )

    def _warn_unknown_fields(self) -> None:
        """One warning per stream naming the fields Cliniko sent that its schema lacks."""
        for stream in self.streams.values():
            unknown = stream.__dict__.get("unknown_fields")  # only streams that read rows
            if unknown is not None and unknown.names:
                self.logger.warning(
                    "%s: Cliniko sent fields the schema lacks, not extracted: %s (README:"
                    " Fields the schema does not know)",
                    stream.name,
                    ", ".join(sorted(unknown.names)),
                )

    @cached_property
    def read_ahead(self) -> ReadAhead:
        """The page readers of this sync, one per selected stream (see concurrency.py)."""
        slots = int(self.config.get("max_concurrency", 8))
        return ReadAhead(self.api.scheduler, depth=max(2 * slots, 4))

    def feed_of(self, stream: ClinikoStream) -> Feed | None:
        """The pages a stream's reader has read ahead; None outside a whole sync (--test)."""
        if not getattr(self, "_reading_ahead", False):
            return None

        def reader(selected: ClinikoStream) -> Callable[[int], Iterator[Rows]]:
            def start(priority: int) -> Iterator[Rows]:
                # Where the stream starts, as the SDK works it out at the stream's turn; its
                # marker is taken out again, so STATEs written meanwhile are unchanged.
                written = STARTING_MARKER in selected.stream_state  # the first stream's turn
                QUIET_KNOWN_NOISE.planning = True  # the SDK logs the start at the turn too
                try:
                    selected._write_starting_replication_value(None)
                finally:
                    QUIET_KNOWN_NOISE.planning = False
                selected.planned_start = (selected.get_starting_timestamp(None),)
                if not written:
                    selected.stream_state.pop(STARTING_MARKER, None)
                return selected.pages(None, priority)

            return start

        order = [s for s in self.streams.values() if s.selected and isinstance(s, ClinikoStream)]
        self.read_ahead.start([(s.name, reader(s)) for s in order])
        return self.read_ahead.take(stream.name)

    @cached_property
    def api(self) -> ClinikoAPI:
        """The one Cliniko session every stream shares."""
        return ClinikoAPI(
            base_url=resolve_base_url(self.config),
            api_key=self.config["api_key"],
            user_agent=self.config["user_agent"],
            timeout=self.config.get("request_timeout", 60),
            requests_per_minute=self.config.get("max_requests_per_minute", 190),
            max_retry_seconds=self.config.get("max_retry_seconds", 600),
            on_first_answer=self._release_output,
            scheduler=Scheduler(
                int(self.config.get("max_concurrency", 8)),
                page_rows=int(self.config.get("per_page", 100)),
                reserve_rows=READ_AHEAD_PAGES * int(self.config.get("per_page", 100)),
            ),
        )

    def _release_output(self) -> None:
        if isinstance(self.message_writer, BufferedWriter):
            self.message_writer.release()


def _option_values(argv: list[str], flag: str) -> list[str]:
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
    return values + [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{flag}=")]


def check_input_files(argv: list[str]) -> None:
    """Refuse unreadable or malformed config, state and catalog files in one line, early."""
    for flag in ("--config", "--state", "--catalog"):
        for path in _option_values(argv, flag):
            if flag == "--config" and path == "ENV":
                continue
            kind = flag.removeprefix("--")
            try:
                document = json.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ClinikoError(f"cannot read the {kind} file {path}: {exc.strerror}") from None
            except ValueError:
                raise ClinikoError(
                    f"the {kind} file {path} is not valid JSON: fix it, or remove it"
                    + (" to start a full sync" if kind == "state" else "")
                ) from None
            try:
                if kind == "state":
                    state_from_document(document)
                elif kind == "catalog":
                    check_catalog(document, frozenset(STREAM_NAMES))
                elif not isinstance(document, dict):
                    raise ClinikoError("does not hold a JSON object")
            except ClinikoError as exc:
                raise ClinikoError(f"the {kind} file {path} {exc}") from None


def use_large_stdout_buffer(size: int = 1 << 20) -> None:
    """Give stdout a 1 MB buffer: one write per ~350 records instead of one per 8 KB.

    Python flushes sys.stdout on every exit short of SIGKILL, so records written after the
    last STATE still reach the target.
    """
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (embedded, or captured): leave it as it is
    sys.stdout.flush()
    raw = io.FileIO(descriptor, "w", closefd=False)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=size), encoding="utf-8")


def silence_logging() -> None:
    """Stop every log line from now on, one being written by another thread included.

    Each handler's lock is taken and kept (it is reentrant, so this thread can still
    flush and close the handlers at exit).
    """
    logging.disable()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            handler.acquire()


def main() -> None:
    """Run the tap's command line, turning known failures into one line on stderr."""
    use_large_stdout_buffer()
    try:
        check_input_files(sys.argv[1:])
        TapCliniko.cli()
    except ClinikoError as exc:
        silence_logging()  # page readers still running must not log after the error line
        print(f"tap-cliniko: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before the SDK's own handler is in place
        sys.exit(128 + signal.SIGINT)
