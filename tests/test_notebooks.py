"""The notebooks: structure and parameters (fast), then all of them executed under nbval with ci.yaml."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tsf import run as tsf_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAMS = sorted((ROOT / "notebooks" / "params").glob("*.yaml"))
EXPECTED = ["00_quickstart", "01_data_prep", "02_train", "03_evaluate", "04_attention_maps", "05_attention_schemes"]


def cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_the_numbered_notebooks_exist():
    assert [nb.stem for nb in NOTEBOOKS] == EXPECTED
    assert {p.stem for p in PARAMS} >= {"ci", "demo", "gpu"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(notebook):
    for cell in cells(notebook):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{notebook.name}: strip outputs (nbstripout)"
    assert "widgets" not in json.loads(notebook.read_text())["metadata"], "saved widget state must not be committed"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_template_title_parameters_sections_summary(notebook):
    nb_cells = cells(notebook)
    assert nb_cells[0]["cell_type"] == "markdown" and source(nb_cells[0]).startswith("# "), "title and purpose first"
    tagged = [c for c in nb_cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(source(tagged[0]))
    lines = source(tagged[0]).splitlines()
    for statement in tree.body:
        assert isinstance(statement, ast.AnnAssign), f"{notebook.name}: parameters are `name: type = literal  # comment`"
        ast.literal_eval(statement.value)  # literals only: derived values go in the next cell
        assert "#" in lines[statement.lineno - 1], f"{notebook.name}: {statement.target.id} needs a one-line comment"
    headings = [source(c).splitlines()[0] for c in nb_cells if c["cell_type"] == "markdown"]
    numbered = [h for h in headings if h.startswith("## ") and h[3:4].isdigit()]
    assert len(numbered) >= 2, "numbered sections (## 1. ...)"
    assert any("summary" in h.lower() for h in headings), "a closing summary section"
    for cell in nb_cells:
        if cell["cell_type"] == "code":
            definitions = [n for n in ast.walk(ast.parse(source(cell).replace("%matplotlib", "#")))
                           if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
            assert not any(isinstance(n, ast.ClassDef) for n in definitions), "notebooks are thin: classes live in tsf"
            assert all(len(n.body) <= 3 for n in definitions), "notebooks are thin: long functions live in tsf"


@pytest.mark.parametrize("params_file", PARAMS, ids=lambda p: p.stem)
def test_every_params_key_is_a_notebook_parameter(params_file):
    sections = yaml.safe_load(params_file.read_text())
    assert set(sections) <= set(EXPECTED), f"{params_file.name}: sections must be notebook names"
    for stem, values in sections.items():
        declared = tsf_run.declared_parameters(ROOT / "notebooks" / f"{stem}.ipynb")
        missing = set(values or {}) - set(declared)
        assert not missing, f"{params_file.name}: {stem} has no parameters {sorted(missing)}"


def test_misspelled_parameter_is_refused_with_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("02_train:\n  epoch: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "tsf", "run", "notebooks/02_train.ipynb", "--params", str(bad), "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "02_train.epoch is not a parameter" in result.stderr and "did you mean 'epochs'" in result.stderr
    assert not (tmp_path / "run").exists(), "nothing runs, nothing is written"


def test_all_notebooks_execute_under_nbval_with_ci_params(tmp_path):
    """Every notebook runs with ci.yaml, in order, sharing one run folder, validated by nbval --nbval-lax
    (the notebooks assert on the values that matter); then `tsf run` on 02_train alone."""
    run_dir = tmp_path / "ci_run"
    prepared = tsf_run.prepare(NOTEBOOKS, run_dir, ROOT / "notebooks" / "params" / "ci.yaml", prefix="_ci_")
    try:
        env = {**os.environ, "MPLBACKEND": "Agg"}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", *map(str, prepared)],
            cwd=ROOT, capture_output=True, text=True, env=env,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    finally:
        for path in prepared:
            path.unlink(missing_ok=True)
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "best.pt").is_file()
    assert list(run_dir.glob("*.png")), "the notebooks save their figures into the run folder"
    out = tmp_path / "papermill_run"
    result = subprocess.run(
        [sys.executable, "-m", "tsf", "run", "notebooks/02_train.ipynb", "--params", "notebooks/params/ci.yaml", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "02_train.ipynb").is_file() and (out / "summary.json").is_file()
