"""Campaign configuration (``experiments/*.toml``), validated with errors that name the field.

Layout::

    [campaign]   name, seed, population, generations, max_evaluations, max_train_steps (a
                 compute budget: training steps run by the search's evaluations; 0 = none),
                 seeds (genome names/files)
    [selection]  method = "tournament" | "regularized", tournament_size, elitism,
                 confidence = k (rank on mean - k x SE over the stage's seeds; 0 = the mean)
    [variation]  crossover_rate, mutation_rates = {operator = weight}, max_terms,
                 lr_screen = [0.33, 3.0] (lr multiples also tried for every new structure),
                 initial_random = N (random genomes in generation 0 beside the seeds),
                 adapt_rates = bool (mutation rates scaled by each operator's success),
                 surrogate_pool = K (K children proposed per child paid for; a k-NN surrogate
                 of every told candidate keeps the best; 1 = off)
    [fitness]    task (name in fitness/ or path), split = "val", overrides = {field = value};
                 or tasks = [..] (several tasks, selected on together: each scored relative to
                 the seeded Adam, :mod:`evoopt.fitness.multitask`) with weights = [..]
    [[stages]]   name, seeds = [..], overrides = {..},
                 hurdle = "none"|"median"|"top:F"|"<seed name>"|float ("top:F": the best
                 fraction F of the generation at the previous stage goes on, by rank),
                 seeds_exempt = true (false: the seeds face the hurdle too, all but the
                 pruning reference)
    [pruning]    reference = "none" | "<seed name>" (a search run whose curve falls behind that
                 seed's run on the same stage and seed is stopped as ``pruned``:
                 :class:`~evoopt.fitness.curves.PruneRule`), margin = 0.25 (relative),
                 after = 0.25 (fraction of training before the first check), window = 5
                 (curve bins compared)
    [refine]     evaluations = N (paid runs of a TPE search over the best structure's
                 hyperparameters after the generations; part of the search's budget)
    [final]      top_k, seeds = [..], selection_seeds = [..] (fresh seeds the top_k are
                 re-measured on to pick the winner), compare = ["adam", "adan"], test_split = bool,
                 baselines = ["adam", "adamw-cosine", "lion-cosine", "nesterov-cosine"]
                 (evoopt.fitness.baselines.FAIR_BASELINES, tuned by the fair protocol),
                 lr_factors = [0.25, 0.5, 1, 2, 4] (optional: multipliers of each baseline's
                 centre lr), budget_matched = "none" | "optuna", budget_matched_budget = 0
                 (paid evaluations of the Optuna AdamW search; 0 = as many as the search paid),
                 heldout_tasks = [..] (tasks selection never sees: the winner and the fair
                 baselines are tuned and compared on each, for transfer), funnel = bool
                 (default: true when heldout_tasks is set; needs heldout_tasks): the top_k
                 finalists, in the order of their selection-seed score, must each not be
                 significantly worse (> 2 paired SE, final seeds, val split) than tuned
                 AdamW-cosine on any held-out task, each with its lr tuned there by the fair
                 protocol; the winner is the first finalist that passes (finalists are examined
                 in that order, stopping at the first pass); if none passes, the best-ranked
                 finalist is still named, flagged ``funnel: "none passed"``. With the funnel,
                 held-out tasks' val split takes part in choosing the winner; their test split
                 (final.test_split) stays out of every choice
    [ray]        enabled, address, num_workers, cpus_per_worker, gpus_per_worker

Refused as well, each naming its field: ``final.lr_factors`` outside [0.001, 1000] or giving an
invalid lr for a baseline in use, mutation rates whose sum overflows, two stages that run the
same evaluations (seeds, task and overrides), a held-out task that is a selection task under
another name, ``final.budget_matched_budget`` without ``final.budget_matched = "optuna"``, and
``refine.evaluations`` above ``campaign.max_evaluations`` or :data:`MAX_REFINE_EVALUATIONS`.

In memory, :class:`CampaignConfig` holds the campaign basics and one group per concern:
``strategy`` (the strategy's own :class:`~evoopt.strategy.strategy.StrategyConfig`: population,
``[selection]``, ``[variation]``), ``fitness``, ``stages``, ``refine``, ``final``, ``ray``. The
record a store keeps (:meth:`CampaignConfig.to_dict`) is flat, one key per field, under the keys
stores have always used (``final_top_k``, ``ray_enabled``, ...), so every store still resumes.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evoopt.campaign.common import resolve_seed
from evoopt.fileio import InputError, bare_name_hint, names_a_path, read_toml_file
from evoopt.fitness import TaskError, load_task
from evoopt.fitness.baselines import DEFAULT_BASELINES, FAIR_BASELINES, get_baseline
from evoopt.fitness.curves import check_prune_settings
from evoopt.genome import MAX_TERMS, GenomeError
from evoopt.paths import EXPERIMENTS_DIR, shipped_campaigns
from evoopt.strategy.operators import DEFAULT_MUTATION_RATES, OPERATORS
from evoopt.strategy.strategy import StrategyConfig

REQUIRED_SEEDS = ("adam", "adan")
#: Stage names the finish stores its evaluations under: the final seeds' re-evaluation, and the
#: top candidates' re-measurement on the selection seeds.
FINAL_STAGE, SELECTION_STAGE = "final", "selection"
RESERVED_STAGE_NAMES = (FINAL_STAGE, SELECTION_STAGE)
BUDGET_MATCHED = ("none", "optuna")
#: Hurdle keywords; a hurdle may also name a campaign seed or be a fitness in [-1, 1].
HURDLE_KEYWORDS = ("none", "median")
#: ``"top:F"``: promotion by rank, the best fraction F of a generation goes on (successive halving).
TOP_PREFIX = "top:"
#: The tuned baseline every finalist must not be worse than on any held-out task (the funnel).
FUNNEL_REFERENCE = "adamw-cosine"
#: Bounds that keep a typo from asking for a campaign no machine can hold (the strategy keeps
#: a population in memory; the runner asks for every child of a generation at once).
MAX_POPULATION = 10_000
MAX_GENERATIONS = 10_000
MAX_WORKERS = 4096
#: Largest training seed (seeds are stored as SQLite integers and seed numpy generators).
MAX_SEED = 2**31 - 1
#: A campaign name becomes the directory ``runs/<name>``: one plain path component.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: ``final.lr_factors`` multiply a baseline's centre lr: beyond these, no tuned lr is sane.
MIN_LR_FACTOR, MAX_LR_FACTOR = 1e-3, 1e3
#: Most paid runs refinement may spend: a TPE study of more trials samples slower than it runs.
MAX_REFINE_EVALUATIONS = 10_000


def top_fraction(hurdle: str | float) -> float | None:
    """F of a ``"top:F"`` hurdle (0 < F < 1), or None when ``hurdle`` is not one."""
    if not isinstance(hurdle, str) or not hurdle.startswith(TOP_PREFIX):
        return None
    try:
        f = float(hurdle.removeprefix(TOP_PREFIX))
    except ValueError:
        return None
    return f if 0.0 < f < 1.0 else None


class ConfigError(ValueError):
    """A malformed campaign config; the message names the offending field."""


@dataclass(frozen=True)
class Stage:
    name: str
    seeds: tuple[int, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    hurdle: str | float = "none"
    # whether the campaign's seeds skip the hurdle (the pruning reference always does: it is
    # the yardstick every other run of the stage is pruned against)
    seeds_exempt: bool = True


@dataclass(frozen=True)
class FitnessConfig:
    """``[fitness]``: what selection measures."""

    task: str = "cifar10-cpu"
    tasks: tuple[str, ...] = ()  # several selection tasks (then ``task`` is unused)
    weights: tuple[float, ...] = ()
    split: str = "val"
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def selection_tasks(self) -> tuple[str, ...]:
        """The tasks fitness is measured on: ``tasks``, or the one ``task``."""
        return self.tasks or (self.task,)


@dataclass(frozen=True)
class PruningConfig:
    """``[pruning]``: in-run pruning of the search's runs against a seed's run
    (:class:`~evoopt.fitness.curves.PruneRule`); ``reference = "none"`` turns it off."""

    reference: str = "none"
    margin: float = 0.25
    after: float = 0.25
    window: int = 5

    @property
    def enabled(self) -> bool:
        return self.reference != "none"


@dataclass(frozen=True)
class RefineConfig:
    """``[refine]``: the TPE refinement of the best structure after the generations."""

    evaluations: int = 0


@dataclass(frozen=True)
class FinalConfig:
    """``[final]``: the finish (selection seeds, final seeds, baselines, held-out tasks)."""

    top_k: int = 3
    seeds: tuple[int, ...] = (100, 101, 102)
    selection_seeds: tuple[int, ...] = ()
    compare: tuple[str, ...] = REQUIRED_SEEDS
    test_split: bool = True
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    lr_factors: tuple[float, ...] | None = None
    budget_matched: str = "none"
    budget_matched_budget: int = 0
    heldout_tasks: tuple[str, ...] = ()
    funnel: bool | None = None  # as written (None: omitted); see uses_funnel

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the final seeds are run on: val, and test with ``test_split``."""
        return ("val", "test") if self.test_split else ("val",)

    @property
    def uses_funnel(self) -> bool:
        """Whether the finalists pass the held-out funnel before one is named the winner
        (``final.funnel``; omitted: whenever there are held-out tasks)."""
        if self.funnel is None:
            return bool(self.heldout_tasks)
        return self.funnel and bool(self.heldout_tasks)


@dataclass(frozen=True)
class RayConfig:
    """``[ray]``: where evaluations run."""

    enabled: bool = True
    address: str | None = None
    num_workers: int = 0
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass(frozen=True)
class CampaignConfig:
    """A validated campaign: basics, then one group per concern (module docstring)."""

    name: str
    seed: int = 0
    generations: int = 4
    max_evaluations: int = 0
    max_train_steps: int = 0
    seeds: tuple[str, ...] = REQUIRED_SEEDS
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    stages: tuple[Stage, ...] = (Stage("full", (0,)),)
    refine: RefineConfig = field(default_factory=RefineConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    @property
    def funnel(self) -> bool:
        """Whether the finalists pass the held-out funnel (:attr:`FinalConfig.uses_funnel`)."""
        return self.final.uses_funnel

    @property
    def selection_tasks(self) -> tuple[str, ...]:
        """The tasks fitness is measured on (:attr:`FitnessConfig.selection_tasks`)."""
        return self.fitness.selection_tasks

    def to_dict(self) -> dict[str, Any]:
        """The flat record a store keeps (module docstring): one key per field."""
        record = {f.record: copy.deepcopy(getattr(self._group(f.group), f.attr))
                  for f in _FIELDS}
        record[STAGES_RECORD] = [asdict(s) for s in self.stages]
        return {key: record[key] for key in _RECORD_KEYS}

    def _group(self, group: str | None) -> Any:
        return self if group is None else getattr(self, group)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CampaignConfig:
        """Rebuild from :meth:`to_dict` (a stored config, perhaps written before some fields
        existed: those take their defaults); a malformed dict raises :class:`ConfigError` (the
        values themselves were validated when the campaign began)."""
        try:
            unknown = sorted(set(d) - set(_RECORD_KEYS))
            if unknown:
                raise ConfigError(f"unknown field(s) {', '.join(map(str, unknown))}")
            values = dict(d)
            values[STAGES_RECORD] = tuple(Stage(**{**s, "seeds": tuple(s["seeds"])})
                                          for s in d[STAGES_RECORD])
            for f in _FIELDS:
                if f.kind is list and values.get(f.record) is not None:
                    values[f.record] = tuple(values[f.record])
            return _from_record(values)
        except ConfigError:
            raise
        except (TypeError, KeyError, ValueError, AttributeError) as e:
            raise ConfigError(f"not a campaign config ({type(e).__name__}: {e})") from None


def same_campaign(stored: dict[str, Any], config: CampaignConfig) -> bool:
    """Whether a store's config is ``config``: a field added since the store was written
    counts as its default (so a campaign stored before a new option still resumes)."""
    def plain(d: dict[str, Any]) -> Any:
        return json.loads(json.dumps(d))

    try:
        filled = CampaignConfig.from_dict(stored).to_dict()
    except ValueError:
        return False
    return plain(filled) == plain(config.to_dict())


@dataclass(frozen=True)
class _Field:
    """One TOML field: where it is written, where :class:`CampaignConfig` holds it, the key of
    the stored record, and the TOML type it must have."""

    section: str
    key: str
    group: str | None  # the CampaignConfig attribute holding it; None: CampaignConfig itself
    attr: str
    record: str
    kind: type | tuple[type, ...]

    @property
    def where(self) -> str:
        return f"{self.section}.{self.key}"


_NUMBER = (int, float)
_FIELDS = tuple(_Field(*row) for row in (
    ("campaign", "name", None, "name", "name", str),
    ("campaign", "seed", None, "seed", "seed", int),
    ("campaign", "population", "strategy", "population", "population", int),
    ("campaign", "generations", None, "generations", "generations", int),
    ("campaign", "max_evaluations", None, "max_evaluations", "max_evaluations", int),
    ("campaign", "max_train_steps", None, "max_train_steps", "max_train_steps", int),
    ("campaign", "seeds", None, "seeds", "seeds", list),
    ("selection", "method", "strategy", "selection", "selection", str),
    ("selection", "tournament_size", "strategy", "tournament_size", "tournament_size", int),
    ("selection", "elitism", "strategy", "elitism", "elitism", int),
    ("selection", "confidence", "strategy", "confidence", "selection_confidence", _NUMBER),
    ("variation", "crossover_rate", "strategy", "crossover_rate", "crossover_rate", _NUMBER),
    ("variation", "mutation_rates", "strategy", "mutation_rates", "mutation_rates", dict),
    ("variation", "max_terms", "strategy", "max_terms", "max_terms", int),
    ("variation", "lr_screen", "strategy", "lr_screen", "lr_screen", list),
    ("variation", "initial_random", "strategy", "initial_random", "initial_random", int),
    ("variation", "adapt_rates", "strategy", "adapt_rates", "adapt_rates", bool),
    ("variation", "surrogate_pool", "strategy", "surrogate_pool", "surrogate_pool", int),
    ("fitness", "task", "fitness", "task", "task", str),
    ("fitness", "tasks", "fitness", "tasks", "tasks", list),
    ("fitness", "weights", "fitness", "weights", "task_weights", list),
    ("fitness", "split", "fitness", "split", "split", str),
    ("fitness", "overrides", "fitness", "overrides", "task_overrides", dict),
    ("refine", "evaluations", "refine", "evaluations", "refine_evaluations", int),
    ("final", "top_k", "final", "top_k", "final_top_k", int),
    ("final", "seeds", "final", "seeds", "final_seeds", list),
    ("final", "selection_seeds", "final", "selection_seeds", "final_selection_seeds", list),
    ("final", "compare", "final", "compare", "final_compare", list),
    ("final", "test_split", "final", "test_split", "final_test_split", bool),
    ("final", "baselines", "final", "baselines", "final_baselines", list),
    ("final", "lr_factors", "final", "lr_factors", "final_lr_factors", list),
    ("final", "budget_matched", "final", "budget_matched", "final_budget_matched", str),
    ("final", "budget_matched_budget", "final", "budget_matched_budget",
     "final_budget_matched_budget", int),
    ("final", "heldout_tasks", "final", "heldout_tasks", "final_heldout_tasks", list),
    ("final", "funnel", "final", "funnel", "final_funnel", bool),
    ("ray", "enabled", "ray", "enabled", "ray_enabled", bool),
    ("ray", "address", "ray", "address", "ray_address", str),
    ("ray", "num_workers", "ray", "num_workers", "ray_num_workers", int),
    ("ray", "cpus_per_worker", "ray", "cpus_per_worker", "ray_cpus_per_worker", _NUMBER),
    ("ray", "gpus_per_worker", "ray", "gpus_per_worker", "ray_gpus_per_worker", _NUMBER),
    ("pruning", "reference", "pruning", "reference", "pruning_reference", str),
    ("pruning", "margin", "pruning", "margin", "pruning_margin", _NUMBER),
    ("pruning", "after", "pruning", "after", "pruning_after", _NUMBER),
    ("pruning", "window", "pruning", "window", "pruning_window", int),
))
STAGES_RECORD = "stages"
#: The stored record's keys, in the order stores have always written them.
_RECORD_KEYS = tuple(k for f in _FIELDS for k in (
    (f.record, STAGES_RECORD) if f.record == "task_overrides" else (f.record,)))
# section -> TOML key -> field
_SECTIONS: dict[str, dict[str, _Field]] = {}
for _f in _FIELDS:
    _SECTIONS.setdefault(_f.section, {})[_f.key] = _f
del _f
_GROUPS = {"strategy": StrategyConfig, "fitness": FitnessConfig, "refine": RefineConfig,
           "final": FinalConfig, "ray": RayConfig, "pruning": PruningConfig}


def _from_record(values: dict[str, Any]) -> CampaignConfig:
    """A config from record keys -> values (a missing key takes its default)."""
    groups: dict[str | None, dict[str, Any]] = {}
    for f in _FIELDS:
        if f.record in values:
            groups.setdefault(f.group, {})[f.attr] = values[f.record]
    top = groups.pop(None, {})
    if STAGES_RECORD in values:
        top[STAGES_RECORD] = values[STAGES_RECORD]
    return CampaignConfig(**top, **{g: _GROUPS[g](**kw) for g, kw in groups.items()})


def _typed(where: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is not bool and bool not in (
            kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}: expected {_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {_name(kind)}, got {value!r}")
    return value


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false",
             "list": "a list", "dict": "a table"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _seed_list(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in value):
        raise ConfigError(f"{where}: expected a non-empty list of seeds (integers in "
                          f"[0, {MAX_SEED}]), got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: seeds repeat: {value!r}")
    return tuple(value)


def parse_config(data: dict[str, Any], source: str = "config",
                 base_dir: str | Path | None = None) -> CampaignConfig:
    """Validate a parsed TOML campaign; :class:`ConfigError` names ``source`` and the field.
    Task files and entries written relative resolve against ``base_dir`` (the campaign file's
    folder; else the cwd) and are recorded absolute (:func:`anchor_task`)."""
    try:
        return _parse(data, base_dir)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def anchor_task(name: str, base_dir: str | Path | None) -> str:
    """A task as a campaign records it: an entry (``./my_task.py:objective``) or a task file
    written relative made absolute against ``base_dir`` (else the cwd), so that workers and
    resumed campaigns find it from any directory; a shipped task's bare name and a module
    entry (``pkg.mod:objective``) stay as written. For one release, a relative task file that
    exists only under the cwd is accepted from there with a warning."""
    from evoopt.fitness.entry import parse_entry

    try:
        ref = parse_entry(name, base_dir)
    except TaskError as e:
        raise ConfigError(str(e)) from None
    if ref is not None:
        return ref.text
    if not names_a_path(name) or Path(name).expanduser().is_absolute():
        return str(Path(name).expanduser()) if names_a_path(name) else name
    here = (Path(base_dir) if base_dir is not None else Path.cwd()) / Path(name).expanduser()
    if not here.exists() and base_dir is not None and (Path.cwd() / name).exists():
        warnings.warn(f"task file {name!r} is not next to the campaign file ({base_dir}); "
                      f"using {Path.cwd() / name} (relative to the working directory). Task "
                      "files are read relative to the campaign file: move it or write its "
                      "path from there", stacklevel=2)
        here = Path.cwd() / name
    return str(here.resolve())


def _parse(data: dict[str, Any], base_dir: str | Path | None = None) -> CampaignConfig:
    values: dict[str, Any] = {}  # record key -> value
    for section, table in data.items():
        if section == "stages":
            continue
        if section not in _SECTIONS:
            raise ConfigError(f"[{section}]: unknown section (allowed: "
                              f"{', '.join([*_SECTIONS, 'stages'])})")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}]: expected a table, got {table!r}")
        for key, value in table.items():
            spec = _SECTIONS[section].get(key)
            if spec is None:
                raise ConfigError(f"{section}.{key}: unknown field (allowed: "
                                  f"{', '.join(_SECTIONS[section])})")
            values[spec.record] = _typed(spec.where, value, spec.kind)
    if "name" not in values:
        raise ConfigError("campaign.name: missing")
    _check_ranges(values)
    values[STAGES_RECORD] = _parse_stages(data.get("stages"))
    for key, where in (("final_seeds", "final.seeds"),
                       ("final_selection_seeds", "final.selection_seeds")):
        if key in values:
            values[key] = _seed_list(where, values[key])
    for key in ("seeds", "final_compare", "final_baselines"):
        if key in values:
            values[key] = tuple(values[key])
    _parse_task_lists(values)
    for key in ("task", "tasks", "final_heldout_tasks"):
        if key in values:
            value = values[key]
            values[key] = (anchor_task(value, base_dir) if isinstance(value, str) else
                           tuple(anchor_task(n, base_dir) for n in value))
    if "lr_screen" in values:
        factors = values["lr_screen"]
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f != 1
                   and f < 1e3 for f in factors):
            raise ConfigError(f"variation.lr_screen: expected lr multipliers > 0 other than 1, "
                              f"got {factors!r}")
        values["lr_screen"] = tuple(float(f) for f in factors)
    if "final_lr_factors" in values:
        grid = values["final_lr_factors"]
        if not grid or not all(isinstance(f, (int, float)) and not isinstance(f, bool)
                               and MIN_LR_FACTOR <= f <= MAX_LR_FACTOR for f in grid):
            raise ConfigError(f"final.lr_factors: expected positive multipliers of each "
                              f"baseline's centre lr, each in [{MIN_LR_FACTOR:g}, "
                              f"{MAX_LR_FACTOR:g}], got {grid!r}")
        values["final_lr_factors"] = tuple(float(f) for f in grid)
    if values.get("final_funnel") and "final_heldout_tasks" not in values:
        raise ConfigError("final.funnel: the funnel compares the finalists on held-out tasks; "
                          "set final.heldout_tasks (or drop final.funnel)")
    config = _from_record(values)
    _check_genomes(config)
    _check_tasks(config)
    _check_lr_grids(config)
    stage_seeds = {s for st in config.stages for s in st.seeds}
    final = config.final
    if set(final.seeds) & stage_seeds:
        raise ConfigError(f"final.seeds: must be fresh seeds, not used by any stage "
                          f"(overlap: {sorted(set(final.seeds) & stage_seeds)})")
    used = stage_seeds | set(final.seeds)
    if set(final.selection_seeds) & used:
        raise ConfigError(f"final.selection_seeds: must be fresh seeds, used by no stage and not "
                          f"final.seeds (overlap: "
                          f"{sorted(set(final.selection_seeds) & used)})")
    return config


def _check_genomes(config: CampaignConfig) -> None:
    """Every genome the campaign names exists and is valid, and each is used as intended."""
    for i, name in enumerate(config.seeds):
        try:
            resolve_seed(name)
        except GenomeError as e:
            raise ConfigError(f"campaign.seeds[{i}]: {e}") from None
    if len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"campaign.seeds: names repeat: {list(config.seeds)!r}")
    compare = config.final.compare
    for i, name in enumerate(compare):
        if not isinstance(name, str) or name not in config.seeds:
            raise ConfigError(f"final.compare[{i}]: {name!r} is not one of the campaign's seeds "
                              f"(campaign.seeds: {', '.join(config.seeds)}); only seeds are "
                              "compared")
    if len(set(compare)) != len(compare):
        raise ConfigError(f"final.compare: names repeat: {list(compare)!r}")
    pruning = config.pruning
    if pruning.enabled and pruning.reference not in config.seeds:
        raise ConfigError(f"pruning.reference: {pruning.reference!r} is not one of the "
                          f"campaign's seeds (campaign.seeds: {', '.join(config.seeds)}), nor "
                          "\"none\"")
    try:
        check_prune_settings(pruning.margin, pruning.after, pruning.window, "pruning")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for i, stage in enumerate(config.stages):
        hurdle = stage.hurdle
        if isinstance(hurdle, float):
            if not (math.isfinite(hurdle) and -1.0 <= hurdle <= 1.0):
                raise ConfigError(f"stages[{i}].hurdle: a fitness threshold must be a finite "
                                  f"number in [-1, 1], got {hurdle!r}")
        elif hurdle.startswith(TOP_PREFIX):
            if top_fraction(hurdle) is None:
                raise ConfigError(f"stages[{i}].hurdle: \"top:F\" needs a fraction F in (0, 1), "
                                  f"got {hurdle!r}")
        elif hurdle not in HURDLE_KEYWORDS and hurdle not in config.seeds:
            raise ConfigError(f"stages[{i}].hurdle: expected \"none\", \"median\", \"top:F\", "
                              "a number or "
                              f"one of the campaign's seeds ({', '.join(config.seeds)}), "
                              f"got {hurdle!r}")


def _check_lr_grids(config: CampaignConfig) -> None:
    """Every lr grid point of every baseline the finish tunes (``final.baselines``, and the
    funnel's reference) is a valid lr: ``final.lr_factors`` times each centre lr."""
    factors = config.final.lr_factors
    if factors is None:
        return
    names = dict.fromkeys([*config.final.baselines,
                           *([FUNNEL_REFERENCE] if config.funnel else [])])
    for name in names:
        centre = get_baseline(name).base().lr
        spec = get_baseline(name, factors)
        for point in spec.points():
            try:
                spec.genome_at(point)
            except ValueError as e:
                raise ConfigError(f"final.lr_factors: {name}'s lr grid point {point['lr']:g} "
                                  f"({point['lr'] / centre:g} × its centre lr {centre:g}) is "
                                  f"not a usable lr ({e})") from None


def _parse_task_lists(values: dict[str, Any]) -> None:
    """``fitness.tasks`` / ``fitness.weights`` / ``final.heldout_tasks``: shapes and names."""
    if "tasks" in values and "task" in values:
        raise ConfigError("fitness.tasks: give fitness.task (one task) or fitness.tasks "
                          "(several), not both")
    for attr, where in (("tasks", "fitness.tasks"), ("final_heldout_tasks", "final.heldout_tasks")):
        if attr not in values:
            continue
        names = values[attr]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{where}: expected a non-empty list of task names or files, "
                              f"got {names!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: names repeat: {names!r}")
        values[attr] = tuple(names)
    if "task_weights" in values:
        weights = values["task_weights"]
        if "tasks" not in values:
            raise ConfigError("fitness.weights: weights are for several tasks (fitness.tasks)")
        if len(weights) != len(values["tasks"]) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                and w > 0 for w in weights):
            raise ConfigError(f"fitness.weights: expected one positive weight per task of "
                              f"fitness.tasks ({len(values['tasks'])}), got {weights!r}")
        values["task_weights"] = tuple(float(w) for w in weights)


def _spec_key(spec: Any, *, with_name: bool = True) -> str:
    """A task spec as a comparable string (``with_name=False``: name and description left out,
    so a renamed copy compares equal)."""
    d = spec.to_dict()
    if not with_name:
        d.pop("name", None)
        d.pop("description", None)
    return json.dumps(d, sort_keys=True)


def _check_tasks(config: CampaignConfig) -> None:
    """Every task exists, every override (campaign-wide, then per stage) gives a valid spec for
    each, no two stages run the same evaluations, and held-out tasks are not selected on (not
    by name, nor as a renamed copy)."""
    fitness = config.fitness
    where = "fitness.tasks" if fitness.tasks else "fitness.task"
    names = []
    selected: set[str] = set()  # every selection task's spec, as loaded and as each stage runs
    stage_runs: list[list[str]] = [[] for _ in config.stages]
    for i, name in enumerate(fitness.selection_tasks):
        at = f"{where}[{i}]" if fitness.tasks else where
        try:
            base = load_task(name)
        except TaskError as e:
            raise ConfigError(f"{at}: {e}") from None
        names.append(base.name)
        selected.add(_spec_key(base, with_name=False))
        try:
            base = base.with_overrides(**fitness.overrides)
        except TaskError as e:
            raise ConfigError(f"fitness.overrides: {e} (task {base.name})") from None
        selected.add(_spec_key(base, with_name=False))
        for j, stage in enumerate(config.stages):
            try:
                staged = base.with_overrides(**stage.overrides)
            except TaskError as e:
                raise ConfigError(f"stages[{j}].overrides: {e} (task {base.name})") from None
            selected.add(_spec_key(staged, with_name=False))
            stage_runs[j].append(_spec_key(staged))
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two tasks share a name ({', '.join(names)})")
    first: dict[str, int] = {}
    for j, (stage, runs) in enumerate(zip(config.stages, stage_runs, strict=True)):
        key = json.dumps([sorted(stage.seeds), runs])
        if key in first:
            i = first[key]
            raise ConfigError(f"stages[{j}]: runs the same evaluations as stages[{i}] "
                              f"({config.stages[i].name!r}: same seeds, task and overrides), so "
                              "it measures nothing new; change its seeds or overrides, or drop it")
        first[key] = j
    for i, name in enumerate(config.final.heldout_tasks):
        try:
            task = load_task(name)
        except TaskError as e:
            raise ConfigError(f"final.heldout_tasks[{i}]: {e}") from None
        if task.name in names:
            raise ConfigError(f"final.heldout_tasks[{i}]: {task.name!r} is selected on "
                              "(fitness.task/tasks); a held-out task must never enter selection")
        if _spec_key(task, with_name=False) in selected:
            raise ConfigError(f"final.heldout_tasks[{i}]: {task.name!r} is a selection task "
                              f"({where}: {', '.join(names)}) under another name: the same "
                              "spec, so it is not held out; a held-out task must differ from "
                              "every task selected on")


def _check_ranges(v: dict[str, Any]) -> None:
    def need(attr: str, where: str, ok: bool, what: str) -> None:
        if attr in v and not ok:
            raise ConfigError(f"{where}: {what}, got {v[attr]!r}")

    population = StrategyConfig.population
    need("name", "campaign.name", bool(NAME_PATTERN.fullmatch(v.get("name", "x"))),
         "must be a plain directory name (letters, digits, '.', '_', '-'; no path separator "
         "or '..'; at most 100 characters): it names runs/<name>")
    need("seed", "campaign.seed", 0 <= v.get("seed", 0) < 2**63, "must be in [0, 2**63)")
    need("population", "campaign.population", 2 <= v.get("population", 2) <= MAX_POPULATION,
         f"must be in [2, {MAX_POPULATION}]")
    need("generations", "campaign.generations",
         1 <= v.get("generations", 1) <= MAX_GENERATIONS, f"must be in [1, {MAX_GENERATIONS}]")
    need("max_evaluations", "campaign.max_evaluations", v.get("max_evaluations", 0) >= 0,
         "must be ≥ 0 (0 = no budget)")
    need("max_train_steps", "campaign.max_train_steps",
         0 <= v.get("max_train_steps", 0) < 2**62, "must be ≥ 0 (0 = no compute budget)")
    need("surrogate_pool", "variation.surrogate_pool", 1 <= v.get("surrogate_pool", 1) <= 64,
         "must be in [1, 64] (1 = no surrogate)")
    need("initial_random", "variation.initial_random",
         0 <= v.get("initial_random", 0) <= v.get("population", population),
         f"must be in [0, population={v.get('population', population)}]")
    need("selection", "selection.method", v.get("selection") in ("tournament", "regularized"),
         'must be "tournament" or "regularized"')
    pop = v.get("population", population)
    need("tournament_size", "selection.tournament_size",
         1 <= v.get("tournament_size", 1) <= pop, f"must be in [1, population={pop}]")
    need("elitism", "selection.elitism", 0 <= v.get("elitism", 0) < pop,
         f"must be in [0, population={pop})")
    confidence = v.get("selection_confidence", 0.0)
    need("selection_confidence", "selection.confidence",
         math.isfinite(confidence) and 0.0 <= confidence <= 10.0,
         "must be in [0, 10] (standard errors below the mean; 0 = rank on the mean)")
    need("crossover_rate", "variation.crossover_rate", 0.0 <= v.get("crossover_rate", 0) <= 1.0,
         "must be in [0, 1]")
    need("max_terms", "variation.max_terms", 1 <= v.get("max_terms", 1) <= MAX_TERMS,
         f"must be in [1, {MAX_TERMS}]")
    need("split", "fitness.split", v.get("split") == "val",
         '"val" only: the test split is for final reports (final.test_split)')
    need("final_top_k", "final.top_k", v.get("final_top_k", 1) >= 1, "must be ≥ 1")
    need("refine_evaluations", "refine.evaluations",
         0 <= v.get("refine_evaluations", 0) <= MAX_REFINE_EVALUATIONS,
         f"must be in [0, {MAX_REFINE_EVALUATIONS}] (0 = no refinement)")
    budget = v.get("max_evaluations", 0)
    need("refine_evaluations", "refine.evaluations",
         budget <= 0 or v.get("refine_evaluations", 0) <= budget,
         f"must be at most campaign.max_evaluations ({budget}): refinement's runs are the "
         "search's")
    need("final_budget_matched", "final.budget_matched",
         v.get("final_budget_matched") in BUDGET_MATCHED, 'must be "none" or "optuna"')
    need("final_budget_matched_budget", "final.budget_matched_budget",
         v.get("final_budget_matched_budget", 0) >= 0,
         "must be ≥ 0 (0 = the paid evaluations of the campaign's search)")
    need("final_budget_matched_budget", "final.budget_matched_budget",
         v.get("final_budget_matched", "none") == "optuna",
         'is the budget of the Optuna search, which runs only with final.budget_matched = '
         '"optuna" (set that, or drop final.budget_matched_budget)')
    if "final_baselines" in v:
        names = v["final_baselines"]
        unknown = [n for n in names if not isinstance(n, str) or n not in FAIR_BASELINES]
        if unknown:
            raise ConfigError(f"final.baselines: unknown baseline(s) {unknown!r} (choose from: "
                              f"{', '.join(FAIR_BASELINES)})")
        if len(set(names)) != len(names):
            raise ConfigError(f"final.baselines: names repeat: {names!r}")
    need("ray_num_workers", "ray.num_workers", 0 <= v.get("ray_num_workers", 0) <= MAX_WORKERS,
         f"must be in [0, {MAX_WORKERS}] (0 = one per CPU)")
    need("ray_cpus_per_worker", "ray.cpus_per_worker",
         0 < v.get("ray_cpus_per_worker", 1) <= 1024, "must be in (0, 1024]")
    need("ray_gpus_per_worker", "ray.gpus_per_worker",
         0 <= v.get("ray_gpus_per_worker", 0) <= 8, "must be in [0, 8]")
    if "seeds" in v:
        seeds = v["seeds"]
        if not all(isinstance(s, str) for s in seeds):
            raise ConfigError(f"campaign.seeds: expected genome names or files, got {seeds!r}")
        missing = [s for s in REQUIRED_SEEDS if s not in seeds]
        if missing:
            raise ConfigError(f"campaign.seeds: must include {' and '.join(REQUIRED_SEEDS)} "
                              f"(missing: {', '.join(missing)})")
    if "mutation_rates" in v:
        _check_mutation_rates(v["mutation_rates"])


def _check_mutation_rates(rates: dict[str, Any]) -> None:
    """``variation.mutation_rates``: known operators, finite weights ≥ 0 whose sum, once merged
    with the defaults, is finite and positive (the strategy draws operators by weight / sum)."""
    for k, w in rates.items():
        if k not in OPERATORS:
            raise ConfigError(f"variation.mutation_rates.{k}: unknown mutation operator "
                              f"(allowed: {', '.join(OPERATORS)})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (
                math.isfinite(w) and w >= 0):
            raise ConfigError(f"variation.mutation_rates.{k}: expected a weight ≥ 0, got {w!r}")
    total = sum(float(w) for w in (dict(DEFAULT_MUTATION_RATES) | rates).values())
    if not total:
        raise ConfigError("variation.mutation_rates: every operator's rate is 0 once merged "
                          "with the defaults; give at least one a positive weight")
    if not math.isfinite(total):
        raise ConfigError(f"variation.mutation_rates: the rates sum to {total} once merged with "
                          "the defaults (operators are drawn by weight / sum); the weights are "
                          "relative: give smaller ones")


def _parse_stages(raw: Any) -> tuple[Stage, ...]:
    if raw is None:
        return CampaignConfig.stages
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"stages: expected a non-empty array of [[stages]] tables, got {raw!r}")
    stages = []
    for i, table in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {table!r}")
        for key in table:
            if key not in ("name", "seeds", "overrides", "hurdle", "seeds_exempt"):
                raise ConfigError(f"{where}.{key}: unknown field (allowed: name, seeds, "
                                  "overrides, hurdle, seeds_exempt)")
        name = _typed(f"{where}.name", table.get("name", f"stage{i}"), str)
        if name in RESERVED_STAGE_NAMES or name in {s.name for s in stages}:
            raise ConfigError(f"{where}.name: {name!r} is reserved or repeated")
        seeds = _seed_list(f"{where}.seeds", table.get("seeds", [0]))
        overrides = _typed(f"{where}.overrides", table.get("overrides", {}), dict)
        hurdle = table.get("hurdle", "none")
        if i == 0 and hurdle != "none":
            raise ConfigError(f"{where}.hurdle: the first stage has no hurdle (got {hurdle!r})")
        if isinstance(hurdle, bool) or not isinstance(hurdle, (str, int, float)):
            raise ConfigError(f"{where}.hurdle: expected \"none\", \"median\", a seed genome "
                              f"name or a number, got {hurdle!r}")
        if not isinstance(hurdle, str):
            try:
                hurdle = float(hurdle)
            except OverflowError:
                raise ConfigError(f"{where}.hurdle: {hurdle!r} is too large") from None
        exempt = _typed(f"{where}.seeds_exempt", table.get("seeds_exempt", True), bool)
        stages.append(Stage(name, seeds, overrides, hurdle, exempt))
    return tuple(stages)


def campaign_config_path(name_or_path: str | Path) -> Path:
    """A campaign config file: a path (written as one: :func:`evoopt.fileio.names_a_path`), or
    the name of a shipped campaign (``quickstart`` is ``experiments/quickstart.toml``, found in
    a checkout or an installed wheel, even beside a file named ``quickstart``)."""
    raw = str(name_or_path)
    if isinstance(name_or_path, Path) or names_a_path(raw):
        try:
            path = Path(name_or_path).expanduser()
        except RuntimeError as e:  # an unknown ~user
            raise ConfigError(f"{raw}: not a usable path ({e})") from None
        if path.exists() or path.is_symlink():  # read_text_file judges it (FIFO, directory)
            return path
        raise ConfigError(f"{path}: campaign config not found")
    shipped = EXPERIMENTS_DIR / f"{raw}.toml"
    if not shipped.is_file():
        raise ConfigError(f"unknown campaign {raw!r}; shipped campaigns: "
                          f"{', '.join(shipped_campaigns()) or 'none found'} "
                          f"(or give the path of a .toml file){bare_name_hint(raw)}")
    return shipped


def copy_shipped_campaigns(directory: str | Path) -> list[Path]:
    """Copy every shipped campaign config into ``directory`` (created if missing), to be edited.

    Never overwrites: if any target exists, raises ``FileExistsError`` naming them and copies
    nothing. Returns the written paths.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    sources = [EXPERIMENTS_DIR / f"{name}.toml" for name in shipped_campaigns()]
    if not sources:
        raise FileNotFoundError(f"no shipped campaigns found in {EXPERIMENTS_DIR}")
    targets = [directory / src.name for src in sources]
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (nothing was copied; "
                              "move them away or choose another directory)")
    directory.mkdir(parents=True, exist_ok=True)
    for src, target in zip(sources, targets, strict=True):
        shutil.copyfile(src, target)
    return targets


def load_config(name_or_path: str | Path, *, task: str | None = None,
                task_overrides: dict[str, Any] | None = None) -> CampaignConfig:
    """Read and validate a campaign config: a path or a shipped campaign's name (a regular
    UTF-8 file of at most 1 MiB). ``task`` (``evoopt run --task``: a task name, file or entry,
    relative to the cwd) replaces the config's selection task(s); ``task_overrides`` (``--set
    field=value``) are merged into ``fitness.overrides``."""
    path = campaign_config_path(name_or_path)
    try:
        data = read_toml_file(path, "campaign config")
    except InputError as e:
        raise ConfigError(str(e)) from None
    if task is not None or task_overrides:
        fitness = data.setdefault("fitness", {})
        if not isinstance(fitness, dict):
            raise ConfigError(f"{path}: [fitness]: expected a table, got {fitness!r}")
        if task is not None:
            for key in ("tasks", "weights"):
                fitness.pop(key, None)
            fitness["task"] = anchor_task(task, None)
        if task_overrides:
            overrides = fitness.get("overrides", {})
            if not isinstance(overrides, dict):
                raise ConfigError(f"{path}: fitness.overrides: expected a table, got "
                                  f"{overrides!r}")
            fitness["overrides"] = {**overrides, **task_overrides}
    return parse_config(data, str(path), path.parent)
