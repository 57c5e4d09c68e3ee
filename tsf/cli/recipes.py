"""`python -m tsf recipes [NAME]`: the paper's experiments as recipes, listed as a table, or one printed."""
from __future__ import annotations

import argparse
import sys
import textwrap


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="print this recipe's file (default: list all recipes)")


def run(args: argparse.Namespace) -> int:
    from ..recipes import RecipeError, list_recipes, load_recipe

    try:
        if args.name:
            recipe = load_recipe(args.name)
            print(f"# {recipe.path}\n{recipe.path.read_text()}", end="")
            return 0
        rows = [_table_row(recipe) for recipe in list_recipes()]
    except RecipeError as error:
        print(f"tsf recipes: {error}", file=sys.stderr)
        return 2
    header = ("recipe", "reproduces", "paper top-1", "GPU memory (estimate)")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    notes = ("GPU memory: estimated peak per GPU at the recipe's batch_size clips per process (training: weights, "
             "gradients, optimiser state and saved activations; evaluation: one forward pass), bf16 autocast and fused "
             "attention; counted, not measured. Lower --batch-size (the global batch stays, by gradient accumulation) "
             "or add --gradient-checkpointing to fit a smaller GPU.")
    print("\n" + textwrap.fill(notes, 100))
    print("Run one: python -m tsf train (or evaluate) --config RECIPE --data DIR [--out RUN_DIR]\n"
          "Print one: python -m tsf recipes RECIPE")
    return 0


def _table_row(recipe) -> tuple[str, str, str, str]:
    from ..cost import estimate_gpu_memory_gib
    from ..recipes import recipe_model_config

    top1 = recipe.about.get("paper_top1")
    batch = recipe.settings.get("batch_size", 8)  # both commands default to 8 clips per pass
    training = recipe.command == "train"
    optimizer = recipe.settings.get("optimizer", "sgd") if training else None
    memory = estimate_gpu_memory_gib(recipe_model_config(recipe), batch, optimizer)
    memory_text = f"~{memory:.0f} GiB/GPU ({'train' if training else 'eval'}, {batch} clips)"
    return recipe.name, recipe.about["reproduces"], "-" if top1 is None else f"{top1:.1f}", memory_text
