"""Make the committed profiles: the doctor's report of local Cliniko accounts set up to look
like three kinds of real account. Run from the repository root:

    .venv/bin/python tests/profiles/make_profiles.py

`large_clinic.json` is the report of a 2,000-patient account with every count then multiplied
by 100 (a 200,000-patient account, as a doctor run on one would report it); replay it with
`--scale 0.01`. Every value is synthetic: the profiles hold counts, names and flags only.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tap_cliniko.doctor.probe import estimate, run
from tap_cliniko.sandbox import SandboxConfig, SandboxServer
from tap_cliniko.sandbox.resources import STORED
from tap_cliniko.sandbox.shaping import AccountShape

HERE = Path(__file__).parent
KEY = "profile0maker0key-au1"
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
ACCOUNTS: dict[str, dict[str, Any]] = {
    # A small clinic on a newer account: 16-digit ids, a field the schema lacks, rate-limit
    # headers on every answer, a clock 2 s ahead.
    "small_clinic": {
        "patients": 300,
        "collections": 0.5,
        "account": AccountShape(id_digits={r.name: 16 for r in STORED}),
        "extra_fields": ("telehealth_link",),
        "rate_limit_headers": LIMIT_HEADERS,
        "clock_offset_seconds": 2.0,
    },
    # A large group clinic: 19-digit ids above 2^53, archiving that leaves updated_at alone,
    # a key whose user may not read treatment notes.
    "large_clinic": {
        "patients": 2000,
        "collections": 1.0,
        "archive_touches_updated_at": False,
        "forbidden": ("treatment_notes",),
    },
    # An account where every variant route is gone and sort=id is ignored.
    "no_variants": {
        "patients": 400,
        "collections": 0.5,
        "variant_routes": False,
        "missing_routes": ("/practitioners/inactive",),
        "sort_mode": "ignored",
    },
}
SCALE_UP = {"large_clinic": 100}


def profile_of(name: str, settings: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    config = SandboxConfig(api_key=KEY, seed=7, data_dir=data_dir / name, **settings)
    with SandboxServer(config) as server:
        if not settings.get("archive_touches_updated_at", True):
            for record in server.store._live("patients", "archived_at IS NULL")[:20]:
                server.store.archive("patients", record["id"])  # updated_at stays
        profile = run(
            {"api_key": KEY, "base_url": server.base_url, "user_agent": "profiles (p@example.com)"},
            max_requests=400,
        )
    profile["round_trip_ms"] = 300.0  # a real account's, not 127.0.0.1's
    if factor := SCALE_UP.get(name):
        for seen in profile["collections"].values():
            counts = seen.get("counts") or {}
            for state, n in counts.items():
                if n:
                    counts[state] = n * factor
    profile["estimate"] = estimate(profile["collections"], profile["round_trip_ms"] / 1000, 190)
    profile.pop("requests", None)  # the maker's, not the account's
    return profile


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in ACCOUNTS.items():
            profile = profile_of(name, settings, Path(tmp))
            (HERE / f"{name}.json").write_text(json.dumps(profile, indent=2) + "\n")
            print(f"{name}.json: {profile['estimate']['full_sync_requests_total']} requests")


if __name__ == "__main__":
    main()
