"""Project coherence: packaging files agree with each other and with the README."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements):
    return {re.split(r"[<>=!;\s\[]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    mirrored = _names(r for r in pip_section if not r.startswith("-e"))
    assert mirrored == declared


def test_readme_gives_the_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_kinetics_class_names_ship_in_the_package():
    from tsf.weights import kinetics400_classes

    reference = ROOT / "tests" / "fixtures" / "kinetics400_classes.txt"  # the 400 names in label-id order
    assert kinetics400_classes() == [line.strip() for line in reference.read_text().splitlines() if line.strip()]


def test_command_line_help_lists_every_command():
    from tsf.cli import COMMANDS

    out = subprocess.run([sys.executable, "-m", "tsf", "--help"], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out
