"""Cost of one training iteration of the real-world recipes at their crop (GT 384, LR 96), on this machine.

    OMP_NUM_THREADS=1 python scripts/measure_realworld.py --root /tmp/realworld_cost [--iters 2] [--batch 1]

Runs options/train_realesrnet_x4.yml, then options/train_realesrgan_x4.yml from its weights, through BasicSR's
pipeline, unchanged except: data (scikit-image's photos, prepared with ``basicsr-taylor-prepare --hr-only``),
``--batch`` crops per iteration (the recipes' 5 need about 5x the memory and time), ``--iters`` iterations, no
data-loader workers, no tensorboard. Without the VGG19 weights on disk the perceptual loss runs on an
un-pretrained VGG19 (same cost). Prints, per stage and iteration, the wall and CPU seconds of the degradations
(``feed_data``) and of the optimisation step (``optimize_parameters``).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
import types

import cv2

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import basicsr_taylor  # noqa: E402,F401
from basicsr_taylor.data import prepare_hr_only, sample_photo  # noqa: E402
from basicsr_taylor.quickstart import write_options  # noqa: E402
from basicsr_taylor.utils import pretrained  # noqa: E402
from basicsr_taylor.options.file import read_option_file  # noqa: E402
from basicsr_taylor.options.pipeline import run_basicsr_pipeline  # noqa: E402

PHOTOS = ('astronaut', 'coffee', 'rocket', 'camera')  # 400 px or more on the shorter side


def timed(cls, name, rows, stage):
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        import torch
        wall, cpu = time.perf_counter(), time.process_time()
        out = original(self, *args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: count it in the step that queued it
        rows.append(dict(stage=stage, step=name, wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu))
        return out

    setattr(cls, name, wrapper)
    return original


def random_vgg_if_missing():
    """The perceptual loss's cost without its 548 MB of weights: torchvision's VGG19 layers, un-pretrained."""
    from torchvision.models import vgg
    try:
        pretrained.ensure_vgg_weights('vgg19')
        return 'ImageNet VGG19'
    except pretrained.MissingWeightsError:
        vgg.vgg19 = lambda pretrained=False, **kwargs: types.SimpleNamespace(features=vgg.make_layers(vgg.cfgs['E']))
        pretrained.ensure_vgg_weights = lambda vgg_type='vgg19': None
        return 'un-pretrained VGG19 (weights not on disk)'


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', required=True, help='working folder (data, experiments/)')
    parser.add_argument('--iters', type=int, default=2)
    parser.add_argument('--batch', type=int, default=1)
    args = parser.parse_args()
    os.makedirs(osp.join(args.root, 'HR'), exist_ok=True)
    os.chdir(args.root)
    for name in PHOTOS:
        cv2.imwrite(osp.join('HR', f'{name}.png'), sample_photo(name))
    data = prepare_hr_only('HR', '.', crop=400, step=200)
    vgg = random_vgg_if_missing()
    from basicsr.models.realesrgan_model import RealESRGANModel
    from basicsr.models.realesrnet_model import RealESRNetModel
    rows = []
    for stage, cls in (('realesrnet', RealESRNetModel), ('realesrgan', RealESRGANModel)):
        originals = {name: timed(cls, name, rows, stage) for name in ('feed_data', 'optimize_parameters')}
        opt = json.loads(json.dumps(read_option_file(osp.join(REPO, 'options', f'train_{stage}_x4.yml'))))
        opt['name'] = f'cost_{stage}'
        opt['datasets']['train'].update(dataroot_gt='.', meta_info=data['meta_info'], batch_size_per_gpu=args.batch,
                                        num_worker_per_gpu=0)
        opt['train']['total_iter'] = args.iters
        opt['logger'].update(print_freq=1, save_checkpoint_freq=args.iters, use_tb_logger=False)
        if stage == 'realesrgan':
            opt['path']['pretrain_network_g'] = 'experiments/cost_realesrnet/models/net_g_latest.pth'
        sys.argv = [sys.argv[0]]
        run_basicsr_pipeline('train', ['-opt', write_options(opt, f'{opt["name"]}.yml')])
        for name, original in originals.items():
            setattr(cls, name, original)
    import torch
    print(f'\nbatch {args.batch} (GT 384, LR 96), torch threads {torch.get_num_threads()}, perceptual loss on {vgg}, '
          'load average '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    print('| stage | iteration | step | wall s | CPU s |\n| --- | --- | --- | --- | --- |')
    count = {}
    for row in rows:
        key = (row['stage'], row['step'])
        count[key] = count.get(key, 0) + 1
        if row['step'] == 'feed_data' and count[key] > args.iters:
            continue  # validation batches
        print(f'| {row["stage"]} | {count[key]} | {row["step"]} | {row["wall_s"]:.2f} | {row["cpu_s"]:.2f} |')


if __name__ == '__main__':
    main()
