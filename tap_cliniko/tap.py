"""TapCliniko: the settings and the stream list."""

from __future__ import annotations

import io
import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from singer_sdk import Stream, Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib.encoding.simple import Message, RecordMessage
from typing_extensions import override

from tap_cliniko.client import ClinikoAPI
from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.settings import CONFIG_SCHEMA, check_config, resolve_base_url
from tap_cliniko.streams import STREAM_NAMES, STREAM_TYPES, ConsentBook


class BufferedWriter(MsgSpecWriter):
    """msgspec output that flushes at STATE and other control messages, not every record.

    A STATE line reaches the target only together with every record before it, so a killed
    tap never leaves a target holding state that points past records it did not receive.
    Records after the last STATE are flushed with stdout when the process ends.
    """

    @override
    def write_message(self, message: Message) -> None:
        sys.stdout.buffer.write(self.format_message(message))
        if not isinstance(message, RecordMessage):
            sys.stdout.flush()


class TapCliniko(Tap):
    """Singer tap for Cliniko: patients and every other collection of the API."""

    name = "tap-cliniko"
    config_jsonschema = CONFIG_SCHEMA
    message_writer_class = BufferedWriter

    @override
    def discover_streams(self) -> list[Stream]:
        return [stream_type(self) for stream_type in STREAM_TYPES]

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        if not raise_errors:
            return super()._validate_config(raise_errors=False)
        check_config(self.config)
        if errors := super()._validate_config(raise_errors=False):
            raise ClinikoError(f"invalid config: {errors[0]}")
        return errors

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
        super().sync_all()
        selected = {s.name for s in self.streams.values() if s.selected}
        if selected and selected <= self.forbidden_streams:
            raise ClinikoError(
                "HTTP 403 on every selected stream: the API key's Cliniko user lacks permission"
                " to read them; give that user access in its role, or use another user's key"
            )

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
        )


def _option_values(argv: list[str], flag: str) -> list[str]:
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
    return values + [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{flag}=")]


def check_input_files(argv: list[str]) -> None:
    """Refuse unreadable config, state and catalog files in one line, before any output."""
    documents: dict[str, Any] = {}
    for flag in ("--config", "--state", "--catalog"):
        for path in _option_values(argv, flag):
            if flag == "--config" and path == "ENV":
                continue
            kind = flag.removeprefix("--")
            try:
                documents[kind] = json.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ClinikoError(f"cannot read the {kind} file {path}: {exc.strerror}") from None
            except ValueError:
                raise ClinikoError(
                    f"the {kind} file {path} is not valid JSON: fix it, or remove it"
                    + (" to start a full sync" if kind == "state" else "")
                ) from None
            if not isinstance(documents[kind], dict):
                raise ClinikoError(f"the {kind} file {path} must hold a JSON object")
    known = set(STREAM_NAMES)
    for entry in documents.get("catalog", {}).get("streams", []):
        name = entry.get("tap_stream_id") or entry.get("stream")
        if name not in known:
            raise ClinikoError(
                f"the catalog names an unknown stream {name!r} (this tap has"
                f" {', '.join(sorted(known))}): run tap-cliniko --discover for a fresh catalog"
            )


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


def main() -> None:
    """Run the tap's command line, turning known failures into one line on stderr."""
    use_large_stdout_buffer()
    try:
        check_input_files(sys.argv[1:])
        TapCliniko.cli()
    except ClinikoError as exc:
        print(f"tap-cliniko: error: {exc}", file=sys.stderr)
        sys.exit(1)
