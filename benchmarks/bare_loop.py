"""The floor of the record path: a bare `requests` + `json` loop writing Singer lines.

Usage: bare_loop.py BASE_URL API_KEY

It reads the three patient lists the tap reads (`per_page=100`, following `links.next`)
and writes a SCHEMA line per stream, a RECORD line per patient (with `time_extracted`) and
a STATE line per stream, as the tap does. It does none of the tap's per-record work (no
schema conforming, no validation, no bookmark checks, no id or date checks): what it costs
is what any Python client pays to fetch, parse and write the same rows.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import requests

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
STREAMS = {
    "patients": "patients",
    "archived_patients": "patients/archived",
    "deleted_patients": "patients/deleted",
}


def main() -> None:
    base_url, api_key = sys.argv[1].rstrip("/"), sys.argv[2]
    session = requests.Session()
    session.auth = (api_key, "")
    session.headers.update(
        {"User-Agent": "bare loop (bench@example.com)", "Accept": "application/json"}
    )
    out = sys.stdout
    schema = json.loads((SCHEMAS / "patient.json").read_text())
    bookmarks: dict[str, str] = {}
    for stream, route in STREAMS.items():
        message = {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": ["id"]}
        out.write(json.dumps(message) + "\n")
        url: str | None = f"{base_url}/{route}?per_page=100"
        while url:
            page = session.get(url, timeout=60)
            page.raise_for_status()
            body = page.json()
            extracted = datetime.now(UTC).isoformat()
            for record in body["patients"]:
                line = {"type": "RECORD", "stream": stream, "record": record}
                line["time_extracted"] = extracted
                out.write(json.dumps(line) + "\n")
                bookmarks[stream] = max(bookmarks.get(stream, ""), record.get("updated_at") or "")
            url = (body.get("links") or {}).get("next")
        state = {"bookmarks": {s: {"updated_at": v} for s, v in bookmarks.items()}}
        out.write(json.dumps({"type": "STATE", "value": state}) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
