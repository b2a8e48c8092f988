"""A doctor's profile (tap-cliniko-doctor --output) as the settings of a local Cliniko.

The local Cliniko then serves a synthetic account shaped like the profiled one: the same rows
per collection and state (times a scale), the same collections and routes missing or
forbidden, the same sort and filter behaviour, id magnitudes, unknown fields (synthetic
values of the types seen) and fields never sent, the same older or newer shapes, clock
offset and rate-limit headers. A profile holds no record value, so neither does the account.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tap_cliniko.sandbox.resources import BY_NAME
from tap_cliniko.sandbox.shaping import STATES, AccountShape, states_of

if TYPE_CHECKING:
    from tap_cliniko.sandbox import SandboxConfig

PROFILE_VERSION = 1
#: Fields a row must carry for any client to read it: never left out, whatever a profile says.
ESSENTIAL = frozenset(
    {"id", "created_at", "updated_at", "archived_at", "cancelled_at", "deleted_at", "links"}
)
#: Which route each filter of a profile is sent to (the rest: the collection's plain list).
FILTER_ROUTES = {"deleted_at:>=": "/deleted"}
VERDICTS = (None, "accepted", "ignored", "refused", "forbidden", "missing", "error")
SORT_MODES = {"honoured": "honoured", "ignored": "ignored", "refused": "refused"}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
DEFAULT_PATIENTS = 100  # when the profile could not count them (patients forbidden)


class ProfileError(ValueError):
    """A profile the local Cliniko cannot replay; the message says what and where."""


def read(path: Path) -> dict[str, Any]:
    """A profile file, or ProfileError naming what is wrong with it."""
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"profile {path} is not JSON ({exc}); write it with tap-cliniko-doctor --output"
        ) from None
    if not isinstance(profile, dict):
        raise ProfileError(f"profile {path} is not a JSON object (tap-cliniko-doctor --output)")
    return profile


def _count(name: str, state: str, value: Any, scale: float) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProfileError(
            f"profile: collections.{name}.counts.{state} must be a whole number >= 0 or null,"
            f" not {value!r}"
        )
    scaled = round(value * scale)
    return max(scaled, 1) if value else 0


def _check(profile: Mapping[str, Any]) -> Mapping[str, Any]:
    if profile.get("profile_version") != PROFILE_VERSION:
        raise ProfileError(
            f"profile: profile_version must be {PROFILE_VERSION}, not"
            f" {profile.get('profile_version')!r} (make it again with this tap-cliniko-doctor)"
        )
    collections = profile.get("collections")
    if not isinstance(collections, dict):
        raise ProfileError("profile: 'collections' must be an object of collections by name")
    for name, seen in collections.items():
        if name not in BY_NAME:
            raise ProfileError(
                f"profile: collections.{name} is not a collection the local Cliniko serves"
            )
        if not isinstance(seen, dict):
            raise ProfileError(f"profile: collections.{name} must be an object")
        for verdict in (seen.get("filters") or {}).values():
            if verdict not in VERDICTS:
                raise ProfileError(
                    f"profile: collections.{name}.filters has {verdict!r}; one of"
                    f" {', '.join(str(v) for v in VERDICTS[1:])} or null"
                )
    if profile.get("sort_id", "honoured") not in (*SORT_MODES, "unknown"):
        raise ProfileError(
            f"profile: sort_id must be honoured, ignored, refused or unknown,"
            f" not {profile.get('sort_id')!r}"
        )
    if profile.get("behaviour", "current") not in ("current", "legacy"):
        raise ProfileError(
            f"profile: behaviour must be current or legacy, not {profile.get('behaviour')!r}"
        )
    return collections


def apply(config: SandboxConfig, profile: Mapping[str, Any], scale: float = 1.0) -> SandboxConfig:
    """config with the account-shaping settings a profile gives (serving settings kept)."""
    if not scale > 0:
        raise ProfileError(f"scale must be above 0, not {scale!r}")
    collections = _check(profile)
    shape = AccountShape()
    forbidden: list[str] = []
    missing: list[str] = []
    broken: list[str] = []
    missing_routes: list[str] = []
    ignored: dict[str, list[str]] = {}
    refused: dict[str, list[str]] = {}
    for name, seen in collections.items():
        resource = BY_NAME[name]
        status = seen.get("status", "ok")
        {"forbidden": forbidden, "missing": missing, "error": broken}.get(status, []).append(name)
        counts = seen.get("counts") or {}
        targets = {
            state: n
            for state in states_of(resource)
            if state in STATES and (n := _count(name, state, counts.get(state), scale)) is not None
        }
        if targets and not (resource.union or resource.computed):  # made of other collections
            shape.volumes[name] = targets
        for route, present in (seen.get("routes") or {}).items():
            if present is False and route in resource.variants:
                missing_routes.append(f"/{name}/{route}")
        for text, verdict in (seen.get("filters") or {}).items():
            path = f"/v1/{name}{FILTER_ROUTES.get(text, '')}"
            if verdict in ("ignored", "refused"):
                (ignored if verdict == "ignored" else refused).setdefault(path, []).append(text)
        if isinstance(digits := seen.get("id_digits"), int) and not isinstance(digits, bool):
            shape.id_digits[name] = digits
        unknown = seen.get("unknown_fields") or {}
        if unknown:
            shape.unknown_fields[name] = {f: tuple(kinds) for f, kinds in unknown.items()}
        never = [f for f in seen.get("fields_never_seen") or [] if f not in ESSENTIAL]
        if never:
            shape.omitted_fields[name] = tuple(never)
    patients = sum((shape.volumes.get("patients") or {}).values()) or DEFAULT_PATIENTS
    headers = [h for h in profile.get("rate_limit_headers") or [] if h in RATE_HEADERS]
    answer_429 = [h for h in ("X-RateLimit-Reset", "Retry-After") if h in headers]
    changes: dict[str, Any] = {
        "patients": patients,
        "collections": 1.0,
        "behaviour": profile.get("behaviour", "current"),
        "sort_mode": SORT_MODES.get(profile.get("sort_id", "honoured"), "honoured"),
        "archive_touches_updated_at": profile.get("archive_touches_updated_at") is not False,
        "clock_offset_seconds": float(profile.get("clock_offset_seconds") or 0.0),
        "forbidden": tuple(forbidden),
        "missing": tuple(missing),
        "broken": tuple(broken),
        "missing_routes": tuple(missing_routes),
        "ignored_filters": {path: tuple(texts) for path, texts in ignored.items()},
        "refused_filters": {path: tuple(texts) for path, texts in refused.items()},
        "rate_limit_headers": tuple(headers),
        "account": shape,
    }
    if len(answer_429) == 2:
        changes["rate_limit_header"] = "both"
    elif answer_429:
        changes["rate_limit_header"] = answer_429[0]
    if shard := profile.get("shard"):
        changes["shard"] = str(shard)
        if not config.api_key.endswith(f"-{shard}"):  # the key names its shard
            changes["api_key"] = f"sandbox-key-{shard}"
    return dataclasses.replace(config, **changes)
