"""CLI commands for the genome stage: export, show, primitives."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from evoopt.cli import app
from evoopt.genome import REGISTRY, GenomeError, load_genome, seed_genome
from evoopt.genome.export import export_genome

console = Console()


def fail(message: str) -> typer.Exit:
    """Print a one-line error (no traceback) and return the exit to raise."""
    Console(stderr=True, soft_wrap=True).print(f"error: {message}", style="bold red", markup=False,
                               highlight=False)
    return typer.Exit(code=2)


@app.command()
def export(
    source: Path = typer.Argument(..., help="A genome file (.toml/.json) or a campaign directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the .py module."),
    class_name: str | None = typer.Option(None, "--class-name", help="Optimizer class name."),
    best: bool = typer.Option(False, "--best", help="With a campaign directory: its winner."),
) -> None:
    """Write a genome (or a campaign's winner) as a standalone torch.optim.Optimizer module."""
    provenance: dict[str, str | float | int] = {}
    try:
        if source.is_dir():
            from evoopt.campaign.finish import campaign_winner

            genome, provenance, default_name = campaign_winner(source)
            class_name = class_name or default_name
        else:
            if best:
                raise fail("--best needs a campaign directory")
            genome = load_genome(source)
        code = export_genome(genome, class_name, provenance=provenance)
    except (GenomeError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(code)
    console.print(f"wrote {output} ({genome.name or genome.hash}: {genome.formula()})",
                  markup=False, highlight=False)


@app.command()
def show(genome_file: str = typer.Argument(
        ..., help="A genome file (.toml/.json), or the name of a seed genome (adam, lion, ...).")
) -> None:
    """Validate a genome and print its formula, hash and canonical form."""
    path = Path(genome_file)
    try:
        looks_like_path = path.suffix in (".toml", ".json") or len(path.parts) > 1
        genome = load_genome(path) if path.exists() or looks_like_path \
            else seed_genome(genome_file)
    except GenomeError as e:
        raise fail(str(e)) from None
    console.print(f"{genome.name}  hash {genome.hash}", markup=False, highlight=False)
    console.print(genome.formula(), markup=False, highlight=False)
    console.print(genome.canonical().to_toml(), markup=False, highlight=False)


@app.command()
def primitives(
    markdown: bool = typer.Option(False, "--markdown", help="Print docs/primitives.md."),
) -> None:
    """List the primitive registry: slots, kinds, hyperparameters and mutation ranges."""
    if markdown:
        from evoopt.genome.docs import primitives_markdown

        print(primitives_markdown(), end="")
        return
    table = Table(title="evoopt primitives")
    for col in ("slot", "kind", "phase", "summary", "formula"):
        table.add_column(col)
    for slot, kinds in REGISTRY.items():
        for kind, prim in kinds.items():
            table.add_row(slot, kind, prim.phase, prim.summary, prim.formula)
    console.print(table, markup=False)
