"""Real HTTP: an exported repo served by a local olah Hub mirror, downloaded by ``create_model(..., pretrained=True)``.

olah (PyPI, a self-hosted Hugging Face mirror) serves git repos under its mirrors path with no internet. ``bash
.ci/run`` installs it into its own venv and exports ``LOGOFORMER_OLAH_CLI``; without it this test skips.
HF_ENDPOINT is read when huggingface_hub is imported, so the download runs in a fresh interpreter.
"""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from logoformer_timm.weights.publish import export_folder
from logoformer_timm.weights.files import file_sha256

OLAH_ENV = 'LOGOFORMER_OLAH_CLI'
REPO_ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(num_frames=2, img_size=32)

CLIENT = textwrap.dedent('''
    import sys
    import timm, torch
    import logoformer_timm
    from logoformer_timm.weights import manifest
    from logoformer_timm.models import refresh_pretrained_cfgs

    sha256, out = sys.argv[1], sys.argv[2]
    entry = manifest.PublishedWeights(
        arch='logoformer_tiny', tag='olah_test', sha256=sha256, dataset='synthetic', fold=None, uar=None,
        war=None, license='mit', recipe='tests/test_hub_olah.py')
    manifest.PUBLISHED[entry.name] = entry
    refresh_pretrained_cfgs()
    clip = torch.rand(2, 3, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = {}
    for name in ('logoformer_tiny.olah_test', 'hf-hub:' + entry.hf_hub_id):
        kwargs = dict(num_frames=2, img_size=32) if name.startswith('logoformer_tiny') else {}
        model = timm.create_model(name, pretrained=True, **kwargs).eval()
        with torch.no_grad():
            logits[name] = model(clip)
    torch.save(logits, out)
''')


def _olah_cli() -> str:
    candidates = [os.environ.get(OLAH_ENV), REPO_ROOT / '.cache' / 'olah-venv' / 'bin' / 'olah-cli', shutil.which('olah-cli')]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return str(path)
    pytest.skip(f'olah is not installed: {OLAH_ENV} is unset and neither .cache/olah-venv/bin/olah-cli nor olah-cli on '
                f'PATH exists (bash .ci/run installs it there; .cache/olah-install.log says why if that failed)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, server: subprocess.Popen, log: Path, timeout: float = 60.) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f'olah exited with {server.returncode}:\n{log.read_text()[-2000:]}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f'olah did not listen on port {port} within {timeout:.0f} s:\n{log.read_text()[-2000:]}')


def test_create_model_downloads_published_weights_over_http(tmp_path):
    olah = _olah_cli()
    git = shutil.which('git')
    if git is None:
        pytest.skip('git is not installed: olah serves repos from git')

    torch.manual_seed(4)
    source = timm.create_model('logoformer_tiny', **ARGS).eval()
    save_file(source.state_dict(), tmp_path / 'checkpoint.safetensors')
    folder = tmp_path / 'mirrors' / 'models' / 'logoformer-timm' / 'logoformer_tiny.olah_test'
    folder.parent.mkdir(parents=True)  # export writes into an existing folder's new child, never guesses parents
    export_folder('logoformer_tiny', tmp_path / 'checkpoint.safetensors', folder, tag='olah_test', model_kwargs={})
    for args in (['init', '-q', '-b', 'main'], ['add', '.'], ['commit', '-q', '-m', 'export']):
        subprocess.run([git, '-c', 'user.name=test', '-c', 'user.email=test@localhost', *args], cwd=folder, check=True)

    port = _free_port()
    config = tmp_path / 'olah.toml'
    config.write_text(textwrap.dedent(f'''
        [basic]
        host = "127.0.0.1"
        port = {port}
        repos-path = "{tmp_path / 'repos'}"
        mirrors-path = ["{tmp_path / 'mirrors'}"]
        hf-scheme = "http"
        hf-netloc = "127.0.0.1:9"  # no upstream Hub

        [accessibility]
        offline = true
    '''))
    log = tmp_path / 'olah.log'
    with open(log, 'w') as log_file:
        server = subprocess.Popen([olah, '-c', str(config)], cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, server, log)
        env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
        env.update(HF_ENDPOINT=f'http://127.0.0.1:{port}', HF_HUB_CACHE=str(tmp_path / 'cache'),
                   HF_HUB_DISABLE_TELEMETRY='1', HF_HUB_ETAG_TIMEOUT='30')
        client = subprocess.run(
            [sys.executable, '-c', CLIENT, file_sha256(folder / 'model.safetensors'), str(tmp_path / 'logits.pt')],
            env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert client.returncode == 0, f'{client.stderr[-3000:]}\nolah log:\n{log.read_text()[-2000:]}'

    served = log.read_text()
    assert 'GET /logoformer-timm/logoformer_tiny.olah_test/resolve/main/model.safetensors' in served
    cached = tmp_path / 'cache' / 'models--logoformer-timm--logoformer_tiny.olah_test'
    assert file_sha256(next(cached.glob('snapshots/*/model.safetensors'))) == file_sha256(folder / 'model.safetensors')
    clip = torch.rand(2, 3, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(clip)
    for name, got in torch.load(tmp_path / 'logits.pt', weights_only=True).items():
        assert torch.equal(got, expected), name
