"""Hydra compose tests: every option of every config group composes, resolves and passes the
schema (recsys.config.schema); bad values are refused with the key, the value and what is
allowed, before any work; the faithful rows carry the reference settings."""

import json
from pathlib import Path

import pytest
from conftest import job_config
from omegaconf import OmegaConf

from recsys.config.schema import ConfigError, check_config

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOTS = {"train": [], "eval": ["run_dir=/tmp/run"], "cache": [], "prep": [], "export": ["run_dir=/tmp/run"]}
GROUPS = (
    "data", "adapter", "model", "trainer", "logger", "callbacks", "cache", "layer_schedule",
    "encoder/text", "encoder/image", "encoder/video", "encoder/audio", "hparams_search",
    "hydra/launcher", "experiment", "distill",
)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _finished_run(tmp_path: Path, status: str = "complete") -> Path:
    """A run directory whose results.json says ``status`` (what distill.teacher is checked for)."""
    run = tmp_path / f"teacher_{status}"
    run.mkdir(exist_ok=True)
    (run / "results.json").write_text(json.dumps({"status": status}))
    return run


def _teacher(group: str, option: str, tmp_path: Path) -> list[str]:
    """The teacher a distillation option needs to pass the schema (none for the others)."""
    kd = (group, option) == ("distill", "kd") or (group == "experiment" and option.startswith("distill_"))
    return [f"distill.teacher={_finished_run(tmp_path)}"] if kd else []


def _checked(root: str, overrides: list[str], tmp_path: Path):
    cfg = job_config(root, overrides, output_dir=tmp_path / "run")
    check_config(cfg, root)
    return cfg


@pytest.mark.parametrize("root", sorted(ROOTS))
def test_every_root_config_composes_and_passes_the_schema(root, tmp_path):
    cfg = _checked(root, ROOTS[root], tmp_path)
    assert cfg.paths.data_dir.endswith("data")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_into_train_and_passes_the_schema(group, option, tmp_path):
    # Without text or images the default two-stream IISAN has no inter stream to build.
    text_or_image = group in ("encoder/text", "encoder/image")
    single = ["adapter=iisan_intra"] if option == "none" and text_or_image else []
    cfg = _checked("train", [f"{group}={option}", *single, *_teacher(group, option, tmp_path)], tmp_path)
    assert cfg.adapter.name and cfg.data.processed_dir
    if group == "adapter":
        assert cfg.adapter.name in option or option.startswith(cfg.adapter.name)


def test_shared_values_live_in_one_place(tmp_path):
    """d_model is the user encoder's (towers read it from the context), the layer rule is
    layer_schedule.groups: one override changes every user of each."""
    for adapter in ("iisan", "crossan", "id", "lora"):
        assert "d_model" not in _checked("train", [f"adapter={adapter}"], tmp_path).adapter
    cfg = _checked("train", ["layer_schedule.groups=3", "encoder/text=llama_7b"], tmp_path)
    assert cfg.adapter.layer_groups == 3 and cfg.encoder.text.layer_groups == 3
    assert not [p for p in CONF.rglob("*.yaml") if "d_model" in p.read_text() and p.parent.name != "model"]


@pytest.mark.parametrize(
    ("overrides", "messages"),
    [
        (["adapter.fusion=gatd"], ["adapter.fusion: 'gatd': Input should be 'gated' or 'add'"]),
        (["eval.tie_policy=bogus"],
         ["eval.tie_policy: 'bogus': Input should be 'pessimistic', 'optimistic' or 'average'"]),
        (["cache.dtype=int4"], ["cache.dtype: 'int4': Input should be 'float16', 'float32', 'bfloat16', "
                                "'int8', 'int8_item_layer' or 'float8_e4m3'"]),
        (["cache.dtype=int8", "cache.dir=/data/int8_cache"],
         ["cache.dtype: 'int8': Value error, int8 caches are converted from the float16 cache of their "
          "parent directory, so their directory must be <float16 cache dir>/int8, not '/data/int8_cache'"]),
        (["model.d_model=100", "model.num_heads=3"], ["model: d_model 100 is not divisible by num_heads 3"]),
        (["adapter.streams=both"],
         ["adapter.streams: 'both': Input should be 'intra_inter', 'intra' or 'inter'"]),
        (["+adapter.botleneck=32"], ["adapter.botleneck: unknown key; allowed keys: bottleneck,"]),
        (["+trainer.max_epoch=3"], ["trainer.max_epoch: unknown key; allowed keys: accelerator,"]),
        (["adapter.bottleneck=0", "data.batch_size=-1"],
         ["adapter.bottleneck: 0: Input should be greater than 0",
          "data.batch_size: -1: Input should be greater than 0"]),
        (["eval.monitor=val/hr@50"], ["eval.monitor: 'val/hr@50' needs k=50 in eval.ks [5, 10, 20]"]),
        (["encoder.text.pooling=max"],
         ["encoder.text.pooling: 'max': Input should be 'cls', 'mean' or 'last'"]),
        (["encoder.text.layers=[0,2]", "encoder.text.layer_groups=2"],
         ["encoder.text: give either layers or layer_groups, not both"]),
        (["encoder.text.name_or_path=pkg:os:getcwd"],
         ["encoder.text.name_or_path: 'pkg:os:getcwd' is not a known weights package"]),
        (["data=synthetic", "data.raw.n_users=0"], ["data.raw.n_users: 0: Input should be greater than 0"]),
        (["data.protocol.keep_last=2"],
         ["data.protocol.keep_last: 2: Input should be greater than or equal to 3"]),
        (["encoder/image=none"],
         ["adapter: streams='intra_inter' has an inter stream, which needs text and image"]),
        (["encoder/text=none", "encoder/image=none"],
         ["adapter 'iisan' reads modalities ['text', 'image'] but no encoder"]),
        (["adapter=crossan", "encoder/image=none"],
         ["adapter: CROSSAN exchanges information between modalities and needs at least two"]),
        (["adapter=lora", "adapter.r=0"], ["adapter.r: 0: Input should be greater than 0"]),
        (["adapter=lora", "+adapter.layer_groups=3"], ["adapter.layer_groups: unknown key"]),
        (["adapter=id", "adapter.modalities=[text]"], ["adapter 'id' reads no features; use []"]),
        (["model.name=gru"], ["model.name: 'gru' is not registered; registered: ['sasrec']"]),
        (["adapter.name=nope"], ["adapter.name: 'nope' is not registered; registered: ["]),
        (["encoder.text.kind=hf_image"], ["encoder.text.kind: 'hf_image' encodes image, not text"]),
        (["distill=kd"], ["distill.teacher: required with distill=kd: pass distill.teacher=<the run dir"]),
        (["distill=kd", "distill.teacher=/no/such/run", "distill.alpha=1.5", "distill.tau=0"],
         ["distill.teacher: '/no/such/run' is not a directory: pass the run directory (hydra.run.dir) of a",
          "distill.alpha: 1.5: Input should be less than or equal to 1",
          "distill.tau: 0: Input should be greater than 0"]),
    ],
)
def test_bad_values_are_refused_naming_key_value_and_allowed(overrides, messages, tmp_path):
    with pytest.raises(ConfigError) as raised:
        _checked("train", overrides, tmp_path)
    for message in messages:
        assert message in str(raised.value), str(raised.value)


def test_a_teacher_must_be_a_finished_run(tmp_path):
    def refused(teacher: Path) -> str:
        with pytest.raises(ConfigError) as raised:
            _checked("train", ["distill=kd", f"distill.teacher={teacher}"], tmp_path)
        return str(raised.value)

    assert "holds no results.json (not a run directory, or a run killed" in refused(tmp_path)
    assert "did not complete (status 'failed'): finish it first" in refused(_finished_run(tmp_path, "failed"))
    (tmp_path / "teacher_complete").mkdir()
    (tmp_path / "teacher_complete" / "results.json").write_text("{trunc")
    assert "results.json is unreadable" in refused(tmp_path / "teacher_complete")
    cfg = _checked("train", ["distill=kd", f"distill.teacher={_finished_run(tmp_path)}", "distill.alpha=0",
                             "distill.tau=1"], tmp_path)
    assert cfg.distill == {"teacher": str(tmp_path / "teacher_complete"), "alpha": 0, "tau": 1}
    # a run restored from its directory is evaluated, not trained: its teacher may be gone
    saved = OmegaConf.to_container(cfg, resolve=True)
    check_config(saved | {"distill": {"teacher": "/gone", "alpha": 0.5, "tau": 2.0}}, "train", untrusted=True)
    assert _checked("train", [], tmp_path).distill == {}  # no teacher: nothing in the run's config


@pytest.mark.parametrize("experiment", ["distill_movielens", "distill_scientific"])
def test_distillation_sweeps_compose_every_student(experiment, tmp_path):
    from recsys.cli import compose

    teacher = f"distill.teacher={_finished_run(tmp_path)}"
    hydra = compose("train", [f"experiment={experiment}", teacher], return_hydra_config=True).hydra
    sweep = hydra.sweeper.params
    assert sweep.seed == "0,1,2"
    for adapter in sweep.adapter.split(","):
        cfg = _checked("train", [f"experiment={experiment}", teacher, f"adapter={adapter}"], tmp_path)
        assert cfg.label == f"{adapter}_kd0.5" and cfg.distill.tau == 2.0
        assert cfg.adapter.get("layer_groups", 3) == 3  # the side networks: 3 groups, 4 blocks per stream


def test_frames_encoder_checks_its_nested_image_encoder(tmp_path):
    overrides = ["encoder/video=frames_efficientnet_lite0", "adapter=crossan",
                 "encoder.video.image_encoder.resolution=-3"]
    with pytest.raises(ConfigError, match=r"encoder\.video\.image_encoder: .*resolution.*greater than 0"):
        _checked("train", overrides, tmp_path)


def test_eval_export_cache_and_prep_configs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="eval.tie_policy: 'bogus'"):
        _checked("eval", ["run_dir=/x", "eval.tie_policy=bogus"], tmp_path)
    with pytest.raises(ConfigError, match="stages.0: 'train'"):
        _checked("eval", ["run_dir=/x", "stages=[train]"], tmp_path)
    with pytest.raises(ConfigError, match="cache_dtype: 'int4'"):
        _checked("eval", ["run_dir=/x", "cache_dtype=int4"], tmp_path)
    with pytest.raises(ConfigError, match="cache.residency: 'gpu'"):
        _checked("cache", ["cache.residency=gpu"], tmp_path)
    with pytest.raises(ConfigError, match="data.on_error: 'ignore'"):
        _checked("prep", ["data.on_error=ignore"], tmp_path)


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16", "int8", "int8_item_layer",
                                   "float8_e4m3"])
def test_each_cache_dtype_composes_into_its_own_directory(dtype, tmp_path):
    """float16 caches in the dataset's cache directory, every other dtype in <that>/<dtype>."""
    float16_dir = tmp_path / "cache" / "movielens"
    for root in ("train", "cache"):
        cfg = _checked(root, [f"cache.dtype={dtype}", f"paths.data_dir={tmp_path}"], tmp_path)
        assert cfg.cache.dtype == dtype
        assert cfg.cache.dir == str(float16_dir if dtype == "float16" else float16_dir / dtype)


def test_serving_formats_and_ann_indexes_compose_typed(tmp_path):
    cfg = _checked("export", ["run_dir=/x", "embeddings=int8", "candidates=50",
                              "index={kind: hnsw, M: 16, ef_search: 64}"], tmp_path)
    assert cfg.embeddings == "int8" and cfg.index == {"kind": "hnsw", "M": 16, "ef_search": 64}
    assert _checked("export", ["run_dir=/x"], tmp_path).index is None
    cfg = _checked("train", ["eval.ann={kind: ivf_pq, nlist: 64, pq_m: 8}"], tmp_path)
    assert cfg.eval.ann.kind == "ivf_pq" and _checked("train", [], tmp_path).eval.ann is None
    assert _checked("eval", ["run_dir=/x", "eval.ann={kind: flat}"], tmp_path).eval.ann == {"kind": "flat"}


@pytest.mark.parametrize(
    ("root", "overrides", "message"),
    [
        ("export", ["embeddings=int4"], "embeddings: 'int4': Input should be 'float32', 'float16', 'int8'"),
        ("export", ["index={kind: annoy}"], "index.kind: 'annoy': Input should be one of ['flat', 'hnsw',"),
        ("export", ["index={kind: hnsw, nprobe: 4}"], "index.nprobe: unknown key; allowed keys: M, ef_"),
        ("export", ["index={kind: hnsw, M: 0}"], "index.M: 0: Input should be greater than 0"),
        ("export", ["index={kind: ivf_flat, nlist: big}"], "index.nlist: 'big': Input should be a valid int"),
        ("export", ["embeddings=binary", "index={kind: flat}"], "index: embeddings=binary generates its"),
        ("export", ["candidates=0"], "candidates: 0: Input should be greater than 0"),
        ("train", ["eval.ann={kind: hnsw, ef_search: -1}"], "eval.ann.ef_search: -1: Input should be"),
        ("eval", ["eval.ann={kind: ivf}"], "eval.ann.kind: 'ivf': Input should be one of"),
    ],
)
def test_bad_serving_options_are_refused(root, overrides, message, tmp_path):
    with pytest.raises(ConfigError) as raised:
        _checked(root, [*ROOTS[root], *overrides], tmp_path)
    assert message in str(raised.value), str(raised.value)


def test_experiment_configs_exist_for_reference_rows():
    rows = {"demo", "iisan_scientific", "iisan_instrument", "iisan_scientific_text"}
    assert rows <= set(_options("experiment"))


@pytest.mark.parametrize("experiment", ["iisan_scientific", "iisan_instrument"])
def test_faithful_experiments_match_reference_settings(experiment, tmp_path):
    cfg = _checked("train", [f"experiment={experiment}"], tmp_path)
    assert cfg.data.protocol == {"min_interactions": 5, "keep_last": 13, "window": 10}
    assert cfg.data.batch_size == 64
    assert cfg.adapter.streams == "intra_inter" and cfg.adapter.fusion == "gated"
    assert cfg.adapter.layer_groups == 6 and cfg.adapter.bottleneck == 64
    assert cfg.adapter.lr_groups == "official" and cfg.adapter.image_head_init == "xavier_normal"
    assert cfg.optimizer.lr == {"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}
    assert cfg.eval.mask_target_in_history is True
    assert cfg.cache.amp == "none"  # fp32 feature extraction, as the original
    assert cfg.callbacks.early_stopping.patience == 11 and cfg.trainer.max_epochs == 100
    assert cfg.encoder.text.pooling == "cls" and cfg.encoder.text.max_length == 30


def test_adapter_reads_the_modalities_that_have_an_encoder(tmp_path):
    from recsys.train.builders import adapter_encoders, cached_encoders

    cfg = _checked("train", ["experiment=iisan_scientific_text"], tmp_path)
    assert list(adapter_encoders(cfg)) == ["text"]
    assert list(adapter_encoders(_checked("train", ["experiment=demo"], tmp_path))) == ["text", "image"]
    id_run = ["experiment=iisan_scientific_text", "adapter=id"]
    assert cached_encoders(job_config("train", id_run)) == {}
    assert cached_encoders(_checked("train", ["adapter=fft"], tmp_path)) == {}  # encoders run in the step
