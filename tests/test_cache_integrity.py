"""Nothing silent: a replaced, truncated or unreadable cache file (or stats.json) is rebuilt
or refused with an error naming it, and concurrent builders wait for each other."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_ENV, MINILM, job_config

from data_prep.prep import run as prep
from recsys.cache.build import build_cache
from recsys.cache.integrity import array_checksum
from recsys.cache.manifest import CacheMismatchError, CachePaths
from recsys.cache.store import load_feature_store
from recsys.cli.cache import run as recsys_cache
from recsys.data.processed import ProcessedDataError, ProcessedDataset
from recsys.encoders import build_encoder
from recsys.locking import LockedError, exclusive

TITLES = ["Toy Story", "Heat", "Casino", "Babe", "Se7en"]
RECORDS = [{"item_id": i, "title": title} for i, title in enumerate(TITLES, start=1)]
FINGERPRINT = "f" * 64


@pytest.fixture(scope="module")
def minilm():
    return build_encoder(MINILM)


@pytest.fixture(scope="module")
def pristine(minilm, tmp_path_factory) -> dict[str, bytes]:
    """The files of a finished MiniLM cache of RECORDS: name -> bytes."""
    cache_dir = tmp_path_factory.mktemp("pristine")
    build_cache(minilm, RECORDS, FINGERPRINT, cache_dir, progress_bar=False)
    return {name: (cache_dir / name).read_bytes() for name in ("minilm.npy", "minilm.json")}


@pytest.fixture
def cache_dir(pristine, tmp_path) -> Path:
    """A fresh copy of the pristine cache."""
    for name, data in pristine.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def build(minilm, cache_dir, **options) -> dict:
    return build_cache(minilm, RECORDS, FINGERPRINT, cache_dir, progress_bar=False, **options)


def test_manifest_holds_the_array_checksum(pristine, cache_dir):
    manifest = json.loads(pristine["minilm.json"])
    assert manifest["format"] == 3
    assert manifest["checksum"] == array_checksum(cache_dir / "minilm.npy")
    assert manifest["checksum"]["bytes"] == len(pristine["minilm.npy"])


def _truncate(npy: Path) -> None:
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])


def _replace_same_size(npy: Path) -> None:
    array = np.load(npy)
    np.save(npy, array[::-1].copy())  # same header and size, other rows


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate, "has .* bytes, its manifest .* records .* .truncated or replaced."),
    (_replace_same_size, "does not match the checksum in .*minilm.json"),
    (lambda npy: npy.unlink(), "cache array .*minilm.npy is missing"),
])
def test_damaged_array_is_refused_or_rebuilt(minilm, pristine, cache_dir, damage, message, caplog):
    npy = cache_dir / "minilm.npy"
    damage(npy)
    with pytest.raises(CacheMismatchError, match=f"{message}.*recsys-cache"):
        load_feature_store(cache_dir, {"text": "minilm"})
    with pytest.raises(CacheMismatchError, match=f"{message}.*on_mismatch=refuse"):
        build(minilm, cache_dir, on_mismatch="refuse")
    with caplog.at_level(logging.WARNING):
        manifest = build(minilm, cache_dir)
    assert not manifest["build"]["reused"] and f"rebuilding cache {npy}" in caplog.text
    assert npy.read_bytes() == pristine["minilm.npy"]
    assert build(minilm, cache_dir)["build"]["reused"]


def test_size_only_verification_is_cheap_and_blind_to_a_same_size_replacement(minilm, cache_dir):
    _replace_same_size(cache_dir / "minilm.npy")
    assert build(minilm, cache_dir, verify="size")["build"]["reused"]
    load_feature_store(cache_dir, {"text": "minilm"}, verify="size")
    _truncate(cache_dir / "minilm.npy")
    with pytest.raises(CacheMismatchError, match="truncated"):
        load_feature_store(cache_dir, {"text": "minilm"}, verify="size")


def _drop_field(field: str):
    def drop(text: str) -> str:
        return json.dumps({k: v for k, v in json.loads(text).items() if k != field})
    return drop


@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda text: "", "is empty"),
    (lambda text: text[: len(text) // 2], "is not valid JSON .*truncated"),
    (lambda text: "[1, 2]", "holds a JSON list, not an object"),
    (lambda text: "\udcff" + text, "is not UTF-8 text .invalid start byte at byte 0."),  # a 0xff byte
    (_drop_field("checksum"), "has missing or malformed fields .checksum: Field required"),
    (_drop_field("shape"), "has missing or malformed fields .shape: Field required"),
    (lambda text: json.dumps({**json.loads(text), "complete": False}), "is incomplete"),
    (lambda text: json.dumps({**json.loads(text), "format": 2}), "has format 2, .* reads format 3"),
])
def test_broken_manifest_is_refused_or_rebuilt(minilm, pristine, cache_dir, corrupt, message, caplog):
    manifest = cache_dir / "minilm.json"
    manifest.write_bytes(corrupt(manifest.read_text()).encode("utf-8", "surrogateescape"))
    named = f"cache manifest {manifest} {message}"
    with pytest.raises(CacheMismatchError, match=f"{named}.*run recsys-cache"):
        load_feature_store(cache_dir, {"text": "minilm"})
    with pytest.raises(CacheMismatchError, match=f"{named}.*cache.on_mismatch=refuse"):
        build(minilm, cache_dir, on_mismatch="refuse")
    with caplog.at_level(logging.WARNING):
        assert not build(minilm, cache_dir)["build"]["reused"]  # what recsys-train prepare=true runs
    assert f"rebuilding cache {cache_dir / 'minilm.npy'}: cache manifest {manifest}" in caplog.text
    assert json.loads(manifest.read_text())["checksum"]["sha256"] == json.loads(pristine["minilm.json"])[
        "checksum"]["sha256"]


def test_recsys_cache_rebuilds_a_broken_manifest(tmp_path):
    """The recsys-cache (and recsys-train prepare=true) path: on_mismatch=rebuild by default."""
    prep(job_config("prep", ["data=synthetic", f"paths.data_dir={tmp_path}", "data.raw.n_users=40",
                             "data.raw.n_items=12", "data.raw.n_clusters=3", "data.raw.image_size=8"]))
    cfg = job_config("cache", ["data=synthetic", f"paths.data_dir={tmp_path}", "encoder/image=none",
                               "cache.progress_bar=false", f"cache.dir={tmp_path / 'cache'}"])
    assert not recsys_cache(cfg)["text"]["build"]["reused"]
    manifest = tmp_path / "cache" / "minilm.json"
    manifest.write_text(manifest.read_text()[:40])
    assert not recsys_cache(cfg)["text"]["build"]["reused"]
    assert recsys_cache(cfg)["text"]["build"]["reused"]


def test_unreadable_stats_json_is_named_and_rebuilt(tmp_path, caplog):
    cfg = job_config("prep", ["data=synthetic", f"paths.data_dir={tmp_path}", "data.raw.n_users=40",
                              "data.raw.n_items=12", "data.raw.n_clusters=3", "data.raw.image_size=8"])
    processed = prep(cfg)
    stats = processed / "stats.json"
    stats.write_text(stats.read_text()[:30])
    with pytest.raises(ProcessedDataError, match=f"{stats} is not valid JSON .*recsys-prep"):
        ProcessedDataset.load(processed)
    with caplog.at_level(logging.WARNING):
        assert prep(cfg) == processed
    assert f"{stats} is not valid JSON" in caplog.text and "rebuilding" in caplog.text
    assert ProcessedDataset.load(processed).num_items == 12


# ---- two processes, one cache / one processed dataset ------------------------------------
CHILD = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
job = json.loads(sys.argv[1])
if job["what"] == "cache":
    from recsys.cache.build import build_cache
    from recsys.encoders import build_encoder
    manifest = build_cache(build_encoder(job["encoder"]), job["records"], job["fingerprint"],
                           job["dir"], progress_bar=False, lock_wait_s=job["lock_wait_s"])
    print(json.dumps({"reused": manifest["build"]["reused"], "checksum": manifest["checksum"]}))
else:
    from data_prep.prep import prepare
    print(json.dumps({"dir": str(prepare(job["data"], lock_wait_s=job["lock_wait_s"]))}))
"""


def _start(job: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(job)], stdout=subprocess.PIPE,
                            stderr=log.open("w"), text=True, env={**os.environ, **CLI_ENV})


def _wait_for(logs: list[Path], text: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not all(text in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "\n".join(log.read_text()[-2000:] for log in logs)
        time.sleep(0.2)


def _race(job: dict, lock: Path, tmp_path: Path) -> list[dict]:
    """Start two processes running ``job`` while this one holds ``lock``, let them go once
    both wait for it; returns their outputs."""
    logs = [tmp_path / f"child{i}.log" for i in range(2)]
    with exclusive(lock, "held by the test"):
        children = [_start(job, log) for log in logs]
        _wait_for(logs, "waiting for it")
    outputs = []
    for child, log in zip(children, logs, strict=True):
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0, log.read_text()[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


def test_two_cache_builds_wait_for_each_other_and_agree(pristine, tmp_path):
    paths = CachePaths.of(tmp_path / "cache", "minilm")
    job = {"what": "cache", "encoder": MINILM, "records": RECORDS, "fingerprint": FINGERPRINT,
           "dir": str(tmp_path / "cache"), "lock_wait_s": None}
    outputs = _race(job, paths.lock, tmp_path)
    assert sorted(o["reused"] for o in outputs) == [False, True]  # one built, one reused it
    assert outputs[0]["checksum"] == outputs[1]["checksum"] == array_checksum(paths.features)
    assert paths.features.read_bytes() == pristine["minilm.npy"]
    assert not paths.partial.exists() and not paths.progress.exists()


def test_two_preps_wait_for_each_other(tmp_path):
    data = {"name": "synthetic", "reader": "synthetic", "on_error": "raise",
            "raw": {"n_users": 40, "n_items": 12, "n_clusters": 3, "image_size": 8},
            "protocol": {"min_interactions": 5, "keep_last": 13},
            "processed_dir": str(tmp_path / "processed" / "synthetic")}
    lock = tmp_path / "processed" / "synthetic.lock"
    outputs = _race({"what": "prep", "data": data, "lock_wait_s": None}, lock, tmp_path)
    assert outputs[0] == outputs[1] == {"dir": data["processed_dir"]}
    logs = [(tmp_path / f"child{i}.log").read_text() for i in range(2)]
    assert sorted("reusing" in log for log in logs) == [False, True]
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == ["synthetic", "synthetic.lock"]
    ProcessedDataset.load(data["processed_dir"])


def test_lock_wait_is_bounded(minilm, cache_dir):
    paths = CachePaths.of(cache_dir, "minilm")
    with exclusive(paths.lock, "held by the test"):
        held = f"still being written by another process after 0.2 s .lock {paths.lock}"
        with pytest.raises(LockedError, match=held):
            build(minilm, cache_dir, lock_wait_s=0.2)
        with pytest.raises(LockedError, match="after 0.2 s"):
            load_feature_store(cache_dir, {"text": "minilm"}, lock_wait_s=0.2)
    assert build(minilm, cache_dir, lock_wait_s=0)["build"]["reused"]
