"""vcrpy cassettes of the core tests: how they are recorded, scrubbed and replayed.

Re-record from the local Cliniko:   python -m tests.cassettes
Re-record from a real account:      CLINIKO_API_KEY=... python -m tests.cassettes --real
A real account's patients are replaced by synthetic values before anything is written,
and no cassette ever holds the Authorization header.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import vcr

from tap_cliniko.records import KEPT_WHEN_REDACTED

CASSETTES = Path(__file__).parent / "cassettes"
RECORD_PORT = 18765
LOCAL_BASE_URL = f"http://127.0.0.1:{RECORD_PORT}/v1"
PER_PAGE = 25  # small pages, so the cassettes hold several pages per stream
# One request at a time: id windows are cut as answers arrive, so only then are the
# requests of a replay those of the recording.
RECORDED = {"per_page": PER_PAGE, "max_concurrency": 1}
# Kept from a real account: ids, links (the deleted route's only id), timestamps, consent.
# The same fields the privacy setting keeps; everything else is replaced.
KEPT = KEPT_WHEN_REDACTED
DROPPED_HEADERS = ("Authorization", "Set-Cookie", "Cookie")


def scrub_patient(patient: dict[str, Any], serial: int) -> dict[str, Any]:
    """Replace a real record's personal values with synthetic ones of the same type.

    Kept: ids, links, consent, flags and every `*_at` time (when, not who); any collection.
    """
    scrubbed: dict[str, Any] = {}
    for name, value in patient.items():
        if name in KEPT or name.endswith("_at") or value is None or isinstance(value, bool):
            scrubbed[name] = value
        elif isinstance(value, str):
            scrubbed[name] = "" if value == "" else f"synthetic {name} {serial}"
        elif isinstance(value, dict) and set(value) == {"links"}:
            scrubbed[name] = value
        elif isinstance(value, list):
            scrubbed[name] = []
        else:
            scrubbed[name] = None
    return scrubbed


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """Scrub the records of any list (patients or another collection) and cookies."""
    for header in list(response["headers"]):
        if header.title() in DROPPED_HEADERS:
            del response["headers"][header]
    body = response["body"].get("string")
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            return response
        if isinstance(data, dict):
            for key, rows in data.items():
                if key != "links" and isinstance(rows, list):
                    data[key] = [scrub_patient(r, n) for n, r in enumerate(rows, 1)]
            response["body"]["string"] = json.dumps(data).encode()
    return response


def cassette_vcr(*, record: bool, real: bool = False) -> vcr.VCR:
    """The VCR every core test and the recorder use."""
    return vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="all" if record else "none",
        match_on=["method", "scheme", "host", "port", "path", "query"],
        filter_headers=[h.lower() for h in DROPPED_HEADERS],
        before_record_response=scrub_response if real else _drop_cookies,
        decode_compressed_response=True,
    )


def use_cassette(name: str, *, record: bool = False, real: bool = False) -> Any:
    """Open the named cassette; replays may repeat a request (the standard tests re-run)."""
    return cassette_vcr(record=record, real=real).use_cassette(
        f"{name}.yaml", allow_playback_repeats=not record
    )


def _drop_cookies(response: dict[str, Any]) -> dict[str, Any]:
    for header in list(response["headers"]):
        if header.title() in DROPPED_HEADERS:
            del response["headers"][header]
    return response


def record(name: str, behaviour: str, base_url: str | None, api_key: str | None) -> None:
    """Run one full sync of the tap inside a recording cassette."""
    from tap_cliniko.sandbox import SandboxConfig, SandboxServer
    from tap_cliniko.streams import STREAM_NAMES
    from tests.conftest import SANDBOX_KEY, run_tap, tap_config

    if api_key is not None:
        config = {
            "api_key": api_key,
            "user_agent": "tap-cliniko cassettes (dev@example.com)",
            "max_concurrency": 1,
        }
        if base_url:
            config["base_url"] = base_url
        with use_cassette(name, record=True, real=True):
            run_tap(config, streams=STREAM_NAMES)
        return
    # A small clinic: several pages of patients, at least one page of every other collection.
    settings = SandboxConfig(
        patients=60,
        collections=0.25,
        seed=2024,
        behaviour=behaviour,
        api_key=SANDBOX_KEY,
        port=RECORD_PORT,
    )
    with SandboxServer(settings) as server, use_cassette(name, record=True):
        run_tap(tap_config(server.base_url, **RECORDED), streams=STREAM_NAMES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", action="store_true", help="record CLINIKO_API_KEY's account")
    args = parser.parse_args()
    if args.real:
        api_key = os.environ["CLINIKO_API_KEY"]
        record("real", "current", os.environ.get("CLINIKO_BASE_URL"), api_key)
        print(f"recorded {CASSETTES / 'real.yaml'} (patients scrubbed)")
        return 0
    for behaviour in ("legacy", "current"):
        (CASSETTES / f"{behaviour}.yaml").unlink(missing_ok=True)
        record(behaviour, behaviour, None, None)
        print(f"recorded {CASSETTES / behaviour}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
