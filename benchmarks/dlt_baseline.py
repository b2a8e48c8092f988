"""The baseline a user might pick instead: dlt's REST client following links.next.

Usage: dlt_baseline.py BASE_URL API_KEY  (writes one JSON line per patient to stdout)
"""

from __future__ import annotations

import json
import sys

from dlt.sources.helpers.rest_client import RESTClient
from dlt.sources.helpers.rest_client.auth import HttpBasicAuth
from dlt.sources.helpers.rest_client.paginators import JSONLinkPaginator


def main() -> None:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = RESTClient(
        base_url=base_url,
        auth=HttpBasicAuth(api_key, ""),
        headers={"User-Agent": "dlt baseline (bench@example.com)", "Accept": "application/json"},
        paginator=JSONLinkPaginator(next_url_path="links.next"),
        data_selector="patients",
    )
    out = sys.stdout
    for route in ("patients", "patients/archived", "patients/deleted"):
        for page in client.paginate(route, params={"per_page": 100}):
            for record in page:
                out.write(json.dumps(record))
                out.write("\n")
    out.flush()


if __name__ == "__main__":
    main()
