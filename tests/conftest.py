"""Test setup: no network. HF_HUB_OFFLINE must be set before huggingface_hub or timm are imported."""
import os

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

import logoformer_timm  # noqa: E402,F401  (registers the models)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
