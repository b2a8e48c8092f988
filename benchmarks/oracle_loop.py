"""A yardstick: a client told in advance how many pages each list has.

Usage: oracle_loop.py BASE_URL API_KEY PAGES_ACTIVE PAGES_ARCHIVED PAGES_DELETED [--first-alone]

It asks for every page of the three patient lists by number (`per_page=100&page=K`),
CONCURRENCY at a time from its first request on, and writes bare_loop.py's SCHEMA and
RECORD lines in page order (one STATE at the end). No client can do with fewer requests or
round trips: it needs no first answer to learn a list's length (the benchmark hands it
over); its CPU is that of `requests` and `json`. It checks nothing and pages by number,
which can skip rows on a real account where they change mid-read (see
tap_cliniko/paging.py). It is a yardstick for sections 6 and 8, not a way to sync.

--first-alone: the first request goes alone and the rest wait for its answer, as the tap's
do (a wrong key then costs one request): the fastest any client keeping that can be.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from bare_loop import SCHEMAS, STREAMS  # the same lists and schema as the bare loop

CONCURRENCY = 8  # the C of T(M)


def main() -> None:
    base_url, api_key = sys.argv[1].rstrip("/"), sys.argv[2]
    pages = [int(arg) for arg in sys.argv[3:6]]
    first_alone = "--first-alone" in sys.argv[6:]
    local = threading.local()

    def get(url: str) -> list[dict[str, Any]]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.auth = (api_key, "")
            session.headers.update(
                {"User-Agent": "oracle loop (bench@example.com)", "Accept": "application/json"}
            )
        answer = session.get(url, timeout=60)
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()["patients"]
        return rows

    asks = [
        (stream, f"{base_url}/{route}?per_page=100&page={number}")
        for (stream, route), count in zip(STREAMS.items(), pages, strict=True)
        for number in range(1, count + 1)
    ]
    out = sys.stdout
    schema = json.loads((SCHEMAS / "patient.json").read_text())
    bookmarks: dict[str, str] = {}
    written: set[str] = set()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        first = [get(asks[0][1])] if first_alone else []
        answers = [*first, *pool.map(get, [url for _, url in asks[len(first) :]])]
        for (stream, _), rows in zip(asks, answers, strict=True):
            if stream not in written:
                written.add(stream)
                message = {"type": "SCHEMA", "stream": stream, "schema": schema}
                out.write(json.dumps({**message, "key_properties": ["id"]}) + "\n")
            extracted = datetime.now(UTC).isoformat()
            for record in rows:
                line = {"type": "RECORD", "stream": stream, "record": record}
                line["time_extracted"] = extracted
                out.write(json.dumps(line) + "\n")
                bookmarks[stream] = max(bookmarks.get(stream, ""), record.get("updated_at") or "")
    state = {"bookmarks": {s: {"updated_at": v} for s, v in bookmarks.items()}}
    out.write(json.dumps({"type": "STATE", "value": state}) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
