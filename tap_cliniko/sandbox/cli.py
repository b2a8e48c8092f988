"""`cliniko-sandbox`: run a local Cliniko on 127.0.0.1 until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tap_cliniko.sandbox import SandboxConfig, SandboxServer
from tap_cliniko.sandbox.profile import ProfileError
from tap_cliniko.sandbox.profile import apply as apply_profile
from tap_cliniko.sandbox.profile import read as read_profile
from tap_cliniko.sandbox.resources import RESOURCES, STORED

#: What a --profile says of the account: these flags are refused with one.
SHAPED = (
    "patients",
    "collections",
    "behaviour",
    "shard",
    "archive_touches_updated_at",
    "unarchive_touches_updated_at",
    "variant_routes",
    "sort_mode",
    "forbidden",
    "clock_offset_seconds",
)


def parse_args(argv: list[str] | None = None) -> SandboxConfig:
    parser = argparse.ArgumentParser(prog="cliniko-sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--patients", type=int, default=3000, help="synthetic patients to seed")
    parser.add_argument(
        "--collections",
        type=float,
        default=1.0,
        help="size of the clinic around the patients (appointments, invoices, ...); 0: none",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", type=Path, default=Path(".sandbox"))
    parser.add_argument("--behaviour", choices=["current", "legacy"], default="current")
    parser.add_argument("--api-key", default="sandbox-key-au1")
    parser.add_argument("--shard", default="au1")
    parser.add_argument("--rate-limit", type=int, default=200, help="requests/min per key; 0 off")
    parser.add_argument(
        "--rate-limit-header",
        choices=["X-RateLimit-Reset", "Retry-After", "both"],
        default="X-RateLimit-Reset",
    )
    parser.add_argument(
        "--archive-touches-updated-at", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument(
        "--unarchive-touches-updated-at", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument(
        "--variant-routes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the older /…/archived, /…/deleted and /…/cancelled lists",
    )
    parser.add_argument(
        "--sort-mode", choices=["honoured", "ignored", "refused"], default="honoured"
    )
    parser.add_argument(
        "--forbidden",
        action="append",
        default=[],
        metavar="COLLECTION",
        help="a collection the key may not read (403); repeatable",
    )
    parser.add_argument("--clock-offset-seconds", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--truncate-rate", type=float, default=0.0)
    parser.add_argument("--html-200-rate", type=float, default=0.0)
    parser.add_argument("--midbody-drop-rate", type=float, default=0.0)
    parser.add_argument(
        "--profile",
        type=Path,
        help="a tap-cliniko-doctor --output profile: serve an account shaped like it",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="the profile's rows times this (0.01: 1%%)"
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--host must be a loopback address: this server is for local use only")
    if args.profile is None and args.scale != 1.0:
        parser.exit(2, "cliniko-sandbox: error: --scale scales a --profile: give the profile too\n")
    if args.profile is not None:
        changed = [a for a in SHAPED if getattr(args, a) != parser.get_default(a)]
        given = [f"--{a.replace('_', '-')}" for a in changed]
        if given:
            flags = ", ".join(given)
            parser.exit(2, f"cliniko-sandbox: error: {flags} cannot be given with --profile\n")
    config = SandboxConfig(
        patients=args.patients,
        collections=args.collections,
        seed=args.seed,
        data_dir=args.data_dir,
        behaviour=args.behaviour,
        api_key=args.api_key,
        shard=args.shard,
        rate_limit_per_minute=args.rate_limit,
        rate_limit_header=args.rate_limit_header,
        archive_touches_updated_at=args.archive_touches_updated_at,
        unarchive_touches_updated_at=args.unarchive_touches_updated_at,
        variant_routes=args.variant_routes,
        sort_mode=args.sort_mode,
        forbidden=tuple(args.forbidden),
        clock_offset_seconds=args.clock_offset_seconds,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        truncate_rate=args.truncate_rate,
        html_200_rate=args.html_200_rate,
        midbody_drop_rate=args.midbody_drop_rate,
        host=args.host,
        port=args.port,
    )
    if args.profile is None:
        return config
    try:  # read and checked here, so that a bad profile is one line
        return apply_profile(config, read_profile(args.profile), args.scale)
    except ProfileError as exc:
        parser.exit(2, f"cliniko-sandbox: error: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        server = SandboxServer(config)
    except OSError as exc:
        print(
            f"cliniko-sandbox: error: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    store = server.store
    rows = sum(store.count(r.name) for r in STORED)
    print(
        f"cliniko-sandbox: serving {store.count():,} patients ({rows:,} rows in"
        f" {len(RESOURCES)} collections) at {server.base_url}",
        flush=True,
    )
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
