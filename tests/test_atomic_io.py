"""recsys.atomic_io: files and directories replace their target in one step; a failed write
leaves the old content and no temporary behind."""

import json
from pathlib import Path

import pytest

from recsys import atomic_io
from recsys.atomic_io import atomic_path, write_json_atomic


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_replace_and_failures_leave_the_old_content(tmp_path):
    target = tmp_path / "results.json"
    write_json_atomic(target, {"status": "failed"})
    write_json_atomic(target, {"status": "complete"})
    assert json.loads(target.read_text()) == {"status": "complete"}
    with pytest.raises(TypeError), atomic_path(target) as tmp:
        tmp.write_text("half a file")
        raise TypeError("killed")
    assert json.loads(target.read_text()) == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("exchange", [True, False])
def test_directories_swap_in_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # a kernel or file system without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(atomic_io, "_exchange", lambda a, b: False)
    target = tmp_path / "export"
    for version in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "export.json").write_text(version)
            (tmp / "sub").mkdir()
            (tmp / "sub" / version).write_text(version)
    assert _tree(target) == {"export.json": "new", "sub/new": "new"}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "export.json").write_text("broken")
        raise RuntimeError("export failed midway")
    assert _tree(target) == {"export.json": "new", "sub/new": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporaries, no retired copies


def test_the_exchange_is_one_rename_on_linux(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    assert atomic_io._exchange(a, b)  # this machine's kernel and file system support it
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
