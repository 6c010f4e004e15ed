"""The deployments' parameter schemas as the Prefect server enforces them: the server's own
validator (``prefect.utilities.schema_tools.validation.validate``, what
``create_flow_run_from_deployment`` calls before it answers 409) on the schema ``prefect deploy``
builds from each flow's signature, made strict at the top level as ``make deploy`` does. Each
refusal must name the key; every form field must have a description without markup.

The same refusals through a real server and the UI's request are in tests/test_ops_frontdoor.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_config import tiny_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deployments"))


def deployment_schema(flow: Any) -> dict[str, Any]:
    """What the server stores: ``prefect deploy``'s schema, then ``make deploy``'s strictness."""
    from prefect.utilities.callables import parameter_schema
    from setup import strict_schema

    return strict_schema(parameter_schema(flow).model_dump_for_openapi())


@pytest.fixture(scope="module")
def train_schema() -> dict[str, Any]:
    from flows.training import training_pipeline

    return deployment_schema(training_pipeline)


def refusal(schema: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    """The server's 409 detail for ``parameters``, or None when it would accept them."""
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    try:
        validate(parameters, schema, raise_on_error=True)
    except ValidationError as exc:
        return str(exc)
    return None


def test_the_tiny_config_is_accepted(train_schema):
    assert refusal(train_schema, {"config": tiny_config()}) is None
    assert refusal(train_schema, {"config": tiny_config(**{"train.batch": -1}), "until": "curate"}) is None
    # every kind of source with its required keys passes the server's check
    from pyroblur.config import load_config

    real = load_config(ROOT / "configs" / "pyroblur.yaml").model_dump(mode="json")
    assert refusal(train_schema, {"config": real}) is None
    local = {"kind": "local", "name": "mine", "path": "/data/x", "format": "yolo", "class_map": {"0": "face"}}
    assert refusal(train_schema, {"config": tiny_config(**{"sources": [local]})}) is None


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"config": tiny_config(), "foo": 1}, "'foo' was unexpected"),
        ({"config": tiny_config(**{"train.args": {"plots": False, "lr00": 0.1}})}, "'lr00' is not one of"),
        ({"config": tiny_config(**{"train.args": {"data": "x.yaml"}})}, "'data' is not one of"),
        ({"config": tiny_config(**{"train.batch": -2})}, "config.train.batch"),
        ({"config": tiny_config(**{"train.batch": 0})}, "config.train.batch"),
        ({"config": tiny_config(**{"sources.0.kind": "flickr"})}, "config.sources[0].kind"),
        ({"config": tiny_config(**{"sources.0.num_images": -5})}, "config.sources[0].num_images"),
        ({"config": tiny_config(**{"sources.0.num_imagez": 5})}, "config.sources[0].num_imagez"),
        ({"config": tiny_config(**{"train.epochs": "many"})}, "config.train.epochs"),
    ],
    ids=[
        "unknown-top-level-key",
        "misspelled-ultralytics-arg",
        "reserved-ultralytics-arg",
        "batch-minus-2",
        "batch-zero",
        "bad-source-kind",
        "bad-source-field",
        "unknown-source-key",
        "wrong-type",
    ],
)
def test_the_server_refuses_naming_the_key(train_schema, parameters, named):
    detail = refusal(train_schema, parameters)
    assert detail is not None, parameters
    assert named in detail, detail
    assert "is not valid under any of the given schemas" not in detail, detail
    assert len(detail) < 2000 or "is not one of" in detail  # never the whole config echoed back


def test_pydantic_agrees_with_the_schema():
    """What the schema refuses, the flow's own model refuses too (the CLI path), and the other
    way round for what JSON Schema cannot say (a split that does not sum to 1)."""
    from pyroblur.config import ConfigError, parse_config

    for change in (
        {"train.batch": -2},
        {"train.batch": 0},
        {"train.args": {"lr00": 0.1}},
        {"sources.0.num_images": -5},
        {"split": {"train": 0.8, "val": 0.2, "test": 0.1}},
    ):
        with pytest.raises(ConfigError):
            parse_config(tiny_config(**change))
    assert parse_config(tiny_config(**{"train.batch": -1})).train.batch == -1


def _walk(node: dict[str, Any], defs: dict[str, Any], path: str, seen: frozenset[str]):
    """Yield (dotted path, description) for every field of a form, following $refs and unions."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name not in seen:
            yield from _walk(defs[name], defs, path, seen | {name})
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            yield from _walk(branch, defs, path, seen)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], defs, f"{path}[]", seen)
    for key, prop in node.get("properties", {}).items():
        desc = prop.get("description")
        refs = [prop] + prop.get("allOf", []) + prop.get("anyOf", [])
        for ref in refs:  # a nested model's description is its docstring
            if not desc and "$ref" in ref:
                desc = defs[ref["$ref"].rsplit("/", 1)[1]].get("description")
        yield f"{path}.{key}", desc
        yield from _walk(prop, defs, f"{path}.{key}", seen)


MARKUP = re.compile(r"``|:class:|:func:|:data:|`[^`]+`")


def test_every_form_field_has_a_plain_description():
    from flows.anonymize import anonymize_folder
    from flows.operations import retrain_weekly, train_stage
    from flows.sweep import hyperparameter_sweep, sweep_trial
    from flows.training import training_pipeline

    fields = 0
    for flow in (training_pipeline, retrain_weekly, train_stage, anonymize_folder, hyperparameter_sweep, sweep_trial):
        schema = deployment_schema(flow)
        found = list(_walk(schema, schema.get("definitions", {}), flow.name, frozenset()))
        fields += len(found)
        missing = sorted({p for p, d in found if not d})
        assert not missing, f"{flow.name}: no description for {missing}"
        marked = sorted({p for p, d in found if MARKUP.search(d)})
        assert not marked, f"{flow.name}: markup in the descriptions of {marked}"
        for name, definition in schema.get("definitions", {}).items():
            assert not MARKUP.search(definition.get("description", "")), name
    assert fields > 300  # the walk reached the nested sections and every source kind
