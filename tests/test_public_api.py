import importlib
import subprocess
import sys

import hf_recunlearn


def test_every_public_name_resolves():
    for name in hf_recunlearn.__all__:
        assert getattr(hf_recunlearn, name) is not None, name


def test_all_is_sorted_and_unique():
    assert hf_recunlearn.__all__ == sorted(set(hf_recunlearn.__all__))


def test_import_is_light():
    """`import hf_recunlearn` must not import huggingface_hub (tests point it at a local Hub first)."""
    code = "import sys, hf_recunlearn, hf_recunlearn.testing; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_trainer_exports_match_modules():
    trainer = importlib.import_module("hf_recunlearn.trainer")
    for name in trainer.__all__:
        assert hasattr(trainer, name), name
