"""TapCliniko: the settings and the stream list."""

from __future__ import annotations

import sys
from functools import cached_property

from singer_sdk import Stream, Tap
from singer_sdk.contrib.msgspec import MsgSpecWriter
from typing_extensions import override

from tap_cliniko.client import ClinikoAPI
from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.settings import CONFIG_SCHEMA, check_config, resolve_base_url
from tap_cliniko.streams import ArchivedPatientsStream, DeletedPatientsStream, PatientsStream


class TapCliniko(Tap):
    """Singer tap for Cliniko patients."""

    name = "tap-cliniko"
    config_jsonschema = CONFIG_SCHEMA
    message_writer_class = MsgSpecWriter

    @override
    def discover_streams(self) -> list[Stream]:
        return [PatientsStream(self), ArchivedPatientsStream(self), DeletedPatientsStream(self)]

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        errors = super()._validate_config(raise_errors=False)
        if not raise_errors:
            return errors
        if errors:
            raise ClinikoError(f"invalid config: {errors[0]}")
        check_config(self.config)
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
