"""Official DFER checkpoint files rebuilt from the recordings of ``tests/data/*_official.json``, in the exact
container each official training script writes (used by the model tests, the command tests and the docs' blocks).

Also a tool for trying the zoo without the authors' downloads (docs/zoo.md, "Try the zoo offline"), from a clone
with the ``test`` extra: ``python tests/official_files.py former_dfer --output zoo_files`` writes
``zoo_files/former_dfer_dfew.pth``, a file of the DFEW tags' format and shapes whose weights are filler values
(every command runs on it; its predictions mean nothing)."""
import argparse
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from official_fill import fill_state_dict, fill_tensor

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


DFER_CLIP_RECORD = json.loads((Path(__file__).parent / 'data' / 'dfer_clip_official.json').read_text())


def dfer_clip_state_dict(record_name: str):
    """The official ``state_dict`` of recording ``record_name`` (a new dict of shared, read-only tensors)."""
    return dict(_dfer_clip_state_dict(record_name))


@functools.lru_cache(maxsize=None)
def _dfer_clip_state_dict(record_name: str):
    """The official ``state_dict`` of a recording: filled entries, the aliases of the CLIP model that the official
    model holds twice as the same tensors (as DataParallel's state dict gives them), and the prompt buffers that
    ``PromptLearner`` computes from the token embedding of the tokenized prompts (SOS, then the class text after
    the context tokens)."""
    record = DFER_CLIP_RECORD['records'][record_name]
    entries = {key: (shape, dtype, alias) for key, shape, dtype, alias in record['state_dict']}
    embedding_key = 'module.clip_model_.token_embedding.weight'
    embedding = fill_tensor(embedding_key, entries[embedding_key][0])
    num_ctx = entries['module.prompt_learner.ctx'][0][-2]
    prompts = embedding[torch.tensor(record['token_ids'])]
    computed = {embedding_key: embedding, 'module.prompt_learner.token_prefix': prompts[:, :1],
                'module.prompt_learner.token_suffix': prompts[:, 1 + num_ctx:].clone()}
    state = {key: computed[key] if key in computed else fill_tensor(key, shape, getattr(torch, dtype))
             for key, (shape, dtype, alias) in entries.items() if alias is None}
    state = {key: state[alias or key] for key, (_, _, alias) in entries.items()}  # the official order
    assert all(list(state[key].shape) == shape for key, (shape, _, _) in entries.items())
    return state


def dfer_clip_container(state_dict, best_acc):
    """``main.py``'s checkpoint: ``{'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'}``; the SGD state of
    its three parameter groups (temporal net, image encoder, prompt learner) holds momentum buffers of the right
    shapes that store one value each (stride 0), so that the file stays the size of its weights."""
    groups = [[k for k in state_dict if k.startswith(f'module.{name}.') and 'token_' not in k]
              for name in ('temporal_net', 'image_encoder', 'prompt_learner')]
    ids, param_groups = iter(range(10 ** 6)), []
    for keys, lr in zip(groups, (1e-2, 1e-5, 1e-3)):
        param_groups.append(dict(
            lr=lr * 0.01, momentum=0.9, dampening=0, weight_decay=1e-4, nesterov=False, maximize=False,
            foreach=None, differentiable=False, fused=None, initial_lr=lr, params=[next(ids) for _ in keys]))
    buffers = [torch.zeros(()).expand(state_dict[k].shape) for keys in groups for k in keys]
    optimizer = {'state': {i: {'momentum_buffer': b} for i, b in enumerate(buffers)}, 'param_groups': param_groups}
    return {'epoch': 50, 'state_dict': state_dict, 'best_acc': best_acc, 'optimizer': optimizer,
            'recorder': RecorderMeter(50)}


def write_dfer_clip_file(path, record_name: str = 'dfew', best_acc: float = 71.2345) -> Path:
    """An official DFER-CLIP checkpoint (``main.py``'s format) of the recorded weights at ``path``."""
    best = torch.tensor(best_acc)
    state = dfer_clip_state_dict(record_name)
    save_as_training_script(dfer_clip_container(state, best), path, cuda_tensors=(best,))
    return Path(path)


S2D_RECORD = json.loads((Path(__file__).parent / 'data' / 's2d_official.json').read_text())
# the argparse.Namespace run_class_finetuning.py pickles (a subset of its arguments), as scripts/ft_dfew.sh runs it
S2D_ARGS = dict(
    model='s2d_base_patch16_224', data_set='DFEW', nb_classes=7, data_path='data/DFEW/Clip/clip_224x224_16f',
    input_size=224, short_side_size=224, num_frames=16, sampling_rate=1, num_segments=1, opt='adamw', lr=1e-5,
    opt_betas=[0.9, 0.999], weight_decay=0.05, epochs=100, test_num_segment=2, test_num_crop=2, scale_factor=0.25,
    dropout_ratio=0.5, backbone='MobileFaceNet', model_key='model|module', K=2, qs=16, sdl_update_freq=40)


def s2d_state_dict(record_name: str = 'small'):
    """The official fine-tuned state dict of recording ``record_name`` (the ViT with its prompts and head)."""
    return fill_state_dict(S2D_RECORD['records'][record_name]['state_dict'])


def save_s2d_checkpoint(path, model_state, **args) -> Path:
    """An official S2D fine-tuned file (``utils.save_model``'s checkpoint-best format) of ``model_state`` at ``path``."""
    scaler = {'scale': 32768.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000,
              '_growth_tracker': 41}  # torch.cuda.amp.GradScaler.state_dict()
    torch.save({'model': model_state, 'optimizer': None, 'epoch': 57, 'scaler': scaler,
                'args': argparse.Namespace(**dict(S2D_ARGS, **args))}, path)
    return Path(path)


def write_s2d_file(path, record_name: str = 'small', **args) -> Path:
    """An official S2D fine-tuned file of a recording of ``tests/data/s2d_official.json`` at ``path``."""
    return save_s2d_checkpoint(path, s2d_state_dict(record_name), **args)


def write_s2d_landmark_file(path) -> Path:
    """The authors' landmark file (``landmark/mobilefacenet_model_best.pth.tar``, ``{'state_dict'}``) of the
    recorded MobileFaceNet weights at ``path``."""
    torch.save({'state_dict': fill_state_dict(S2D_RECORD['landmark_state_dict'])}, path)
    return Path(path)


def write_s2d_files(path) -> Path:
    """S2D's DFEW file at ``path`` and, beside it, its landmark file under the authors' name."""
    write_s2d_landmark_file(Path(path).parent / 'mobilefacenet_model_best.pth.tar')
    return write_s2d_file(path, 'dfew')


WRITERS = {  # model -> the writer of its DFEW file (any dfew_fold tag: the folds share one architecture)
    'former_dfer': write_former_dfer_file,
    'mae_dfer': write_mae_dfer_file,
    'dfer_clip': write_dfer_clip_file,
    's2d': write_s2d_files,  # and mobilefacenet_model_best.pth.tar, its --landmark-checkpoint
}


def main(argv=None) -> int:
    """Write the chosen models' files in their authors' formats to ``--output``."""
    parser = argparse.ArgumentParser(
        prog='python tests/official_files.py',
        description="Write DFER zoo checkpoint files in their authors' formats (the DFEW tags' architecture), with "
                    "filler weights, to try the zoo's commands offline. The predictions of these files mean nothing.")
    parser.add_argument('models', nargs='+', choices=sorted(WRITERS), metavar='MODEL',
                        help=f'one or more of {", ".join(sorted(WRITERS))}')
    parser.add_argument('--output', required=True, help='folder to write MODEL_dfew.pth into (made if missing)')
    args = parser.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    for name in args.models:
        path = WRITERS[name](Path(args.output) / f'{name}_dfew.pth')
        extra = ' (with --landmark-checkpoint mobilefacenet_model_best.pth.tar beside it)' if name == 's2d' else ''
        print(f'{path}: {name}.dfew_fold1 ... dfew_fold5 format, filler weights{extra}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
