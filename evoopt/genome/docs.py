"""Documentation generated from the registries (``evoopt primitives --markdown``): the slot
genome's primitives, then every block of the chain language (format 2), which wraps each
primitive and adds the blocks the slot language cannot say."""

from __future__ import annotations

import math

from evoopt.genome.blocks import CHAIN_CATEGORIES, GLOBAL_CATEGORIES, STAGES, BlockSpec
from evoopt.genome.blocks import REGISTRY as BLOCKS
from evoopt.genome.primitives import LR, PHASES, REGISTRY, HParam


def _bounds(h: HParam) -> str:
    if h.is_bool:
        return "true / false"
    lo = "(" if h.open_low else "["
    hi = ")" if h.open_high else "]"
    low = "−∞" if not math.isfinite(h.low) else f"{h.low:g}"
    high = "∞" if not math.isfinite(h.high) else f"{h.high:g}"
    return f"{lo}{low}, {high}{hi}"


def _row(h: HParam, arg: str) -> str:
    search = "structural" if h.is_bool else f"{h.search[0]:g} … {h.search[1]:g} ({h.scale})"
    return f"| `{h.name}` | `{arg}` | {h.default!r} | {_bounds(h)} | {search} | {h.doc} |"


def primitives_markdown() -> str:
    lines = [
        "# Primitives",
        "",
        "Generated from `evoopt/genome/primitives.py` by `evoopt primitives --markdown`;",
        "the same definitions drive the interpreter, the mutation ranges and the exporter.",
        "",
        "A step runs the phases in this order: " + " → ".join(f"`{p}`" for p in PHASES) + ".",
        "A genome's `[matrix]` table may give the parameters of 2 or more dims rules of their own",
        "(its own `lr`, tables and terms); the genome's other rules then apply to the other",
        "parameters. Primitives that act on the whole group stay at the top level: "
        + ", ".join(f"`{slot}.kind = \"{kind}\"`" for slot, kinds in REGISTRY.items()
                    for kind, prim in kinds.items() if prim.group_wide) + ".",
        "Every genome has a base learning rate:",
        "",
        "| hyperparameter | exported argument | default | valid | mutation range (scale) | |",
        "|---|---|---|---|---|---|",
        _row(LR, LR.arg),
        "",
    ]
    for slot, kinds in REGISTRY.items():
        title = "terms (a list of 1–4 update directions)" if slot == "terms" else slot
        lines += [f"## `{slot}`" if slot != "terms" else f"## {title}", ""]
        for kind, prim in kinds.items():
            lines += [f"### `{slot}.kind = \"{kind}\"` — phase `{prim.phase}`", "",
                      f"{prim.summary}. Formula: `{prim.formula}`."]
            if prim.buffers:
                lines.append("State buffers: " + ", ".join(f"`{b}`" for b in prim.buffers) + ".")
            if prim.uses:
                lines.append("Needs: " + ", ".join(f"`[{u}]`" for u in sorted(prim.uses)) + ".")
            if prim.alone_as:
                lines.append(f"With nothing else acting on the whole update it makes the same "
                             f"update as `{slot}.kind = \"{prim.alone_as}\"`, the kind the "
                             "canonical form (and the hash) then uses.")
            if prim.curvature:
                lines.append("Takes a Hessian-vector product per step: train with "
                             "`loss.backward(create_graph=True)` (the fitness runner does so "
                             "for genomes that need it); the optimizer's `seed` seeds the "
                             "Rademacher probes.")
            if prim.hparams:
                arg = (lambda h, k=kind: f"{k}_{h.name}") if slot == "terms" else \
                    (lambda h: h.arg or "—")
                lines += ["", "| hyperparameter | exported argument | default | valid | "
                          "mutation range (scale) | |", "|---|---|---|---|---|---|"]
                lines += [_row(h, "—" if h.is_bool else arg(h)) for h in prim.hparams]
            lines.append("")
    return "\n".join([*lines, *_blocks_markdown()])


_CATEGORY_TITLES = {
    "grad": "grad: transforms of the gradient, before any moment",
    "accumulate": "accumulate: state moments (they produce a signal)",
    "term": "term: directions summed into the update",
    "update": "update: acting on the whole update, after the terms",
    "schedule": "schedule (the rules' `schedule` table)",
    "clip": "clip (the top-level `clip` table)",
    "weight_decay": "weight_decay (the rules' `weight_decay` table)",
    "apply": "apply (the rules' `apply` table: how the update reaches the parameters)",
}


def _blocks_markdown() -> list[str]:
    lines = [
        "# Chain blocks (format 2)",
        "",
        "Generated from the block registry (`evoopt/genome/blocks/`). A chain genome "
        "(`format = 2`) holds global tables (`lr`, `schedule`, `weight_decay`, `apply`, `clip`, "
        "`step_count`, `matrix`) and an ordered `chain` of blocks; blocks are wired by signals "
        "(`of`, `by`: the gradient `g` or a producer's output, its `name` or its kind's "
        "default), may repeat when named, and run by stage (" + " → ".join(
            f"`{s}`" for s in STAGES) + "), then in chain order. A named instance prefixes its "
        "state, scalars and arguments with its name. "
        "`step_count = \"group\"` counts steps per param group (pytorch-optimizer), "
        "`\"param\"` per parameter (torch.optim). Every slot-layout genome converts to a "
        "chain; a chain the slot language can say keeps the slot genome's hash.",
        "",
    ]
    for category in (*CHAIN_CATEGORIES, *GLOBAL_CATEGORIES):
        specs = [s for s in BLOCKS.values() if s.category == category]
        if not specs:
            continue
        lines += [f"## {_CATEGORY_TITLES[category]}", ""]
        for spec in specs:
            lines += [f"### `{spec.kind}` — stage `{spec.stage}`", "",
                      f"{spec.summary}. Formula: `{spec.formula}`.", *_block_facts(spec)]
            if spec.hparams:
                lines += ["", "| hyperparameter | exported argument (unnamed) | default | valid | "
                          "mutation range (scale) | |", "|---|---|---|---|---|---|"]
                lines += [_row(h, "—" if h.is_bool else h.arg or "—") for h in spec.hparams]
            lines.append("")
    return lines


def _block_facts(spec: BlockSpec) -> list[str]:
    facts = []
    if spec.ports:
        facts.append("Reads: " + ", ".join(
            f"`of` (default `{spec.default_of}`)" if p == "of" else "`by` (a denominator)"
            for p in spec.ports) + ".")
    if spec.produces:
        facts.append(f"Produces: `{spec.default_out}` (a {spec.out_type}; when named, its name).")
    if spec.state:
        facts.append("State: " + ", ".join(
            f"`{d.name}`" + (" (a copy of the parameter at first sight)" if d.init == "param"
                             else "") for d in spec.state) + ".")
    if spec.reads_previous:
        facts.append("Reads its producer's value of the previous step.")
    if spec.builds_update:
        facts.append("Acts on the whole update u (the terms are summed into u first).")
    if spec.curvature:
        facts.append("Takes a Hessian-vector product per step.")
    if spec.legacy is not None:
        facts.append(f"Slot layout: `{spec.legacy[0]}.kind = \"{spec.legacy[1]}\"`"
                     + (" (by the signal it reads)" if spec.legacy_of else "") + ".")
    return facts
