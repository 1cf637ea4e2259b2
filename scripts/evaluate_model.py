"""Y-channel PSNR / SSIM of a model on the SR benchmark sets, beside MATLAB bicubic: the model card's table.

    OMP_NUM_THREADS=2 python scripts/evaluate_model.py --model CHECKPOINT_OR_ZOO_NAME [--scale 2] --data DATASETS
        [--sets Set5,Set14,Urban100,BSD200-held20] [--bicubic] [--out results.json] [--work results/evaluate]

Sets, under --data: ``NAME`` is NAME/HR with its LR from NAME/LRbicx<scale> (same file names) when that folder
exists, else made with BasicSR's MATLAB-like ``imresize`` of the HR cropped to a multiple of the scale and cached
under --work; ``FOLDER-heldN`` is the first N images (by file name) of the folder FOLDER, as the ablation runner's
``--hold-out FOLDER=N`` takes them (LR made the same way). The protocol is BasicSR's validation: the HR cropped to
LR size x scale, the model run on the whole LR image (float32, no tiling), its output rounded to 8 bits
(``tensor2img``), then ``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True, crop_border=scale``,
averaged over the images. ``--bicubic`` adds the MATLAB-bicubic upsampling of the LR (``imresize``) as a column.

--model takes what basicsr-taylor-infer takes (a BasicSR checkpoint with its option file, found beside it or given
with --opt; a bundled model's NAME or zoo:NAME; nothing: the bundled model of --scale); --scale defaults to the
model's and must match it. Writes a markdown table to stdout and a JSON file with per-set and per-image values, the
model's name, path and SHA-256, the scale, torch and BasicSR versions and the date (--out, default
WORK/<model>_x<scale>.json). A progress line per set goes to stderr. Exit code 2 for a usage error (one line).
"""
import argparse
import contextlib
import datetime
import json
import os
import os.path as osp
import re
import sys
import time
import types

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

DEFAULT_SETS = ('Set5', 'Set14', 'Urban100', 'BSD200-held20')
HELD = re.compile(r'(.+)-held(\d+)')  # FOLDER-heldN: the first N images of --data/FOLDER


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='python scripts/evaluate_model.py',
                                     description='Y PSNR / SSIM (crop = scale) of a model on benchmark sets.')
    parser.add_argument('--model', default=None,
                        help='a checkpoint (.pth) or a bundled model (NAME, zoo:NAME); default: the bundled model '
                        'of --scale')
    parser.add_argument('--opt', default=None, help='option file with network_g (default: the experiment\'s)')
    parser.add_argument('--scale', type=int, default=None, help='checked against the model\'s (default: the model\'s)')
    parser.add_argument('--data', required=True, help='folder of the datasets (Set5/HR, Set5/LRbicx2, BSD200, ...)')
    parser.add_argument('--sets', default=','.join(DEFAULT_SETS),
                        help=f'comma-separated set names (default {",".join(DEFAULT_SETS)}): NAME for DATA/NAME/HR, '
                        'FOLDER-heldN for the first N images of DATA/FOLDER')
    parser.add_argument('--bicubic', action='store_true', help='also evaluate MATLAB-bicubic upsampling (baseline)')
    parser.add_argument('--out', default=None, help='JSON file of the results (default: WORK/<model>_x<scale>.json)')
    parser.add_argument('--work', default=osp.join('results', 'evaluate'),
                        help='folder for the LR images made here (cached; delete it when the data change)')
    return parser.parse_args(argv)


import numpy as np  # noqa: E402
import torch  # noqa: E402

import basicsr_taylor  # noqa: E402,F401  (compat fixes before basicsr; registers TaylorSwinIR)
from basicsr.metrics import calculate_psnr, calculate_ssim  # noqa: E402
from basicsr.utils import img2tensor, tensor2img  # noqa: E402
from basicsr.utils.matlab_functions import imresize  # noqa: E402
from basicsr_taylor import infer, zoo  # noqa: E402
from basicsr_taylor.ablations.inputs import held_out_test_set, parse_test_sets  # noqa: E402
from basicsr_taylor.models.checkpoint import network_scale  # noqa: E402
from basicsr_taylor.utils.files import write_atomically  # noqa: E402
from basicsr_taylor.utils.image_io import from_unit_float, list_images, read_image, to_unit_float  # noqa: E402


class EvaluationError(ValueError):
    """A data or argument problem, reported in one line."""


def split_sets(value):
    names = list(dict.fromkeys(name.strip() for name in value.split(',') if name.strip()))
    if not names:
        raise EvaluationError(f'--sets {value!r}: no set named')
    return names


def available_sets(data):
    """The NAME sets in ``data`` (folders with an HR folder)."""
    return sorted(name for name in os.listdir(data) if osp.isdir(osp.join(data, name, 'HR')))


def locate_set(name, data):
    """('held', FOLDER, N) or ('folder', NAME/HR folder, None); one-line errors for a missing folder or an unknown
    name."""
    held = HELD.fullmatch(name)
    if held:
        folder, count = osp.join(data, held[1]), int(held[2])
        if not osp.isdir(folder):
            raise EvaluationError(f'{name}: no folder {folder} (expected the {held[1]} images; the first {count} by '
                                  'file name are the set)')
        images = list_images(folder, error=EvaluationError)
        if len(images) <= count:  # held out of a training folder, as the ablation runner's --hold-out
            raise EvaluationError(f'{name}: {folder} has {len(images)} images; FOLDER-heldN is the first N images of '
                                  f'a larger folder (N < {len(images)})')
        return 'held', folder, count
    hr = osp.join(data, name, 'HR')
    if osp.isdir(hr):
        return 'folder', hr, None
    if name in DEFAULT_SETS:
        raise EvaluationError(f'{name}: no folder {hr} (expected the HR images of {name}, and optionally '
                              f'LRbicx<scale> beside HR)')
    known = list(dict.fromkeys(DEFAULT_SETS + tuple(available_sets(data))))
    raise EvaluationError(f'unknown set {name!r}: the known sets are {", ".join(known)} (NAME: a folder NAME/HR in '
                          f'{data}; FOLDER-heldN: the first N images of {data}/FOLDER)')


def prepare_set(name, location, scale, work):
    """(HR folder, LR folder, whether the LR was made here): the set's LRbicx<scale> folder, else MATLAB-bicubic LR
    cached under ``work`` (the ablation runner's held-out and test-set code)."""
    kind, folder, count = location
    if kind == 'held':
        args = types.SimpleNamespace(hold_out=(osp.basename(osp.normpath(folder)), count), train_hr=[folder],
                                     root=work, scale=scale)
        hr, lr = held_out_test_set(args)[name]
        return hr, lr, True
    lr = osp.join(osp.dirname(folder), f'LRbicx{scale}')
    if osp.isdir(lr):
        return folder, lr, False
    return (*parse_test_sets([f'{name}={folder}'], scale, work)[name], True)


def image_pairs(hr_dir, lr_dir):
    """[(HR path, LR path)], matched by file stem."""
    lr_images = {osp.splitext(osp.basename(path))[0]: path for path in list_images(lr_dir, error=EvaluationError)}
    pairs = []
    for hr in list_images(hr_dir, error=EvaluationError):
        stem = osp.splitext(osp.basename(hr))[0]
        if stem not in lr_images:
            raise EvaluationError(f'no LR image for {osp.basename(hr)} in {lr_dir}')
        pairs.append((hr, lr_images[stem]))
    return pairs


def read_bgr(path):
    """(H, W, 3) BGR float32 in [0, 1], gray repeated and alpha dropped, as BasicSR's validation reads images."""
    image, _ = to_unit_float(read_image(path, orient=False, error=EvaluationError))
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image[:, :, :3])


def load_pair(hr_path, lr_path, scale):
    """(HR uint8 cropped to LR size x scale, LR float32), as PairedImageDataset gives them in validation."""
    lr = read_bgr(lr_path)
    hr = from_unit_float(read_bgr(hr_path), np.uint8)
    height, width = lr.shape[0] * scale, lr.shape[1] * scale
    if hr.shape[0] < height or hr.shape[1] < width:
        raise EvaluationError(f'{hr_path} ({hr.shape[1]}x{hr.shape[0]}) is smaller than its LR {lr_path} '
                              f'({lr.shape[1]}x{lr.shape[0]}) x{scale}')
    return hr[:height, :width], lr


def model_output(upscaler, lr):
    """The network's output on the whole LR image, as BasicSR's validation saves it (uint8 BGR)."""
    return tensor2img(upscaler(img2tensor(lr, bgr2rgb=True, float32=True)[None]), rgb2bgr=True)


def bicubic_output(lr, scale):
    """MATLAB-bicubic upsampling of the LR (uint8 BGR)."""
    return from_unit_float(np.asarray(imresize(lr, scale)), np.uint8)


def scores(sr, hr, scale):
    """(Y PSNR, Y SSIM) with crop_border = scale."""
    return (float(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True)),
            float(calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True)))


def evaluate_set(pairs, scale, upscaler, bicubic):
    """{'model': {psnr, ssim}, 'bicubic': ..., 'images': [...]}: means over the images and per-image values."""
    images, methods = [], ['model'] * (upscaler is not None) + ['bicubic'] * bicubic
    for hr_path, lr_path in pairs:
        hr, lr = load_pair(hr_path, lr_path, scale)
        row = {'name': osp.basename(hr_path), 'lr_size': [lr.shape[1], lr.shape[0]]}
        for method in methods:
            sr = model_output(upscaler, lr) if method == 'model' else bicubic_output(lr, scale)
            row[method] = dict(zip(('psnr', 'ssim'), scores(sr, hr, scale)))
        images.append(row)
    result = {method: {metric: float(np.mean([row[method][metric] for row in images])) for metric in ('psnr', 'ssim')}
              for method in methods}
    return dict(result, images=images)


def model_identity(model, entry):
    """(name, path, SHA-256) of the evaluated weights."""
    if entry is not None:
        return entry['name'], entry['path'], entry['sha256']  # verified against the registry when loaded
    path = osp.abspath(model)
    folder = osp.dirname(path)
    stem = osp.splitext(osp.basename(path))[0]
    name = f'{osp.basename(osp.dirname(folder))}/{stem}' if osp.basename(folder) == 'models' else stem
    return name, path, zoo.sha256_of(path)


def format_table(results, columns, scale):
    """Markdown: a row per set, 'PSNR / SSIM' per method."""
    lines = [f'| set (x{scale}, Y, crop {scale}) | images | ' + ' | '.join(f'{title} PSNR / SSIM'
                                                                        for _, title in columns) + ' |',
             '| --- | ---: |' + ' ---: |' * len(columns)]
    for name, result in results.items():
        cells = [f'{result[method]["psnr"]:.2f} / {result[method]["ssim"]:.4f}' for method, _ in columns]
        lines.append(f'| {name} | {len(result["images"])} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def evaluate(args):
    """Load, evaluate every set, write the JSON; returns (table, JSON path)."""
    import basicsr
    if not osp.isdir(args.data):
        raise EvaluationError(f'--data {args.data}: no such folder (expected the datasets: Set5/HR, BSD200, ...)')
    names = split_sets(args.sets)
    locations = {name: locate_set(name, args.data) for name in names}  # every name checked before any work
    network, network_opt, source, entry = infer.load_model(args.model, args.scale, args.opt)
    scale = network_scale(network, network_opt)
    model_name, model_path, sha256 = model_identity(args.model, entry)
    upscaler = infer.Upscaler(network, scale, torch.device('cpu'), 'fp32', tile=0)
    print(f'model {model_name}: {source}, x{scale}, sha256 {sha256}', file=sys.stderr)
    results, sets = {}, {}
    for name in names:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the data code's progress lines: stdout keeps the table
            hr, lr, made = prepare_set(name, locations[name], scale, args.work)
        pairs = image_pairs(hr, lr)
        results[name] = evaluate_set(pairs, scale, upscaler, args.bicubic)
        sets[name] = dict(hr=osp.abspath(hr), lr=osp.abspath(lr), lr_made_here=made, **results[name])
        summary = ', '.join(f'{method} {results[name][method]["psnr"]:.2f} dB / {results[name][method]["ssim"]:.4f}'
                            for method in ('model', 'bicubic') if method in results[name])
        print(f'{name} x{scale}: {len(pairs)} images in {time.perf_counter() - start:.1f}s: {summary}',
              file=sys.stderr, flush=True)
    columns = [('model', model_name)] + [('bicubic', 'bicubic')] * args.bicubic
    out = args.out or osp.join(args.work, f'{model_name.replace("/", "_")}_x{scale}.json')
    report = dict(model=model_name, model_path=model_path, sha256=sha256, source=source, scale=scale,
                  protocol=f'Y channel (BasicSR calculate_psnr / calculate_ssim, test_y_channel=True), '
                  f'crop_border={scale}; HR cropped to LR size x scale; whole images, float32, output rounded to '
                  'uint8; bicubic = basicsr.utils.matlab_functions.imresize of the LR',
                  torch=torch.__version__, basicsr=basicsr.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), sets=sets)
    write_atomically(out, json.dumps(report, indent=2) + '\n')
    return format_table(results, columns, scale), out


def main(argv=None):
    args = parse_args(argv)
    try:
        table, out = evaluate(args)
    except (ValueError, OSError) as error:  # CheckpointError, ZooError, DataPreparationError, ... are ValueErrors
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(table)
    print(f'results -> {out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
