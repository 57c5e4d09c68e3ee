"""`python -m tsf run`: execute notebooks headlessly with papermill into a run folder.

A params YAML holds one section per notebook (its file stem), e.g.::

    02_train:
      epochs: 3          # fields of that notebook's `parameters` cell
      batch_size: 32

Every notebook also receives ``run_dir`` (the ``--out`` folder), where it writes its metrics,
checkpoints and figures; the executed notebook is saved there beside them. Unlike papermill,
which only warns, an unknown parameter name is an error.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

from .outputs import refuse_to_overwrite

RUN_DIR_PARAMETER = "run_dir"


def declared_parameters(notebook: Path) -> dict[str, dict]:
    """Name -> papermill's description (``inferred_type_name``, ``default``, ``help``) of the
    notebook's ``parameters`` cell; an error if the notebook has none."""
    import papermill

    params = papermill.inspect_notebook(str(notebook))
    if not params:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'; tag the cell of literals that papermill may set")
    return params


def plan(notebooks: list[Path], params_file: Path | None, overrides: dict, run_dir: Path) -> list[tuple[Path, dict]]:
    """The parameters each notebook will get; raises on any name a notebook does not declare."""
    import yaml

    sections = {}
    if params_file is not None:
        if not params_file.is_file():
            raise FileNotFoundError(f"params file {params_file} does not exist")
        sections = yaml.safe_load(params_file.read_text()) or {}
        if not isinstance(sections, dict):
            raise ValueError(f"{params_file}: expected a mapping of notebook name -> parameters")
    stems = [nb.stem for nb in notebooks]
    errors, jobs, used_overrides = [], [], set()
    for notebook in notebooks:
        if not notebook.is_file():
            raise FileNotFoundError(f"notebook {notebook} does not exist")
        declared = declared_parameters(notebook)
        given = dict(sections.get(notebook.stem) or {})
        for key in given:
            if key not in declared:
                close = difflib.get_close_matches(key, declared, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; it declares {sorted(declared)}"
                errors.append(f"{params_file}: {notebook.stem}.{key} is not a parameter of {notebook}{hint}")
        for key, value in overrides.items():
            if key in declared:
                given[key] = value
                used_overrides.add(key)
        if RUN_DIR_PARAMETER in declared:
            given[RUN_DIR_PARAMETER] = str(run_dir)
        jobs.append((notebook, given))
    for key in set(overrides) - used_overrides:
        everything = {name for nb in notebooks for name in declared_parameters(nb)}
        close = difflib.get_close_matches(key, everything, n=1)
        errors.append(f"-p {key}: no notebook among {stems} declares it" + (f"; did you mean {close[0]!r}?" if close else ""))
    unknown_sections = set(sections) - set(stems) if params_file is not None else set()
    if errors:
        raise ValueError("refusing to run:\n  " + "\n  ".join(errors))
    if unknown_sections:
        print(f"note: {params_file} also has sections for {sorted(unknown_sections)}, not run now", file=sys.stderr)
    return jobs


def execute(notebooks: list[Path], run_dir: Path, params_file: Path | None = None, overrides: dict | None = None,
            overwrite: bool = False) -> list[Path]:
    """Execute ``notebooks`` in order into ``run_dir``; returns the executed notebooks' paths.

    Args:
        notebooks: the notebooks, in order.
        run_dir: the run folder (created).
        params_file: YAML with one section of parameters per notebook stem.
        overwrite: run a notebook again in a folder where it already ran, replacing its executed copy
            and what it writes (figures, checkpoints); otherwise ``OutputExistsError`` before anything runs.

    Raises:
        RuntimeError: naming the notebook and cell that failed, with the error it raised.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir = Path(run_dir)
    jobs = plan([Path(nb) for nb in notebooks], params_file, overrides or {}, run_dir.resolve())
    refuse_to_overwrite([run_dir / notebook.name for notebook, _ in jobs], overwrite,
                        "executed notebooks (and the figures and files they wrote)")
    run_dir.mkdir(parents=True, exist_ok=True)
    executed = []
    for notebook, parameters in jobs:
        output = run_dir / notebook.name
        print(f"[tsf run] {notebook} -> {output}", file=sys.stderr, flush=True)
        try:
            papermill.execute_notebook(
                str(notebook), str(output), parameters=parameters, progress_bar=True,
                cwd=str(notebook.resolve().parent), kernel_name="python3",
            )
        except PapermillExecutionError as err:
            raise RuntimeError(
                f"{notebook} failed in cell {err.cell_index} (execution count {err.exec_count}): "
                f"{err.ename}: {err.evalue}\n  the partly executed notebook is {output}"
            ) from None
        executed.append(output)
    return executed


def prepare(notebooks: list[Path], run_dir: Path, params_file: Path | None = None, prefix: str = "_prepared_") -> list[Path]:
    """Copies of ``notebooks`` with their parameters injected but not executed, written beside the
    originals (so relative paths inside them still resolve) as ``<prefix><name>.ipynb``; used to
    run the notebooks under nbval with a params file."""
    import papermill

    prepared = []
    for notebook, parameters in plan([Path(nb) for nb in notebooks], params_file, {}, Path(run_dir).resolve()):
        target = notebook.with_name(prefix + notebook.name)
        papermill.execute_notebook(str(notebook), str(target), parameters=parameters, prepare_only=True,
                                   kernel_name="python3", progress_bar=False)
        prepared.append(target)
    return prepared
