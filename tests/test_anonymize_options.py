"""The anonymize options have one declaration, :class:`AnonymizeOptions`: the command line
(``pyroblur anonymize --help``) and the anonymize flow's parameters (the Prefect UI form) are
generated from it, so a field added there appears in both with its default, range and help."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from flows.cli import anonymize as cli
from pyroblur.anonymize.options import AnonymizeOptions

ROOT = Path(__file__).resolve().parents[1]
NEW_FIELD = """    new_knob: int = Field(7, ge=2, le=9, description="a knob the test added to the one declaration")
"""


def _help(command) -> str:
    app = typer.Typer()
    app.command("anonymize")(command)
    app.command("other")(lambda: None)  # two commands: typer keeps the subcommand name
    result = CliRunner().invoke(app, ["anonymize", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_field_is_an_option_with_the_models_default():
    text = _help(cli.anonymize_command)
    opts = cli.cli_options()
    assert set(opts) == set(AnonymizeOptions.model_fields)
    for name, opt in opts.items():
        flag = opt.info.param_decls[0].split("/")[0]
        assert flag in text, f"{flag} ({name}) missing from --help"
    # parsing the command line's defaults gives the model's defaults, field by field
    defaults = {name: opt.info.default for name, opt in opts.items()}
    assert cli.options_from_cli(defaults) == AnonymizeOptions()


def test_the_models_ranges_are_the_command_lines(tmp_path):
    app = typer.Typer()
    app.command("anonymize")(cli.anonymize_command)
    app.command("other")(lambda: None)
    for flag, value in (("--conf-face", "1.5"), ("--enlarge", "0"), ("--mosaic-cells", "65"), ("--face-detector", "x")):
        result = CliRunner().invoke(app, ["anonymize", str(tmp_path), str(tmp_path / "o"), flag, value])
        assert result.exit_code == 2, (flag, result.output)


def test_a_field_added_to_the_model_is_a_command_line_option(monkeypatch, tmp_path):
    class Extended(AnonymizeOptions):
        new_knob: int = Field(7, ge=2, le=9, description="a knob the test added")

    text = _help(cli.make_anonymize_command(Extended))
    assert "--new-knob" in text and "a knob the test added" in text and "2<=x<=9" in text
    seen: list[AnonymizeOptions] = []
    monkeypatch.setattr(cli, "_run", lambda i, o, resume, options: seen.append(options))
    app = typer.Typer()
    app.command("anonymize")(cli.make_anonymize_command(Extended))
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["anonymize", str(tmp_path), str(tmp_path / "o"), "--new-knob", "3"])
    assert result.exit_code == 0, result.output
    assert seen[0].new_knob == 3 and isinstance(seen[0], Extended)


SCRIPT = """
import json
from typer.testing import CliRunner
from flows.cli import app
from flows.anonymize import anonymize_folder

help_text = CliRunner().invoke(app, ["anonymize", "--help"], env={"COLUMNS": "400"}).output
print("RESULT", json.dumps({"help": help_text, "schema": anonymize_folder.parameters.model_dump()}))
"""


@pytest.mark.slow
def test_a_field_added_to_the_declaration_reaches_the_cli_and_the_flow_form(tmp_path):
    """Edit a copy of the project: one field added to AnonymizeOptions, nothing else."""
    copy = tmp_path / "project"
    for top in ("pyroblur", "tasks", "flows"):
        shutil.copytree(ROOT / top, copy / top, ignore=shutil.ignore_patterns("__pycache__"))
    options = copy / "pyroblur" / "anonymize" / "options.py"
    text = options.read_text()
    anchor = '    progress: bool = Field(True, description="show a progress bar for videos")\n'
    assert anchor in text, "the test's anchor line moved; update it"
    options.write_text(text.replace(anchor, anchor + NEW_FIELD))

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=copy,
        env={**_clean_env(), "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    assert "--new-knob" in out["help"] and "a knob the test added to the one declaration" in out["help"]
    schema = out["schema"]
    definition = schema["definitions"]["AnonymizeOptions"]["properties"]["new_knob"]
    assert definition["default"] == 7 and definition["minimum"] == 2 and definition["maximum"] == 9


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
