"""Checkpoint format: atomic writes, format checks, refusal of mismatched classes / architecture."""
from __future__ import annotations

import os

import pytest
import torch

from detector.training import checkpoint as ck


def _ckpt(classes=("a", "b"), arch="bvlc_googlenet"):
    return {"format": ck.FORMAT, "format_version": ck.FORMAT_VERSION, "arch": arch, "classes": list(classes),
            "model": {"w": torch.ones(2)}}


def test_round_trip_and_compatibility(tmp_path):
    p = ck.save_atomic(_ckpt(), tmp_path / "run" / "last.pt")
    got = ck.load_checkpoint(p)
    assert torch.equal(got["model"]["w"], torch.ones(2))
    ck.check_compatible(got, p, ["a", "b"], "bvlc_googlenet")
    with pytest.raises(ck.CheckpointError, match="classes"):
        ck.check_compatible(got, p, ["a", "c"], "bvlc_googlenet")
    with pytest.raises(ck.CheckpointError, match="classes"):
        ck.check_compatible(got, p, ["b", "a"], "bvlc_googlenet")  # order matters: column c + 1 = class c
    with pytest.raises(ck.CheckpointError, match="architecture"):
        ck.check_compatible(got, p, ["a", "b"], ck.architecture_id("bvlc", True))


def test_bad_files(tmp_path):
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(ck.CheckpointError, match="not a readable checkpoint"):
        ck.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ck.CheckpointError, match="format tag"):
        ck.load_checkpoint(tmp_path / "other.pt")
    torch.save({**_ckpt(), "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ck.CheckpointError, match="version 99"):
        ck.load_checkpoint(tmp_path / "v99.pt")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = ck.save_atomic(_ckpt(classes=("old",)), tmp_path / "last.pt")

    def killed(*args, **kwargs):  # the process dies while writing the new checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        ck.save_atomic(_ckpt(classes=("new",)), p)
    monkeypatch.undo()
    assert ck.load_checkpoint(p)["classes"] == ["old"]  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "last.pt.tmp"]  # only a stray tmp file is left
    ck.save_atomic(_ckpt(classes=("new",)), p)
    assert ck.load_checkpoint(p)["classes"] == ["new"]
