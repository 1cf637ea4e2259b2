"""Quickstart: train a small TaylorSwinIR x2 on the CPU (about ten minutes on 2 cores), with no dataset and no GPU.

    basicsr-taylor-quickstart            (or: python -m basicsr_taylor.quickstart)

1. writes scikit-image's sample photos (shipped inside the package) as HR images: most for training, three
   held out for validation;
2. prepares them with the data script's code (basicsr_taylor.data): MATLAB-bicubic LR, sub-images, LMDBs;
3. trains through BasicSR's own pipeline (``basicsr_taylor.train``: LMDB loader, validation, checkpoints,
   tensorboard) with --auto_resume, so running it again continues an interrupted run;
4. prints the validation PSNR/SSIM (Y channel, 2 border pixels cropped) of the trained network next to MATLAB
   bicubic upscaling of the same LR images, draws quickstart_comparison.png (bicubic | TaylorSwinIR | ground
   truth), writes a test option file for the trained model and prints the test and infer commands to try next.

Everything goes under the current directory (or --root): datasets/quickstart/, experiments/, tb_logger/.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

from .utils.cli import answer_help_early

NAME = 'quickstart_TaylorSwinIR_SRx2'
DATA_DIR = osp.join('datasets', 'quickstart')
SCALE = 2
TOTAL_ITER = 2000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='basicsr-taylor-quickstart', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default='.', help='working folder (default: current directory)')
    parser.add_argument('--iters', type=int, default=TOTAL_ITER, help='training iterations (default: %(default)s)')
    parser.add_argument('--threads', type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help='CPU threads for training (default: half the cores, %(default)s here)')
    return parser.parse_args(argv)


answer_help_early('quickstart', parse_args)  # --help without torch or BasicSR; the heavy imports follow

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from .data import image_key, prepare_sample_photos  # noqa: E402
from .data.folders import Progress  # noqa: E402
from .data.sample_photos import VAL_PHOTOS  # noqa: E402
from .utils.files import write_atomically  # noqa: E402
from .utils.image_io import list_images, write_image  # noqa: E402

# A small, CPU-friendly TaylorSwinIR: 8x8 windows (64 tokens), 32 channels in one head, 2 residual groups of 2
# blocks, the one-step pixel-shuffle upsampler of lightweight SwinIR; LR patches of 32 = 4x4 windows. Tuned for
# PSNR in about five minutes on 2 cores (docs/training.md, Measurements): at this budget window 8 trained twice
# the iterations of window 16 and gained more.
NETWORK = dict(type='TaylorSwinIR', upscale=SCALE, in_chans=3, img_size=32, window_size=8, img_range=1.,
               depths=[2, 2], embed_dim=32, num_heads=[1, 1], mlp_ratio=2, upsampler='pixelshuffledirect',
               resi_connection='1conv')
LEARNING_RATE = 4e-3
# Photographs only: the motion-blurred clock render, the smooth moon, text, page scans, micrographs, the Hubble
# field and the colour wheel teach little about the validation photos (0.72 -> 0.99 dB with these seven).
PHOTOS = ('astronaut', 'stereo_motorcycle', 'camera', 'coins', 'brick', 'grass', 'gravel')


def prepare_quickstart_data(data_dir=DATA_DIR, workers=1):
    """The sample photos as x2 training LMDBs and validation folders; returns the dataroots."""
    return prepare_sample_photos(data_dir, SCALE, train_photos=PHOTOS, workers=workers)


def quickstart_options(dataroots, total_iter=TOTAL_ITER, network=None, name=NAME):
    """The BasicSR option dict of the quickstart run (written to a YAML file for basicsr_taylor.train)."""
    return {
        'name': name, 'model_type': 'TaylorSRModel', 'scale': SCALE, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {
            'train': dict(name='SamplePhotos', type='PairedImageDataset', dataroot_gt=dataroots['train_gt'],
                          dataroot_lq=dataroots['train_lq'], filename_tmpl='{}', io_backend=dict(type='lmdb'),
                          gt_size=64, use_hflip=True, use_rot=True, num_worker_per_gpu=1, batch_size_per_gpu=8,
                          dataset_enlarge_ratio=1, prefetch_mode=None),
            'val': dict(name='SamplePhotosVal', type='PairedImageDataset', dataroot_gt=dataroots['val_gt'],
                        dataroot_lq=dataroots['val_lq'], io_backend=dict(type='disk')),
        },
        'network_g': dict(network or NETWORK),
        'path': dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        'train': {
            'ema_decay': 0.99,  # short run: a 0.999 average would lag ~1000 iterations behind
            'optim_g': dict(type='Adam', lr=LEARNING_RATE, weight_decay=0, betas=[0.9, 0.99]),
            'scheduler': dict(type='CosineAnnealingRestartLR', periods=[total_iter], restart_weights=[1],
                              eta_min=1e-5),
            'total_iter': total_iter, 'warmup_iter': -1,
            'pixel_opt': dict(type='L1Loss', loss_weight=1.0, reduction='mean'),
        },
        'val': dict(val_freq=max(total_iter // 2, 1), save_img=False, metrics=_metrics()),
        'logger': dict(print_freq=max(total_iter // 30, 1), save_checkpoint_freq=max(total_iter // 4, 1),
                       use_tb_logger=True, wandb=dict(project=None, resume_id=None)),
    }


def options_to_train_further(train_opt):
    """The quickstart's option file with as many iterations again, for ``--auto_resume`` from its last state: the
    cosine schedule restarts at half the peak learning rate for the new iterations (a resumed run follows the
    schedule of its option file: README, BasicSR behaviours changed)."""
    opt = {key: (dict(value) if isinstance(value, dict) else value) for key, value in train_opt.items()}
    total = train_opt['train']['total_iter']
    periods = list(train_opt['train']['scheduler']['periods'])
    weights = list(train_opt['train']['scheduler']['restart_weights'])
    opt['train'] = dict(train_opt['train'], total_iter=2 * total, scheduler=dict(
        train_opt['train']['scheduler'], periods=periods + [total], restart_weights=weights + [weights[-1] / 2]))
    return opt


def next_commands(further_path, test_path, val_lq, model_path):
    """The commands the quickstart prints at the end, each one working from the state it leaves."""
    return [f'{command("test")} -opt {test_path}            # PSNR/SSIM and SR images in results/',
            f'{command("infer")} -i {val_lq} -o results/quickstart_infer --model {model_path}',
            f'{command("train")} -opt {further_path} --auto_resume   # train as long again (lr restarts at half)']


def _metrics():
    metric = dict(crop_border=SCALE, test_y_channel=True)
    return dict(psnr=dict(type='calculate_psnr', **metric), ssim=dict(type='calculate_ssim', **metric))


def options_for_test(train_opt, model_path):
    """Option file for ``basicsr-taylor-test``: the trained model (EMA weights) on the validation images."""
    val = train_opt['datasets']['val']
    return {
        'name': train_opt['name'] + '_test', 'model_type': 'TaylorSRModel', 'scale': SCALE, 'num_gpu': 'auto',
        'manual_seed': 0,
        'datasets': {'test_1': dict(name='SamplePhotosVal', type='PairedImageDataset', dataroot_gt=val['dataroot_gt'],
                                    dataroot_lq=val['dataroot_lq'], io_backend=dict(type='disk'))},
        'network_g': dict(train_opt['network_g']),
        'path': dict(pretrain_network_g=model_path, param_key_g='params_ema', strict_load_g=True),
        'val': dict(save_img=True, suffix=None, metrics=_metrics()),
    }


def write_options(opt, path):
    """Write the option dict as YAML (atomically)."""
    return write_atomically(path, yaml.safe_dump(opt, sort_keys=False))


def run_training(opt_path, total_iter, threads, extra_args=()):
    """``python -m basicsr_taylor.train -opt opt_path --auto_resume`` in a child process, with a progress bar
    over iterations and BasicSR's validation lines shown (not on a terminal: BasicSR's iteration and validation
    lines, no bar); its full output is in experiments/<name>/*.log.

    ``threads`` intra-op threads (OMP_NUM_THREADS), waiting passively: on a CPU shared with other jobs,
    spinning OpenMP threads slowed a 2-thread run 5-10x in our measurements."""
    package_parent = osp.dirname(osp.dirname(osp.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get('PYTHONPATH')])),
               OMP_NUM_THREADS=str(threads))
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    cmd = [sys.executable, '-m', 'basicsr_taylor.train', '-opt', opt_path, '--auto_resume', *extra_args]
    print('$ ' + ' '.join(cmd), flush=True)
    tail = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc, \
            Progress(total=total_iter, desc='training', unit='iter') as pbar:
        try:
            for line in proc.stdout:
                tail = (tail + [line])[-60:]
                found = re.search(r'\[epoch:\s*\d+, iter:\s*([\d,]+)', line)  # BasicSR's MessageLogger line
                if found:
                    pbar.update(int(found.group(1).replace(',', '')) - pbar.n)
                if (found and pbar.quiet) or any(word in line for word in ('Validation', '# psnr', '# ssim',
                                                                            'Resuming')):
                    pbar.log(line.rstrip())
        except BaseException:  # Ctrl-C: stop the training too (run the quickstart again to resume)
            proc.terminate()
            raise
        if proc.wait() == 0:
            pbar.update(total_iter - pbar.n)
    if proc.returncode:
        sys.stderr.write(''.join(tail))
        raise SystemExit(f'quickstart: training failed (exit code {proc.returncode}); see the output above')


def evaluate(opt, model_path):
    """Mean Y-channel PSNR/SSIM of the trained network (EMA weights) and of MATLAB bicubic on the val set."""
    import torch
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.matlab_functions import imresize

    from .models.checkpoint import load_state_dict
    val = opt['datasets']['val']
    net = build_network(dict(opt['network_g']))
    net.load_state_dict(load_state_dict(model_path)[0])  # params_ema if present, weights-only
    net.eval()
    rows = []
    for gt_path in list_images(val['dataroot_gt']):
        key = image_key(gt_path)
        lq = cv2.imread(osp.join(val['dataroot_lq'], key + '.png')).astype(np.float32) / 255.
        gt = cv2.imread(gt_path)[:lq.shape[0] * SCALE, :lq.shape[1] * SCALE]
        with torch.no_grad():
            sr = tensor2img(net(img2tensor(lq, bgr2rgb=True)[None]))  # BGR uint8
        bicubic = np.clip(np.round(imresize(lq, SCALE) * 255.), 0, 255).astype(np.uint8)
        row = {'image': key, 'images': {'bicubic': bicubic, 'TaylorSwinIR': sr, 'ground truth': gt}}
        for method, img in (('TaylorSwinIR', sr), ('bicubic', bicubic)):
            row[method] = (calculate_psnr(img, gt, SCALE, test_y_channel=True),
                           calculate_ssim(img, gt, SCALE, test_y_channel=True))
        rows.append(row)
    return rows


def comparison_image(row, box=(50, 16, 96, 112), zoom=2):
    """bicubic | TaylorSwinIR | ground truth: the same HR crop (top, left, height, width; default: chelsea's eye)
    of one validation image, enlarged ``zoom`` times (nearest), each labelled with its PSNR on the whole image."""
    top, left, height, width = box
    panels = []
    for method, img in row['images'].items():
        crop = img[top:top + height, left:left + width]
        crop = cv2.resize(crop, (width * zoom, height * zoom), interpolation=cv2.INTER_NEAREST)
        label = method if method not in row else f'{method} {row[method][0]:.2f} dB'
        band = np.full((28, crop.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.vstack([band, crop]))
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    return np.hstack([part for panel in panels for part in (panel, gap)][:-1])


def format_results(rows):
    lines = [f'{"image":<10} {"TaylorSwinIR PSNR/SSIM":>24} {"bicubic PSNR/SSIM":>20}']
    for row in rows:
        lines.append(f'{row["image"]:<10} {row["TaylorSwinIR"][0]:>15.2f} / {row["TaylorSwinIR"][1]:.4f} '
                     f'{row["bicubic"][0]:>11.2f} / {row["bicubic"][1]:.4f}')
    mean = {m: np.mean([r[m] for r in rows], axis=0) for m in ('TaylorSwinIR', 'bicubic')}
    lines.append(f'{"mean":<10} {mean["TaylorSwinIR"][0]:>15.2f} / {mean["TaylorSwinIR"][1]:.4f} '
                 f'{mean["bicubic"][0]:>11.2f} / {mean["bicubic"][1]:.4f}')
    gain = mean['TaylorSwinIR'][0] - mean['bicubic'][0]
    lines.append(f'TaylorSwinIR x{SCALE} is {abs(gain):.2f} dB {"above" if gain > 0 else "below"} bicubic '
                 '(Y channel, 2 border pixels cropped)')
    return '\n'.join(lines), gain


def main(argv=None):
    """Console entry point: run the quickstart, exit status 0."""
    run(argv)
    return 0


def run(argv=None):
    """Run the quickstart; return the PSNR gain (dB) of the network over bicubic."""
    args = parse_args(argv)
    os.makedirs(args.root, exist_ok=True)
    os.chdir(args.root)
    start = time.time()
    dataroots = prepare_quickstart_data()
    opt = quickstart_options(dataroots, args.iters)
    opt_path = write_options(opt, osp.join(DATA_DIR, f'train_{NAME}.yml'))
    run_training(opt_path, args.iters, args.threads)
    model_path = osp.join('experiments', NAME, 'models', 'net_g_latest.pth')
    rows = evaluate(opt, model_path)
    table, gain = format_results(rows)
    picture = 'quickstart_comparison.png'
    write_image(comparison_image(rows[0]), picture)
    test_path = write_options(options_for_test(opt, model_path), osp.join(DATA_DIR, f'test_{NAME}.yml'))
    further_path = write_options(options_to_train_further(opt), osp.join(DATA_DIR, f'train_further_{NAME}.yml'))
    print(f'\nValidation on crops of {", ".join(p[0] for p in VAL_PHOTOS)} (held out, x{SCALE}):\n{table}')
    print(f'Total time {time.time() - start:.0f} s. Logs and checkpoints: experiments/{NAME}/, '
          f'tensorboard: tb_logger/{NAME}/, side by side: {picture}. Next:')
    for line in next_commands(further_path, test_path, opt['datasets']['val']['dataroot_lq'], model_path):
        print('  ' + line)
    return gain


def command(name):
    """``basicsr-taylor-<name>`` as the user can type it: with this environment's bin/ folder when that is not on
    PATH (the README's quickstart installs into .venv without activating it)."""
    script = f'basicsr-taylor-{name}'
    if shutil.which(script):
        return script
    local = osp.join(osp.dirname(sys.executable), script)
    return osp.relpath(local) if osp.isfile(local) and not osp.relpath(local).startswith('..') else \
        (local if osp.isfile(local) else f'{sys.executable} -m basicsr_taylor.{name}')


if __name__ == '__main__':
    main()
