"""Two local Cliniko accounts into one PostgreSQL: a schema each, the models unioned by account."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from types import ModuleType
from typing import Any

from tests.e2e.conftest import ROOT, Meltano, Postgres
from tests.e2e.test_stack import check_dbt_build


def accounts_module() -> ModuleType:
    """orchestration/cliniko_dagster/accounts.py, the loader Dagster uses (no Dagster needed)."""
    path = ROOT / "orchestration" / "cliniko_dagster" / "accounts.py"
    spec = importlib.util.spec_from_file_location("cliniko_accounts_e2e", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_two_accounts_share_one_postgres_with_their_own_schema_and_state(
    meltano: Meltano, sandbox: Callable[..., Any], postgres: Postgres
) -> None:
    accounts = accounts_module()
    suffix = uuid.uuid4().hex[:8]
    models = f"analytics_{suffix}"
    names = (f"pg_a_{suffix}", f"pg_b_{suffix}")
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(sandbox(patients=size, seed=seed, collections=0.5))
            for name, size, seed in zip(names, (30, 20), (11, 12), strict=True)
        }
        entries = [
            {"name": n, "api_key_env": f"KEY_{n.upper()}", "base_url": servers[n].base_url}
            for n in names
        ]
        loaded = accounts.parse_accounts(json.dumps({"accounts": entries}), "accounts.yml")
        meltano.env.update(
            TARGET_POSTGRES_SQLALCHEMY_URL=postgres.uri,
            DBT_POSTGRES_TARGET_SCHEMA=models,
            **{f"DBT_POSTGRES_{k.upper()}": v for k, v in postgres.settings.items()},
        )
        for account in loaded:
            server = servers[account.name]
            keys = {account.api_key_env: server.config.api_key}
            run = Meltano({**meltano.env, **account.meltano_env(keys)}, meltano.log)
            run("run", "tap-cliniko", "target-postgres")
            state = json.loads(
                run("state", "get", f"local:tap-cliniko-to-target-postgres:{account.name}")
            )
            assert state["singer_state"]["bookmarks"]["patients"], account.name
        meltano("invoke", "dbt-postgres", "build", "--vars", json.dumps(accounts.dbt_vars(loaded)))
        check_dbt_build(meltano)
        rows = postgres.rows(
            f"SELECT account, count(*) FROM {models}.patients_current GROUP BY 1 ORDER BY 1"
        )
        expected = [f"{n}|{len(servers[n].store.snapshot())}" for n in names]
        assert rows == expected
        shared = postgres.rows(
            f"SELECT count(*) FROM {models}.appointments a JOIN {models}.appointments b"
            f" ON a.id = b.id AND a.account = '{names[0]}' AND b.account = '{names[1]}'"
        )
        assert int(shared[0]) > 0, "the accounts share no appointment id: the test proves less"
