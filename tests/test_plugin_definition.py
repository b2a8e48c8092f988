"""plugin.yaml (the Meltano Hub definition) is what `--about` says, and meltano.yml agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tap_cliniko.resources import COLLECTIONS
from tap_cliniko.tap import TapCliniko
from tools.plugin_definition import (
    DEFINITION,
    SELECT,
    SELECT_COMMAND,
    about,
    definition,
    read_meltano_yml,
    render,
)

ROOT = Path(__file__).resolve().parents[1]
TAP = Path(sys.executable).with_name("tap-cliniko")


def sdk_settings() -> set[str]:
    """The settings the SDK adds to the tap's own (stream maps, flattening, batch, ...)."""
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    # The SDK merges them into the schema it is given (CONFIG_SCHEMA itself, once a tap ran).
    TapCliniko.append_builtin_config(schema)
    return set(schema["properties"])


def meltano_tap() -> dict[str, Any]:
    """tap-cliniko's entry in meltano.yml."""
    project = read_meltano_yml()
    return next(p for p in project["plugins"]["extractors"] if p["name"] == "tap-cliniko")


def test_plugin_yaml_is_generated_from_about() -> None:
    regenerated = render(definition(about(TAP)))
    assert DEFINITION.read_text(encoding="utf-8") == regenerated, (
        "plugin.yaml differs from what --about says: run python3 dev.py plugin"
    )


def test_definition_has_what_the_hub_requires() -> None:
    plugin = yaml.safe_load(DEFINITION.read_text())
    for key in ("name", "namespace", "variant", "pip_url", "label", "capabilities", "settings"):
        assert plugin.get(key), f"plugin.yaml lacks {key}"
    for entry in plugin["settings"]:
        assert {"name", "kind", "label", "description"} <= set(entry), entry["name"]
    sensitive = {s["name"] for s in plugin["settings"] if s.get("sensitive")}
    assert sensitive == {"api_key"}
    assert {"catalog", "discover", "state", "about", "test"} <= set(plugin["capabilities"])


def test_meltano_yml_tap_settings_agree_with_the_definition() -> None:
    plugin = yaml.safe_load(DEFINITION.read_text())
    defined = {s["name"]: s for s in plugin["settings"]}
    project = meltano_tap()
    declared = {s["name"]: s for s in project["settings"]}
    tap_settings = set(defined) - sdk_settings()
    assert {"api_key", "user_agent", "start_date"} <= tap_settings
    missing = tap_settings - set(declared)
    assert not missing, f"meltano.yml lacks tap settings: {sorted(missing)}"
    unknown = set(declared) - set(defined)
    assert not unknown, f"meltano.yml declares settings the tap does not have: {sorted(unknown)}"
    for name, entry in declared.items():
        expected = defined[name]
        assert entry.get("kind", "string") == expected["kind"], f"{name}: kind differs"
        assert bool(entry.get("sensitive")) == bool(expected.get("sensitive")), name
        if expected["kind"] == "options":
            values = [o["value"] for o in entry["options"]]
            assert values == [o["value"] for o in expected["options"]], f"{name}: options"
    claimed = set(project["capabilities"]) - set(plugin["capabilities"])
    assert not claimed, f"meltano.yml claims capabilities the tap lacks: {sorted(claimed)}"
    assert project["settings_group_validation"] == plugin["settings_group_validation"]


def test_meltano_yml_selects_what_the_definition_tells_a_new_project_to_select() -> None:
    """One list of clinical exclusions: meltano.yml's select, plugin.yaml's usage, README."""
    clinical = {c.name for c in COLLECTIONS if c.clinical}
    assert {rule[1:].removesuffix(".*") for rule in SELECT if rule.startswith("!")} == clinical
    assert meltano_tap()["select"] == SELECT
    assert SELECT_COMMAND in yaml.safe_load(DEFINITION.read_text())["usage"]
    assert SELECT_COMMAND in (ROOT / "README.md").read_text()


def test_meltano_yml_option_values_are_strings_as_meltano_reads_them() -> None:
    """Meltano reads YAML 1.2 (`off` is a string); so does read_meltano_yml, unlike PyYAML."""
    options = next(s for s in meltano_tap()["settings"] if s["name"] == "privacy_redaction")
    assert [o["value"] for o in options["options"]] == ["off", "rejected", "rejected_or_unanswered"]


def test_target_jsonl_definition_file_is_meltano_yml_loader() -> None:
    """plugins/target-jsonl.yml (README's fresh project adds it --from-ref) is meltano.yml's."""
    shipped = read_meltano_yml(ROOT / "plugins" / "target-jsonl.yml")
    project = read_meltano_yml()
    loader = next(p for p in project["plugins"]["loaders"] if p["name"] == "target-jsonl")
    keys = ("name", "namespace", "pip_url", "executable", "settings")
    assert {k: shipped.get(k) for k in keys} == {k: loader.get(k) for k in keys}
    # Meltano 4 drops `config` (and `select`) from a definition file: README sets it instead.
    assert set(shipped) == set(keys)


def markdown_rows(text: str) -> dict[str, str]:
    """A markdown settings table's rows, by setting name."""
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | " in line]
    return {row.split(" | ")[0].removeprefix("| "): row for row in rows[1:]}


def test_readme_settings_table_is_what_about_prints() -> None:
    """README: `--about --format=markdown` prints the same table, plus the SDK's sub-keys."""
    out = subprocess.run(
        [TAP, "--about", "--format=markdown"], capture_output=True, check=True, text=True
    ).stdout
    printed = markdown_rows(out.split("## Settings", 1)[1])
    readme = (ROOT / "README.md").read_text().split("## Settings\n", 1)[1].split("\n## ", 1)[0]
    table = markdown_rows(readme)
    assert set(table) == {name for name in printed if "." not in name}
    for name, row in table.items():
        assert row == printed[name], f"README's {name} row differs from --about's"
    assert {"stream_maps", "batch_config", "flattening_separator"} <= set(table)
