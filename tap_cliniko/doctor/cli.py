"""`tap-cliniko-doctor --config config.json [--output profile.json] [--max-requests N]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tap_cliniko.cliniko import ClinikoError
from tap_cliniko.doctor.probe import DEFAULT_MAX_REQUESTS, run


def report(profile: dict[str, Any]) -> str:
    """One screen for a person: what works, what differs, what cannot be read, the estimate."""
    collections = profile["collections"]
    ok = [n for n, c in collections.items() if c["status"] == "ok"]
    lines = [
        f"Cliniko account: {len(ok)} of {len(collections)} collections readable,"
        f" {profile['requests']} requests, round trip {profile['round_trip_ms']:.0f} ms",
    ]
    patients = collections.get("patients", {}).get("counts", {})
    if patients:
        states = ", ".join(f"{v:,} {k}" for k, v in patients.items() if v is not None)
        lines.append(f"  patients: {states}")
    sort = profile["sort_id"]
    if sort != "honoured":
        lines.append(f"  sort=id is {sort}: the tap reads lists in created_at order instead")
    for name, seen in collections.items():
        if seen["status"] == "forbidden":
            lines.append(f"  {name}: 403, the key's user lacks 'read {name.replace('_', ' ')}'")
        elif seen["status"] != "ok":
            lines.append(f"  {name}: {seen['status']}")
        elif seen["routes"]["deleted"] is False:
            lines.append(f"  {name}: no /deleted route, rows deleted in Cliniko are not seen")
        ignored = [f for f, v in seen["filters"].items() if v in ("ignored", "refused")]
        if ignored:
            lines.append(f"  {name}: filters {', '.join(ignored)} not honoured: read in full")
        if seen["unknown_fields"]:
            lines.append(f"  {name}: fields the schema lacks: {', '.join(seen['unknown_fields'])}")
    if profile["not_checked"]:
        lines.append(
            f"  not checked (request bound): {', '.join(profile['not_checked'])};"
            " rerun with --max-requests for a deeper look"
        )
    offset = profile["clock_offset_seconds"]
    lines.append(f"  Cliniko's clock: {'no Date header' if offset is None else f'{offset:+.1f} s'}")
    est = profile["estimate"]
    lines.append(
        f"First full sync: about {est['full_sync_requests_total']:,} requests,"
        f" {est['full_sync_seconds_at_limit']:,.0f} s at the rate limit;"
        f" a quiet incremental run about {est['quiet_incremental_requests']} requests"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tap-cliniko-doctor", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--output", type=Path, help="write the JSON profile here")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config.read_text(encoding="utf-8"))
    except OSError as exc:
        return _fail(f"cannot read --config {args.config}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        return _fail(f"--config {args.config} is not JSON ({exc.msg}, line {exc.lineno})")
    if not isinstance(config, dict):
        return _fail(f"--config {args.config} must hold a JSON object of the tap's settings")
    if args.max_requests < 10:
        return _fail("--max-requests must be at least 10")
    try:
        profile = run(
            config,
            max_requests=args.max_requests,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except ClinikoError as exc:
        return _fail(str(exc))
    sys.stdout.write(report(profile))
    if args.output:
        args.output.write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")
    return 0


def _fail(message: str) -> int:
    print(f"tap-cliniko-doctor: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
