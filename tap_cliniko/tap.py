"""TapCliniko: the settings and the stream list."""

from __future__ import annotations

import sys
from functools import cached_property

from singer_sdk import Stream, Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib.encoding.simple import Message, RecordMessage
from typing_extensions import override

from tap_cliniko.client import ClinikoAPI
from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.settings import CONFIG_SCHEMA, check_config, resolve_base_url
from tap_cliniko.streams import ArchivedPatientsStream, DeletedPatientsStream, PatientsStream


class BufferedWriter(MsgSpecWriter):
    """msgspec output that flushes at STATE and other control messages, not every record.

    A STATE line reaches the target only together with every record before it, so a killed
    tap never leaves a target holding state that points past records it did not receive.
    """

    @override
    def write_message(self, message: Message) -> None:
        sys.stdout.buffer.write(self.format_message(message))
        if not isinstance(message, RecordMessage):
            sys.stdout.flush()


class TapCliniko(Tap):
    """Singer tap for Cliniko patients."""

    name = "tap-cliniko"
    config_jsonschema = CONFIG_SCHEMA
    message_writer_class = BufferedWriter

    @override
    def discover_streams(self) -> list[Stream]:
        return [PatientsStream(self), ArchivedPatientsStream(self), DeletedPatientsStream(self)]

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        if not raise_errors:
            return super()._validate_config(raise_errors=False)
        check_config(self.config)
        if errors := super()._validate_config(raise_errors=False):
            raise ClinikoError(f"invalid config: {errors[0]}")
        return errors

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


def main() -> None:
    """Run the tap's command line, turning known failures into one line on stderr."""
    try:
        TapCliniko.cli()
    except ClinikoError as exc:
        print(f"tap-cliniko: error: {exc}", file=sys.stderr)
        sys.exit(1)
