"""Test setup: no network. HF_HUB_OFFLINE must be set before huggingface_hub or timm are imported."""
import os

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

import logoformer_timm  # noqa: E402,F401  (registers the models; first, so that torch's OpenMP threads do not spin)
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """A small generated dataset in the annotation-list format (static / moving plaids, 32x32, 6 and 8 frames)."""
    from logoformer_timm.dfer import synthetic
    root = tmp_path_factory.mktemp('demo')
    assert synthetic.main(['--output', str(root), '--size', '32', '--frames', '6', '8', '--classes', 'static,moving',
                           '--train-clips', '4', '--test-clips', '2']) == 0
    return root
