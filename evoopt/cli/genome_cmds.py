"""CLI commands for the genome stage: export, show, primitives."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from evoopt.cli import app
from evoopt.cli.errors import checked_output, fail, say
from evoopt.genome import REGISTRY, GenomeError, load_genome, seed_genome
from evoopt.genome.export import export_genome

console = Console()

__all__ = ["export", "primitives", "show"]


@app.command()
def export(
    source: Path = typer.Argument(..., help="A genome file (.toml/.json) or a campaign directory."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the .py module."),
    class_name: str | None = typer.Option(None, "--class-name", help="Optimizer class name."),
    best: bool = typer.Option(False, "--best", help="With a campaign directory: its winner."),
) -> None:
    """Write a genome (or a campaign's winner) as a standalone torch.optim.Optimizer module."""
    from evoopt.campaign.store import StoreError
    from evoopt.fileio import atomic_write_text

    provenance: dict[str, str | float | int] = {}
    campaign = source.is_dir()
    checked_output(output, (source / "campaign.sqlite",) if campaign else (source,))
    try:
        if campaign:
            from evoopt.campaign.finish import campaign_winner

            genome, provenance, default_name = campaign_winner(source)
            class_name = class_name or default_name
        else:
            if best:
                raise fail("--best needs a campaign directory")
            genome = load_genome(source)
        code = export_genome(genome, class_name, provenance=provenance)
    except (GenomeError, ValueError, FileNotFoundError, StoreError) as e:
        raise fail(str(e)) from None
    try:
        atomic_write_text(output, code)
    except (OSError, ValueError) as e:
        raise fail(f"-o {output}: cannot write ({e})") from None
    say(f"wrote {output} ({genome.name or genome.hash}: {genome.formula()})")


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
        lines = [f"{genome.name}  hash {genome.hash}", genome.formula(),
                 genome.canonical().to_toml()]
    except GenomeError as e:
        raise fail(str(e) if str(e).startswith(str(genome_file)) else f"{genome_file}: {e}") \
            from None
    for line in lines:
        say(line)


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
