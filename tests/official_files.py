"""Official DFER checkpoint files rebuilt from the recordings of ``tests/data/*_official.json``, in the exact
container each official training script writes (used by the model tests, the command tests and the docs' blocks)."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from official_fill import fill_state_dict

FORMER_DFER_RECORD = json.loads((Path(__file__).parent / 'data' / 'former_dfer_official.json').read_text())
MAE_DFER_RECORD = json.loads((Path(__file__).parent / 'data' / 'mae_dfer_official.json').read_text())


class RecorderMeter:
    """The shape of main_DFEW.py's own RecorderMeter, pickled under its '__main__' name (as that script runs)."""

    def __init__(self, total_epoch: int = 100):
        self.total_epoch, self.current_epoch = total_epoch, 37
        self.epoch_losses = np.full((total_epoch, 2), 0.5, dtype=np.float32)
        self.epoch_accuracy = np.full((total_epoch, 2), 60., dtype=np.float32)


def former_dfer_state_dict():
    return fill_state_dict((e['key'], e['shape'], e['dtype']) for e in FORMER_DFER_RECORD['state_dict'])


def former_dfer_container(state_dict, best_acc):
    """``main_DFEW.py``'s checkpoint: ``{'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'}``."""
    params = [k for k, v in state_dict.items()  # the module's parameters, in order: not the BatchNorm buffers
              if v.is_floating_point() and not k.endswith(('running_mean', 'running_var'))]
    optimizer = {  # torch.optim.SGD(model.parameters(), 0.01, momentum=0.9, weight_decay=1e-4).state_dict()
        'state': {i: {'momentum_buffer': torch.zeros_like(state_dict[k])} for i, k in enumerate(params)},
        'param_groups': [dict(
            lr=0.01, momentum=0.9, dampening=0, weight_decay=1e-4, nesterov=False, maximize=False, foreach=None,
            differentiable=False, fused=None, initial_lr=0.01, params=list(range(len(params))))]}
    return {'epoch': 38, 'state_dict': state_dict, 'best_acc': best_acc, 'optimizer': optimizer,
            'recorder': RecorderMeter()}


def save_as_training_script(checkpoint, path, cuda_tensors=()):
    """torch.save as the training script ran it: the named tensors' storages are tagged as CUDA ('cuda:0')."""
    cuda_storages = {t.untyped_storage().data_ptr() for t in cuda_tensors}
    real_tag = torch.serialization.location_tag
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RecorderMeter, '__module__', '__main__')
        mp.setattr(sys.modules['__main__'], 'RecorderMeter', RecorderMeter, raising=False)
        mp.setattr(torch.serialization, 'location_tag', lambda storage: 'cuda:0' if getattr(
            storage, 'data_ptr', lambda: None)() in cuda_storages else real_tag(storage))
        torch.save(checkpoint, path)


def write_former_dfer_file(path, best_acc: float = 66.2104) -> Path:
    """An official Former-DFER checkpoint (``main_DFEW.py``'s format) of the recorded weights at ``path``."""
    best = torch.tensor(best_acc)
    save_as_training_script(former_dfer_container(former_dfer_state_dict(), best), path, cuda_tensors=(best,))
    return Path(path)


MAE_DFER_ARGS = dict(  # the argparse.Namespace the DFEW script pickles (a subset of its ~100 arguments)
    model='vit_base_dim512_no_depth_patch16_160', depth=16, data_set='DFEW', nb_classes=7, input_size=160,
    short_side_size=160, num_frames=16, sampling_rate=4, opt='adamw', lr=1e-3, opt_betas=[0.9, 0.999],
    weight_decay=0.05, epochs=100, test_num_segment=2, test_num_crop=2, attn_type='local_global',
    lg_region_size=[2, 5, 10], lg_classify_token_type='region', lg_first_attn_type='self', lg_third_attn_type='cross',
    model_key='model|module', init_scale=0.001, drop_path=0.1, use_mean_pooling=True, tubelet_size=2)


def save_mae_dfer_checkpoint(path, model_state, **extra):
    """A checkpoint as the official ``utils.save_model`` writes it (model_without_ddp: no ``module.`` prefix)."""
    fake = torch.nn.Linear(4, 2)  # a cheap optimizer state of the right structure
    optimizer = torch.optim.AdamW(fake.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05)
    fake(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scaler = {'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000,
              '_growth_tracker': 123}  # torch.cuda.amp.GradScaler.state_dict()
    torch.save({'model': model_state, 'optimizer': optimizer.state_dict(), 'epoch': 99, 'scaler': scaler,
                'args': argparse.Namespace(**MAE_DFER_ARGS), **extra}, path)
    return path


def write_mae_dfer_file(path) -> Path:
    """An official MAE-DFER DFEW checkpoint (``utils.save_model``'s format) of the recorded weights at ``path``."""
    return Path(save_mae_dfer_checkpoint(path, fill_state_dict(MAE_DFER_RECORD['records']['dfew']['state_dict'])))
