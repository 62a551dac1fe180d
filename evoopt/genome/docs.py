"""Documentation generated from the primitive registry (``evoopt primitives --markdown``)."""

from __future__ import annotations

import math

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
    return "\n".join(lines)
