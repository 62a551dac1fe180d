"""A realistic small campaign written through the store API (until the runner exists).

``build_campaign(dir)`` writes 3 generations: seeds adam/adan (operator "seed"), children by
"mutation"/"crossover" with parents, one cached duplicate, one individual stopped at a hurdle,
one failure, evaluations per stage/seed, generation stats, a ``summary``, tuned baselines and
``best_optimizer.py``. Uses real genomes from ``evoopt.genome`` when it is importable.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
import tomllib
from pathlib import Path
from typing import Any

from evoopt.campaign.store import CampaignStore

# Strings with HTML in them: the report must escape them.
#: The tiny real campaign the campaign and hostile-input tests start from.
TINY = Path(__file__).resolve().parent / "data" / "campaign-tiny.toml"


def tiny_config(**changes: dict) -> dict:
    """The tiny campaign's config as a dict, with some sections' values changed (``stages``
    replaced whole)."""
    data = tomllib.loads(TINY.read_text())
    for section, values in changes.items():
        if section == "stages":
            data["stages"] = values
        else:
            data.setdefault(section, {}).update(values)
    return data


HOSTILE = "<script>alert('x')</script>"

WINNER = "g2-0"
# the winner's first-parent line back to its seed, seed first
WINNER_LINE = ["adam", "g0-0", "g1-0", "g2-0"]
# every ancestor of the winner (g1-0 is a crossover of g0-0 and adan)
WINNER_ANCESTORS = {"g2-0", "g1-0", "g0-0", "adam", "adan"}

def _seed(name: str) -> dict[str, Any]:
    from evoopt.genome import seed_genome

    return seed_genome(name).to_dict()


def _describe(d: dict[str, Any]) -> tuple[str, str]:
    """(hash, formula) via the real Genome when the dict is valid, else stand-ins."""
    try:
        from evoopt.genome import Genome

        g = Genome.from_dict(d)
        return g.hash, g.formula()
    except Exception:
        blob = json.dumps(d, sort_keys=True).encode()
        blocks = " → ".join(b.get("kind", "?") for b in d.get("blocks", []))
        return hashlib.sha256(blob).hexdigest()[:16], f"Δθ = -{d.get('lr', 0):.3g} · {blocks}"


def _leaf_paths(d: Any, prefix: tuple = ()) -> list[tuple]:
    out: list[tuple] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _leaf_paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _leaf_paths(v, (*prefix, i))
    else:
        out.append(prefix)
    return out


def _get(d: Any, path: tuple) -> Any:
    for key in path:
        d = d[key]
    return d


def _set(d: Any, path: tuple, value: Any) -> None:
    _get(d, path[:-1])[path[-1]] = value


def _label(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _mutate(d: dict[str, Any], which: int, factor: float) -> tuple[dict[str, Any], str]:
    """Scale the ``which``-th positive float leaf by ``factor``; returns (genome, change)."""
    d = copy.deepcopy(d)
    paths = [
        p
        for p in _leaf_paths(d)
        if isinstance(_get(d, p), float) and _get(d, p) > 0 and p[-1] != "weight"
    ]
    path = paths[which % len(paths)]
    old = _get(d, path)
    new = float(f"{old * factor:.4g}")
    if new >= 1 > old:  # keep betas below one
        new = float(f"{old / factor:.4g}")
    _set(d, path, new)
    return d, f"{_label(path)} {old:g}→{new:g}"


# a line appended to the exported source: the report must show it escaped, verbatim
EXPORT_MARKER = "# <b>not bold</b> & 1 < 2"


def _export(genome: dict[str, Any]) -> str:
    """The winner's source via the real exporter (no stand-in: a broken exporter must fail the
    report tests)."""
    from evoopt.genome import Genome
    from evoopt.genome.export import export_genome

    return export_genome(Genome.from_dict(genome))


def _valid(d: dict[str, Any]) -> bool:
    try:
        from evoopt.genome import Genome
    except ImportError:
        return True
    try:
        Genome.from_dict(d)
    except Exception:
        return False
    return True


def _crossover(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``a`` with the first top-level section where ``b`` differs taken from ``b``."""
    ha, hb = _describe(a)[0], _describe(b)[0]
    for key in b:
        if key in ("name", "description") or a.get(key) == b[key]:
            continue
        child = copy.deepcopy(a)
        child[key] = copy.deepcopy(b[key])
        if _valid(child) and _describe(child)[0] not in (ha, hb):
            return child, f"{key} from second parent"
    child, change = _mutate(a, 1, 0.97)
    return child, f"crossover; {change}"


def _fit(uid: str, seed: int, stage: str, base: float) -> float:
    """Deterministic pseudo-noise around ``base``."""
    h = int(hashlib.md5(f"{uid}/{seed}/{stage}".encode()).hexdigest()[:6], 16)
    return round(base + ((h % 1000) / 1000 - 0.5) * 0.02, 4)


def _curve(fit: float, seed: int, n: int = 25) -> list[float]:
    """A plausible decreasing training-loss curve that ends lower for a fitter optimizer."""
    return [
        round(2.3 * (1 - 1.2 * fit * (k / (n - 1)) ** 0.6) + 0.03 * ((k * 7 + seed) % 5 - 2), 4)
        for k in range(n)
    ]


def build_campaign(campaign_dir: str | Path) -> dict[str, Any]:
    """Write the campaign; returns ``{"dir", "individuals": {uid: row}, "evaluations": n}``."""
    campaign_dir = Path(campaign_dir)
    campaign_dir.mkdir(parents=True, exist_ok=True)
    t0 = 1_750_000_000.0
    genomes: dict[str, dict[str, Any]] = {"adam": _seed("adam"), "adan": _seed("adan")}
    # uid: (generation, operator, parents, genome-maker, base fitness, status, extra)
    plan: list[tuple[str, int, str, list[str], float, str]] = [
        ("adam", 0, "seed", [], 0.52, "evaluated"),
        ("adan", 0, "seed", [], 0.50, "evaluated"),
        ("g0-0", 0, "mutation", ["adam"], 0.54, "evaluated"),
        ("g0-1", 0, "mutation", ["adan"], 0.47, "stopped_at_hurdle"),
        ("g1-0", 1, "crossover", ["g0-0", "adan"], 0.56, "evaluated"),
        ("g1-1", 1, "mutation", ["adan"], 0.51, "evaluated"),
        ("g1-2", 1, "mutation", ["g0-0"], 0.54, "cached"),
        ("g1-3", 1, "mutation", ["adam"], -1.0, "failed"),
        ("g2-0", 2, "mutation", ["g1-0"], 0.59, "evaluated"),
        ("g2-1", 2, "crossover", ["g1-1", "g1-0"], 0.55, "evaluated"),
        ("g2-2", 2, "mutation", ["g1-1"], 0.45, "stopped_at_hurdle"),
    ]
    changes: dict[str, str | None] = {"adam": None, "adan": None}
    for i, (uid, _gen, op, parents, _base, status) in enumerate(plan):
        if op == "mutation":
            if status == "cached":  # a duplicate of its parent's genome: dedupe by hash
                genomes[uid], changes[uid] = copy.deepcopy(genomes[parents[0]]), "no-op mutation"
            else:
                which = 0 if uid == WINNER else i  # the winner's step raises the lr
                factor = 1.5 if uid == WINNER else 0.8 + 0.05 * i
                genomes[uid], changes[uid] = _mutate(genomes[parents[0]], which, factor)
        elif op == "crossover":
            genomes[uid], changes[uid] = _crossover(genomes[parents[0]], genomes[parents[1]])
    # hostile change descriptions (must be escaped), one on the winner's line
    changes["g2-1"] = HOSTILE
    changes["g1-0"] = f"{changes['g1-0']} {HOSTILE}"

    n_evals = 0
    with CampaignStore(campaign_dir) as store:
        store.set_meta(
            "config",
            {
                "name": "tiny-test <campaign>",
                "task": "cifar10-cpu",
                "seeds": ["adam", "adan"],
                "strategy": {"population": 4, "generations": 3, "mutation_rate": 0.8},
                "stages": [{"name": "screen", "seeds": 1}, {"name": "full", "seeds": 2}],
            },
        )
        store.set_meta("state", "running")
        store.set_meta("started_at", t0)
        for i, (uid, gen, op, parents, base, status) in enumerate(plan):
            h, formula = _describe(genomes[uid])
            if uid == "g1-1":
                formula = f"{formula}  {HOSTILE}"
            fitness = None if status == "failed" else base
            row = dict(
                uid=uid,
                generation=gen,
                operator=op,
                parents=parents,
                genome=genomes[uid],
                hash=h,
                behaviour_hash="b" + h[:15],
                formula=formula,
                fitness=fitness,
                status=status,
                change=changes[uid],
                created_at=t0 + 10 * i,
                stage_reached=None,
            )
            if status == "cached":
                row.update(
                    cached_from=parents[0],
                    cache_kind="hash",
                    fitness=store.get_individual(parents[0])["fitness"],
                    stage_reached="full",
                )
            store.add_individual(**row)
            if status == "cached":
                continue
            stages = [("screen", [0])]
            if status == "evaluated":
                stages.append(("full", [0, 1]))
            if status == "failed":
                store.add_evaluation(
                    uid=uid,
                    hash=h,
                    stage="screen",
                    seed=0,
                    split="val",
                    fitness=-1.0,
                    status="diverged",
                    message="loss is nan",
                    steps=37,
                    wall_time_s=1.2,
                    worker="w0",
                    train_loss_curve=[2.3, 5.1, None],
                )
                store.update_individual(uid, stage_reached="screen", fitness=-1.0)
                n_evals += 1
                continue
            for stage, seeds in stages:
                for seed in seeds:
                    fit = _fit(uid, seed, stage, base)
                    store.add_evaluation(
                        uid=uid,
                        hash=h,
                        stage=stage,
                        seed=seed,
                        split="val",
                        fitness=fit,
                        val_accuracy=fit,
                        val_loss=2.0 - 2 * fit,
                        status="ok",
                        message="",
                        steps=200 if stage == "screen" else 600,
                        wall_time_s=3.5,
                        worker=f"w{seed}",
                        created_at=t0 + 10 * i + seed,
                        train_loss_curve=_curve(fit, seed, n=10),
                    )
                    n_evals += 1
            store.update_individual(uid, stage_reached=stages[-1][0])
        # final stage: winner and seeded baselines on 3 seeds
        per_seed: dict[str, list[float]] = {}
        for uid in (WINNER, "adam", "adan"):
            ind = store.get_individual(uid)
            per_seed[uid] = []
            for seed in (100, 101, 102):
                fit = _fit(uid, seed, "final", ind["fitness"])
                store.add_evaluation(
                    uid=uid,
                    hash=ind["hash"],
                    stage="final",
                    seed=seed,
                    split="val",
                    fitness=fit,
                    val_accuracy=fit,
                    val_loss=1.0,
                    status="ok",
                    steps=1200,
                    wall_time_s=7.0,
                    worker="w0",
                    train_loss_curve=_curve(fit, seed),
                )
                per_seed[uid].append(fit)
                n_evals += 1
            store.update_individual(uid, stage_reached="final")
        for gen in range(3):
            inds = [r for r in store.individuals(generation=gen)]
            fits = [r["fitness"] for r in inds if r["fitness"] is not None]
            best = max(inds, key=lambda r: r["fitness"] if r["fitness"] is not None else -9)
            store.add_generation(
                generation=gen,
                best=max(fits),
                median=statistics.median(fits),
                mean=statistics.fmean(fits),
                std=statistics.pstdev(fits),
                best_uid=best["uid"],
                n_individuals=len(inds),
                n_evaluated=sum(r["status"] in ("evaluated", "failed") for r in inds),
                n_cached=sum(r["status"] == "cached" for r in inds),
                n_saved_by_hurdles=sum(r["status"] == "stopped_at_hurdle" for r in inds),
                wall_time_s=40.0 + gen,
                finished_at=t0 + 100 * (gen + 1),
            )
        winner = store.get_individual(WINNER)
        comparison = []
        for name, uid in (("winner", WINNER), ("adam", "adam"), ("adan", "adan")):
            xs = per_seed[uid]
            comparison.append(
                {
                    "name": name,
                    "uid": uid,
                    "fitness_mean": statistics.fmean(xs),
                    "fitness_std": statistics.stdev(xs),
                    "val_accuracy_mean": statistics.fmean(xs),
                    "n_seeds": len(xs),
                    "per_seed": xs,
                }
            )
        store.set_meta(
            "baselines",
            [
                {
                    "name": "adam-tuned",
                    "uid": None,
                    "fitness_mean": 0.565,
                    "fitness_std": 0.004,
                    "val_accuracy_mean": 0.565,
                    "n_seeds": 3,
                    "per_seed": [0.561, 0.565, 0.569],
                    "lr": 3e-3,
                }
            ],
        )
        store.set_meta(
            "summary",
            {
                "winner": {
                    "uid": WINNER,
                    "hash": winner["hash"],
                    "formula": winner["formula"],
                    "fitness_mean": statistics.fmean(per_seed[WINNER]),
                    "fitness_std": statistics.stdev(per_seed[WINNER]),
                    "seeds": per_seed[WINNER],
                },
                "comparison": comparison,
                "evaluations_done": n_evals,
                "evaluations_cached": 2,
                "evaluations_saved_by_hurdles": 4,
                "wall_time_s": 123.4,
                "exported": "best_optimizer.py",
            },
        )
        store.set_meta("winner_uid", WINNER)
        store.set_meta("wall_time_s", 123.4)
        store.set_meta("finished_at", t0 + 400)
        store.set_meta("state", "finished")
        individuals = {r["uid"]: r for r in store.individuals()}
    paid = [r["hash"] for r in individuals.values() if r["status"] != "cached"]
    assert len(set(paid)) == len(paid), "fixture genomes must differ"
    (campaign_dir / "best_optimizer.py").write_text(
        _export(individuals[WINNER]["genome"]) + f"\n{EXPORT_MARKER}\n", "utf-8"
    )
    return {"dir": campaign_dir, "individuals": individuals, "evaluations": n_evals}
