"""tap-cliniko with the SDK's default record path: default writer, full type conformance.

Same paging and HTTP as the tap; only the per-record work differs. Used by bench.py.
"""

from __future__ import annotations

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.tap_base import Tap

from tap_cliniko.client import ClinikoStream
from tap_cliniko.streams import ArchivedPatientsStream, DeletedPatientsStream, PatientsStream
from tap_cliniko.tap import TapCliniko

for stream_class in (PatientsStream, ArchivedPatientsStream, DeletedPatientsStream):
    stream_class.TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.RECURSIVE
# Back to the SDK's own record messages (with its per-record deselection walk).
del ClinikoStream._generate_record_messages


class SDKDefaultTapCliniko(TapCliniko):
    """The tap, writing records the SDK's default way."""

    message_writer_class = Tap.message_writer_class


if __name__ == "__main__":
    SDKDefaultTapCliniko.cli()
