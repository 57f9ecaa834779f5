"""Atomic writes: a failed write leaves the previous file and no temporary, and a full disk says so."""

from collections import namedtuple

import pytest
import torch

from dermdl import io
from dermdl.io import atomic_file, atomic_write_text

Usage = namedtuple("Usage", "total used free")


def _failing_save(tmp):
    torch.save({"w": torch.zeros(4)}, tmp)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 94794176 vs 94794064")


@pytest.mark.parametrize("free, full", [(10 * 2**20, True), (10 * 2**30, False)])
def test_failed_write_keeps_the_old_file_and_names_a_full_disk(tmp_path, monkeypatch, free, full):
    target = tmp_path / "checkpoint" / "last.pt"
    atomic_write_text(target, "previous")
    monkeypatch.setattr(io.shutil, "disk_usage", lambda _path: Usage(0, 0, free))
    expected = (
        (OSError, r"last\.pt: could not be written, the disk is full \(10 MiB free")
        if full
        else (RuntimeError, "unexpected pos")
    )
    with pytest.raises(expected[0], match=expected[1]):
        with atomic_file(target) as tmp:
            _failing_save(tmp)
    assert target.read_text() == "previous"
    assert [p.name for p in target.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_interrupt_is_not_turned_into_a_disk_error(tmp_path, monkeypatch):
    monkeypatch.setattr(io.shutil, "disk_usage", lambda _path: Usage(0, 0, 0))
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(tmp_path / "x.json"):
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())
