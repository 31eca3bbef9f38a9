"""The typed schema of every entry point's config, checked right after Hydra composes it.

``check_config(cfg, "train")`` (also ``cache``, ``prep``, ``eval``, ``export``) raises a
``ConfigError`` listing every unknown key, wrong type and out-of-range value, each with the
key, the value and what is allowed, before any data preparation, cache build or training:

    recsys-train adapter.fusion=gatd cache.dtype=int4 model.num_heads=3
    recsys-train: invalid train config (3 problems):
      cache.dtype: 'int4': Input should be 'float16', 'float32', 'bfloat16', 'int8', ... or 'float8_e4m3'
      adapter.fusion: 'gatd': Input should be 'gated' or 'add'
      model: d_model 64 is not divisible by num_heads 3

The fixed sections (paths, data, cache, eval, loss, optimizer, ...) are pydantic models
below. The sections whose shape depends on a registry member are checked against that
member's own typed signature (``recsys.config.options``): ``data.raw`` by the reader's raw
options, ``encoder.<modality>`` by the encoder kind's constructor, ``adapter`` by the tower's
options (plus the framework keys ``name``, ``modalities``, ``modality_dropout`` and, for
towers with a layer schedule, ``layers`` / ``layer_groups``; the modality knobs are checked
against the tower last, ``modality_problems``), ``model`` by the user encoder's constructor, and
every ``_target_`` (trainer, callbacks, loggers) by the target's signature.

``untrusted=True`` (a config read back from a run directory someone may have sent) also
refuses any ``_target_`` outside ``TRUSTED_TARGETS`` before importing anything; restoring a
run never instantiates a ``_target_`` anyway (``recsys.train.restore``).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import (
    BaseModel,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    create_model,
    field_validator,
)

from recsys.cache.codecs import CacheDtype, codec
from recsys.cache.file_fingerprint import DEFAULT_MEDIA_FINGERPRINT, MediaFingerprint
from recsys.cache.manifest import source_dir
from recsys.config.options import STRICT, options_model, parameters_of, problems
from recsys.data.subsample import STRATEGIES as SUBSAMPLE_STRATEGIES
from recsys.serving.formats import FORMATS

MODALITIES = ("text", "image", "video", "audio")
#: ``_target_`` prefixes a config read back from a run directory may name.
TRUSTED_TARGETS = ("pytorch_lightning.", "lightning.pytorch.", "recsys.train.")
METRIC_KEY = re.compile(r"^(val|test)/(hr|ndcg|mrr)@(\d+)$")


class ConfigError(ValueError):
    """A composed config that breaks the schema; the message lists every problem."""

    def __init__(self, lines: list[str], where: str = "config") -> None:
        self.lines = list(lines)
        count = f"{len(lines)} problem{'s' if len(lines) != 1 else ''}"
        super().__init__(f"invalid {where} ({count}):\n  " + "\n  ".join(lines))


class Section(BaseModel):
    model_config = STRICT


class Paths(Section):
    root_dir: str
    shared_data: str
    data_dir: str
    output_dir: str | None  # the Hydra run directory (None outside a Hydra run: compose API)


class Protocol(Section):
    min_interactions: Annotated[int, Field(ge=3)] = 5
    keep_last: Annotated[int, Field(ge=3)] | None = 13
    window: PositiveInt = 10


class Subsample(Section):
    """``data.subsample``: train on a fraction of the training data (recsys/data/subsample.py)."""

    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    strategy: Literal[SUBSAMPLE_STRATEGIES] = "random_users"
    seed: int | None = None  # absent or null: the run's seed


class Data(Section):
    name: str
    reader: str
    raw: dict[str, Any]
    on_error: Literal["raise", "skip"] = "raise"
    protocol: Protocol
    processed_dir: str
    media_fingerprint: MediaFingerprint = DEFAULT_MEDIA_FINGERPRINT  # recsys/cache/file_fingerprint.py
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 256
    num_workers: NonNegativeInt = 0
    subsample: Subsample = Subsample()  # training only (conf/train.yaml)


class Cache(Section):
    dir: str
    dtype: CacheDtype = "float16"  # recsys/cache/codecs.py
    on_mismatch: Literal["rebuild", "refuse"] = "rebuild"
    residency: Literal["auto", "device", "host"] = "auto"
    amp: Literal["bf16", "fp16", "none"] = "bf16"
    device: str | None = None
    progress_bar: bool = True
    verify: Literal["checksum", "size"] = "checksum"
    lock_wait_s: NonNegativeFloat | None = None

    @field_validator("dtype")
    @classmethod
    def _converted_from_the_parent(cls, dtype: str, info: ValidationInfo) -> str:
        """A converted dtype's cache lives in ``<float16 cache dir>/<dtype>`` (its source)."""
        if not codec(dtype).encoded and "dir" in info.data:
            source_dir(info.data["dir"], dtype)
        return dtype


TiePolicy = Literal["pessimistic", "optimistic", "average"]
ModalitySubset = Annotated[list[Literal[MODALITIES]], Field(min_length=1)]


def _monitor_problem(monitor: str, ks: list[int]) -> str | None:
    """Early stopping and the best checkpoint follow ``monitor``: a validation metric at one
    of the ``ks``."""
    match = METRIC_KEY.match(monitor)
    if match is None or match.group(1) != "val":
        return f"{monitor!r} must be val/<hr|ndcg|mrr>@<k>, e.g. val/hr@10"
    if int(match.group(3)) not in ks:
        return f"{monitor!r} needs k={match.group(3)} in eval.ks {ks}"
    return None


class Eval(Section):
    ks: Annotated[list[PositiveInt], Field(min_length=1)] = [5, 10, 20]
    tie_policy: TiePolicy = "pessimistic"
    chunk_size: PositiveInt = 8192
    monitor: str = "val/hr@10"
    mask_target_in_history: bool = True
    # An ANN index spec ({kind, <options>}, recsys.serving.ann; checked by index_problems):
    # each evaluation pass also ranks through it, logged as <stage>/ann_<metric>@k.
    ann: dict[str, Any] | None = None
    # Evaluate with these modalities only; test again with each subset (modality_problems).
    modalities: ModalitySubset | None = None
    modality_subsets: list[ModalitySubset] | None = None


class Prune(Section):
    """``prune``: gate pruning of modalities after training (recsys/train/modality_eval.py)."""

    gate_threshold: Annotated[float, Field(gt=0, le=1)] | None = None


class EvalOverrides(Section):
    """``recsys-eval``'s ``eval:`` block: null keeps the run's own setting."""

    ks: Annotated[list[PositiveInt], Field(min_length=1)] | None = None
    tie_policy: TiePolicy | None = None
    chunk_size: PositiveInt | None = None
    mask_target_in_history: bool | None = None
    ann: dict[str, Any] | None = None  # an index spec adds ANN metrics; null keeps the run's
    modalities: ModalitySubset | None = None  # evaluate with these only; null keeps the run's


class Loss(Section):
    name: Literal["in_batch", "full"] = "in_batch"
    targets: Literal["windows", "prefixes"] = "windows"
    mask_history: bool = True
    cross_rank_negatives: bool = False


class Distill(Section):
    """``distill`` (conf/distill/): train against a teacher run (recsys/train/distill.py);
    ``{}`` (distill=none): no teacher."""

    teacher: str | None = None  # a finished recsys-train run directory (teacher_problems)
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5  # (1-α)·CE + α·τ²·KL
    tau: PositiveFloat = 2.0


class LearningRates(Section):
    adapter: PositiveFloat
    text_head: PositiveFloat
    other: PositiveFloat


class Optimizer(Section):
    lr: LearningRates
    weight_decay: Annotated[float, Field(ge=0)] = 0.0


class LayerSchedule(Section):
    groups: PositiveInt | None = 6


class Encoders(Section):
    text: dict[str, Any] = {}
    image: dict[str, Any] = {}
    video: dict[str, Any] = {}
    audio: dict[str, Any] = {}


class TrainJob(Section):
    task_name: str
    label: str
    seed: int
    loss: Loss
    optimizer: Optimizer
    eval: Eval
    prune: Prune = Prune()
    distill: Distill = Distill()  # absent from the configs of runs made before it existed
    prepare: bool = True
    ckpt_path: str | None = None
    existing_run: Literal["resume", "refuse", "overwrite"] = "resume"
    skip_complete: bool = True
    paths: Paths
    data: Data
    encoder: Encoders
    cache: Cache
    layer_schedule: LayerSchedule
    adapter: dict[str, Any]
    model: dict[str, Any]
    trainer: dict[str, Any]
    logger: dict[str, dict[str, Any]] | None = None
    callbacks: dict[str, dict[str, Any] | None] | None = None


class CacheJob(Section):
    paths: Paths
    data: Data
    encoder: Encoders
    cache: Cache
    layer_schedule: LayerSchedule


class PrepJob(Section):
    overwrite: bool = False
    lock_wait_s: NonNegativeFloat | None = None
    paths: Paths
    data: Data


class EvalJob(Section):
    run_dir: str
    checkpoint: str = "best"
    on_changed_inputs: Literal["refuse", "warn"] = "refuse"
    cache_dtype: CacheDtype | None = None  # the run's caches read as this dtype (restore_run)
    stages: Annotated[list[Literal["val", "test"]], Field(min_length=1)] = ["val", "test"]
    accelerator: str = "auto"
    devices: PositiveInt | Literal["auto"] = 1
    strategy: str = "auto"
    eval: EvalOverrides = EvalOverrides()
    data: dict[str, Any] | None = None  # e.g. +data.processed_dir=<moved data>
    paths: Paths


class ExportJob(Section):
    run_dir: str
    checkpoint: str = "best"
    on_changed_inputs: Literal["refuse", "warn"] = "refuse"
    out_dir: str
    embeddings: Literal[FORMATS] = "float32"  # recsys.serving.formats
    index: dict[str, Any] | None = None  # {kind, <options>}: recsys.serving.ann (index_problems)
    candidates: PositiveInt = 100
    paths: Paths


JOBS: dict[str, type[Section]] = {
    "train": TrainJob,
    "cache": CacheJob,
    "prep": PrepJob,
    "eval": EvalJob,
    "export": ExportJob,
}


# ---- sections checked against a registry member -----------------------------------------
def _member(registry, name: Any, where: str) -> tuple[Any, list[str]]:
    """(member, []) or (None, [problem]) for ``registry.get(name)``."""
    if not isinstance(name, str):
        return None, [f"{where}: {name!r}: a name is required; registered: {registry.names()}"]
    if name not in registry:
        return None, [f"{where}: {name!r} is not registered; registered: {registry.names()}"]
    return registry.get(name), []


def _check_hook(member: Any, where: str, *args: Any) -> list[str]:
    """Run the member's ``check_options(*args)`` (cross-field rules) if it has one."""
    check = getattr(member, "check_options", None)
    if check is None:
        return []
    try:
        check(*args)
    except ValueError as err:
        return [f"{where}: {err}"]
    return []


def data_problems(data: Mapping[str, Any], where: str = "data") -> list[str]:
    """``data.raw`` against its reader's raw-options model."""
    from data_prep.readers import READERS

    reader, found = _member(READERS, data.get("reader"), f"{where}.reader")
    if reader is None:
        return found
    return problems(reader.options, data.get("raw") or {}, f"{where}.raw")


def encoder_problems(modality: str | None, encoder: Mapping[str, Any], where: str) -> list[str]:
    """One ``encoder/<modality>`` config against its kind's constructor ({} = no encoder;
    ``modality`` None: any modality, e.g. a nested encoder)."""
    if not encoder:
        return []
    from recsys.encoders.registry import ENCODERS

    cls, found = _member(ENCODERS, encoder.get("kind"), f"{where}.kind")
    if cls is None:
        return found
    options = {k: v for k, v in encoder.items() if k != "kind"}
    lines = problems(options_model(f"encoder {encoder['kind']}", cls.option_parameters()), options, where)
    if modality is not None and cls.modality != modality:
        lines.append(f"{where}.kind: {encoder['kind']!r} encodes {cls.modality}, not {modality}")
    if options.get("layers") is not None and options.get("layer_groups") is not None:
        lines.append(f"{where}: give either layers or layer_groups, not both (set the other to null)")
    from recsys.encoders.weights import PKG_PREFIX, weights_spec_problem

    for key, value in options.items():
        problem = weights_spec_problem(value) if str(value).startswith(PKG_PREFIX) else None
        if problem:
            lines.append(f"{where}.{key}: {problem}")
    return lines


def adapter_problems(adapter: Mapping[str, Any], encoders: Mapping[str, Any]) -> list[str]:
    """``adapter`` against its tower's options and what the tower reads."""
    from recsys.adapters import FRAMEWORK_KEYS, SCHEDULE_KEYS, TOWERS

    cls, found = _member(TOWERS, adapter.get("name"), "adapter.name")
    if cls is None:
        return found
    framework: dict[str, Any] = {"modalities": (list[Literal[MODALITIES]], []),
                                 "modality_dropout": (Annotated[float, Field(ge=0, lt=1)], 0.0)}
    if cls.layer_schedule:
        framework |= {"layers": (list[int] | dict[str, list[int]] | None, None),
                      "layer_groups": (PositiveInt | None, None)}
    keys = FRAMEWORK_KEYS + (SCHEDULE_KEYS if cls.layer_schedule else ())
    fixed = create_model("adapter_framework_keys", __config__=STRICT, **framework)
    lines = problems(fixed, {k: v for k, v in adapter.items() if k in framework}, "adapter")
    options = {k: v for k, v in adapter.items() if k not in keys}
    model = options_model(f"adapter {adapter['name']}", cls.option_parameters())
    lines += problems(model, options, "adapter")
    if lines:
        return lines
    wanted = list(adapter.get("modalities") or [])
    selected = [m for m in wanted if encoders.get(m)]
    if cls.reads is not None and not selected:
        example = wanted[0] if wanted else "text"
        return [f"adapter {adapter['name']!r} reads modalities {wanted} but no encoder is selected for "
                f"any of them: choose one, e.g. encoder/{example}=<name>"]
    if cls.reads is None and wanted:
        return [f"adapter.modalities: {wanted}: adapter {adapter['name']!r} reads no features; use []"]
    return _check_hook(cls, "adapter", selected, options) if cls.reads is not None else []


def modality_problems(values: Mapping[str, Any], trains: bool = True) -> list[str]:
    """``adapter.modality_dropout``, ``eval.modalities`` / ``eval.modality_subsets`` and
    (``trains``: not a restored run's config, which is evaluated, not pruned)
    ``prune.gate_threshold`` against the adapter's tower and its modalities that have an
    encoder (``recsys.adapters.modality_mask.knob_problems``); for an otherwise valid config."""
    from recsys.adapters import TOWERS
    from recsys.adapters.modality_mask import knob_problems

    adapter, encoders = values["adapter"], values.get("encoder") or {}
    selected = [m for m in adapter.get("modalities") or [] if encoders.get(m)]
    cached = TOWERS.get(adapter["name"]).reads == "cache"
    return knob_problems(adapter["name"], cached, selected, adapter.get("modality_dropout", 0.0),
                         values.get("eval") or {}, (values.get("prune") or {}) if trains else {})


def model_problems(model: Mapping[str, Any]) -> list[str]:
    """``model`` (the user encoder) against its constructor."""
    from recsys.models import USER_ENCODERS

    cls, found = _member(USER_ENCODERS, model.get("name"), "model.name")
    if cls is None:
        return found
    options = {k: v for k, v in model.items() if k != "name"}
    schema = options_model(f"model {model['name']}", parameters_of(cls.__init__, skip=1))
    lines = problems(schema, options, "model")
    return lines or _check_hook(cls, "model", options)


def index_problems(index: Any, where: str) -> list[str]:
    """An ANN index spec ``{kind, <options>}`` (None: no index) against its kind's builder
    in ``recsys.serving.ann``: the options are its typed keyword parameters, each at least 1."""
    if not isinstance(index, Mapping):
        return []  # None, or not a mapping (the job's own model says so)
    from recsys.serving.ann import INDEX_KINDS

    kind = index.get("kind")
    if kind not in INDEX_KINDS:
        return [f"{where}.kind: {kind!r}: Input should be one of {sorted(INDEX_KINDS)}"]
    options = {k: v for k, v in index.items() if k != "kind"}
    lines = problems(options_model(f"index {kind}", parameters_of(INDEX_KINDS[kind], skip=1)), options, where)
    return lines or [f"{where}.{key}: {value}: Input should be greater than 0"
                     for key, value in options.items() if value < 1]


def target_problems(node: Mapping[str, Any], where: str, untrusted: bool) -> list[str]:
    """A ``_target_`` node: the target exists (and, untrusted, is under ``TRUSTED_TARGETS``)
    and the other keys are parameters of its signature."""
    target = node.get("_target_")
    if not isinstance(target, str):
        return [f"{where}._target_: {target!r}: a dotted class path is required"]
    if untrusted and not target.startswith(TRUSTED_TARGETS):
        return [f"{where}._target_: {target!r} is not a class this framework builds "
                f"(allowed prefixes: {', '.join(TRUSTED_TARGETS)}); refusing the config"]
    module, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as err:
        return [f"{where}._target_: {target!r} cannot be imported ({err})"]
    options = {k: v for k, v in node.items() if k != "_target_"}
    return problems(options_model(target, parameters_of(cls.__init__, skip=1)), options, where)


def teacher_problems(teacher: Any, where: str = "distill.teacher") -> list[str]:
    """A distillation teacher must be a finished ``recsys-train`` run directory: it exists
    and holds a results.json of status complete (its checkpoint is checked when restored)."""
    if not isinstance(teacher, str):
        return []  # None (no teacher) or not a string (the section's model says so)
    what = "the run directory (hydra.run.dir) of a finished recsys-train run"
    if teacher == "???":
        return [f"{where}: required with distill=kd: pass distill.teacher=<{what}>"]
    results = Path(teacher) / "results.json"
    if not Path(teacher).is_dir():
        return [f"{where}: {teacher!r} is not a directory: pass {what}"]
    if not results.is_file():
        return [f"{where}: {teacher!r} holds no results.json (not a run directory, or a run killed "
                f"before it finished): pass {what}"]
    try:
        status = json.loads(results.read_text()).get("status")
    except (OSError, ValueError, AttributeError) as err:
        return [f"{where}: {results} is unreadable ({err}): pass {what}"]
    if status != "complete":
        return [f"{where}: the run in {teacher!r} did not complete (status {status!r}): finish it first "
                f"(rerun its recsys-train command), or pass {what}"]
    return []


def job_problems(job: str, values: dict[str, Any], untrusted: bool = False) -> list[str]:
    """Every problem of a resolved ``job`` config (see ``check_config``)."""
    lines = problems(JOBS[job], values)
    section = {k: v for k, v in values.items() if isinstance(v, Mapping)}  # the checkable ones
    encoders = section.get("encoder", {})
    if "data" in section and job != "eval":
        lines += data_problems(section["data"])
    for modality, encoder in encoders.items():
        if isinstance(encoder, Mapping):
            lines += encoder_problems(modality, encoder, f"encoder.{modality}")
    if job == "eval":
        lines += index_problems((section.get("eval") or {}).get("ann"), "eval.ann")
    if job == "export":
        lines += index_problems(values.get("index"), "index")
        if values.get("embeddings") == "binary" and values.get("index") is not None:
            lines.append("index: embeddings=binary generates its own candidates (Hamming): use index=null, "
                         "or float32 / float16 / int8 embeddings with an index")
    if job != "train":
        return lines
    ev = section.get("eval", {})
    lines += index_problems(ev.get("ann"), "eval.ann")
    if not untrusted and isinstance(ev.get("monitor"), str) and isinstance(ev.get("ks"), list):
        if problem := _monitor_problem(ev["monitor"], ev["ks"]):  # a restored run is evaluated, not trained
            lines.append(f"eval.monitor: {problem}")
    if not untrusted:  # a restored run is evaluated, not trained: its teacher may be gone
        lines += teacher_problems((section.get("distill") or {}).get("teacher"))
    if "adapter" in section:
        lines += adapter_problems(section["adapter"], encoders)
    if "model" in section:
        lines += model_problems(section["model"])
    if "trainer" in section:
        lines += target_problems(section["trainer"], "trainer", untrusted)
    for group in ("callbacks", "logger"):
        for name, node in (section.get(group) or {}).items():
            if isinstance(node, Mapping):
                lines += target_problems(node, f"{group}.{name}", untrusted)
    return lines or (modality_problems(values, trains=not untrusted) if "adapter" in section else [])


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved job config as plain containers (a ``hydra`` node left out): what is
    checked, and what results.json, checkpoints and loggers record."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def check_config(cfg: DictConfig | Mapping[str, Any], job: str, untrusted: bool = False) -> None:
    """Raise ``ConfigError`` unless ``cfg`` (composed or read back; a ``hydra`` node is
    ignored) is a valid ``job`` config (``train``, ``cache``, ``prep``, ``eval``, ``export``)."""
    if isinstance(cfg, DictConfig):
        try:
            values = job_config(cfg)
        except OmegaConfBaseException as err:
            raise ConfigError([str(err).splitlines()[0]]) from None
    else:
        values = {k: v for k, v in cfg.items() if k != "hydra"}
    lines = job_problems(job, values, untrusted)
    if lines:
        raise ConfigError(lines, f"{job} config")
