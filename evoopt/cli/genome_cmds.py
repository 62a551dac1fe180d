"""CLI commands for the genome stage: export, show, primitives."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from evoopt.cli import app
from evoopt.cli.errors import (
    GENOME_ARGUMENT_HELP,
    SafeConsole,
    checked_output,
    fail,
    genome_argument,
    parse_output_file,
    say,
)
from evoopt.genome import REGISTRY, GenomeError
from evoopt.genome.export import export_genome

console = SafeConsole()

__all__ = ["export", "primitives", "show"]


@app.command()
def export(
    source: str = typer.Argument(..., help=f"{GENOME_ARGUMENT_HELP} Or a campaign directory "
                                 "(written as a path): its winner."),
    output: Path = typer.Option(..., "-o", "--output", parser=parse_output_file,
                                help="Where to write the .py module."),
    class_name: str | None = typer.Option(None, "--class-name", help="Optimizer class name."),
    best: bool = typer.Option(False, "--best", help="With a campaign directory: its winner."),
) -> None:
    """Write a genome (or a campaign's winner) as a standalone torch.optim.Optimizer module."""
    from evoopt.campaign.store import StoreError
    from evoopt.fileio import OutputError, atomic_write_text, names_a_path
    from evoopt.paths import GENOMES_DIR

    provenance: dict[str, str | float | int] = {}
    path = Path(source).expanduser()
    campaign = names_a_path(source) and path.is_dir()
    checked_output(output, (path / "campaign.sqlite",) if campaign else
                   (path,) if names_a_path(source) else (GENOMES_DIR / f"{source}.toml",))
    if best and not campaign:
        raise fail("--best needs a campaign directory")
    try:
        if campaign:
            from evoopt.campaign.finish import campaign_winner

            genome, provenance, default_name = campaign_winner(path)
            class_name = class_name or default_name
        else:
            genome = genome_argument(source)
        code = export_genome(genome, class_name, provenance=provenance)
    except (GenomeError, ValueError, FileNotFoundError, StoreError) as e:
        raise fail(str(e)) from None
    try:
        atomic_write_text(output, code)
    except OutputError as e:
        raise fail(str(e)) from None
    say(f"wrote {output} ({genome.name or genome.hash}: {genome.formula()})")


@app.command()
def show(genome_file: str = typer.Argument(..., help=GENOME_ARGUMENT_HELP)) -> None:
    """Validate a genome and print its formula, hash and canonical form."""
    genome = genome_argument(genome_file)
    try:
        lines = [f"{genome.name}  hash {genome.hash}", genome.formula(),
                 *genome.canonical().to_toml().split("\n")]
    except GenomeError as e:
        raise fail(f"{genome_file}: {e}") from None
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
