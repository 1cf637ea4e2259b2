"""Prepare super-resolution training data the BasicSR way: sub-images, then LMDBs with meta_info.txt.

    python scripts/prepare_div2k.py --root datasets/DIV2K                 # DIV2K, x2/x3/x4
    python scripts/prepare_div2k.py --hr my_photos --out datasets/mine --scales 2   # any HR folder
    basicsr-taylor-prepare --hr datasets/DF2K/DF2K_HR --hr-only [--multiscale]      # real-world SR: HR only

Steps (each one skipped when its output already exists, so the script can be run again):

1. For every scale whose LR folder is missing, create it from the HR images with MATLAB bicubic
   (``basicsr.utils.matlab_functions.imresize``) after cropping HR to a multiple of the scale.
2. Cut HR into ``crop``×``crop`` sub-images every ``step`` pixels (BasicSR's extract_subimages recipe:
   480/240 for DIV2K) and LR into the matching ``crop/s``×``crop/s`` sub-images at the same places.
   HR positions are multiples of ``align`` (12 = lcm(2, 3, 4)), so one HR set pairs exactly with x2, x3 and x4.
3. Pack every sub-image folder into an LMDB with ``basicsr.utils.lmdb_util.make_lmdb_from_imgs``.

With --hr-only (real-world SR, BasicSR's RealESRGANDataset synthesises the LR images while training): no LR;
optionally Real-ESRGAN's multiscale copies of every HR image (--multiscale), then HR sub-images (400/200 by
default, Real-ESRGAN's), their meta_info file (disk) and their LMDB.

Every output is written under a ``.partial`` name and renamed when complete: an interrupted run never leaves a
folder or LMDB that looks finished.
"""
import argparse
import os
import os.path as osp
import sys

if __package__ in (None, ''):  # run as a file: put the repository root, not basicsr_taylor/, on sys.path
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
    sys.path.insert(0, os.path.dirname(_here))

from basicsr_taylor.utils.cli import answer_help_early  # noqa: E402

DEFAULTS = {False: dict(crop=480, step=240, align=12), True: dict(crop=400, step=200, align=1)}  # by --hr-only


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='basicsr-taylor-prepare', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default='datasets/DIV2K', help='DIV2K folder (default: %(default)s)')
    parser.add_argument('--hr', help='HR image folder (default: ROOT/DIV2K_train_HR)')
    parser.add_argument('--lr', help='LR folder with {scale} (default: ROOT/DIV2K_train_LR_bicubic/X{scale}); '
                        'created with MATLAB bicubic when missing')
    parser.add_argument('--out', help='output folder for sub-images and LMDBs (default: ROOT)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    parser.add_argument('--crop', type=int, help='HR sub-image size (default: 480; 400 with --hr-only)')
    parser.add_argument('--step', type=int, help='HR sub-image stride (default: 240; 200 with --hr-only)')
    parser.add_argument('--align', type=int,
                        help='HR sub-image corners are multiples of this; a multiple of every scale (default: 12; '
                        '1 with --hr-only)')
    parser.add_argument('--hr-only', action='store_true',
                        help="real-world SR: HR sub-images, meta_info and LMDB for BasicSR's RealESRGANDataset, no LR")
    parser.add_argument('--multiscale', action='store_true',
                        help="with --hr-only: first add Real-ESRGAN's smaller copies of every HR image (3/4, 1/2, 1/3, "
                        'shorter side 400)')
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument('--overwrite', action='store_true', help='rebuild outputs that already exist')
    parser.add_argument('--no-lmdb', action='store_true', help='only sub-image folders')
    args = parser.parse_args(argv)
    if args.multiscale and not args.hr_only:
        parser.error('--multiscale needs --hr-only')
    for key, value in DEFAULTS[args.hr_only].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    from basicsr_taylor.data import sub_dir_names
    if args.hr is None:  # DIV2K layout under --root
        args.hr = osp.join(args.root, 'DIV2K_train_HR')
        args.lr = args.lr or osp.join(args.root, 'DIV2K_train_LR_bicubic', 'X{scale}')
        args.out = args.out or args.root
    else:  # any HR folder: outputs (and missing LR folders) next to it unless --out is given
        args.out = args.out or osp.dirname(osp.abspath(args.hr))
        base = sub_dir_names(args.hr, 0)[1].split('_LR_bicubic')[0]
        args.lr = args.lr or osp.join(args.out, f'{base}_LR_bicubic', 'X{scale}')
    return args


answer_help_early('prepare_data', parse_args)  # --help without torch or BasicSR; the heavy imports follow

import basicsr_taylor  # noqa: E402,F401  (compat fixes before basicsr)
from basicsr_taylor.data import DataPreparationError, prepare, prepare_hr_only  # noqa: E402


def main_hr_only(args):
    try:
        out = prepare_hr_only(args.hr, args.out, args.crop, args.step, args.align, args.multiscale, args.workers,
                              args.overwrite, not args.no_lmdb)
    except DataPreparationError as err:
        raise SystemExit(f'basicsr-taylor-prepare: error: {err}') from None
    print(f'HR sub-images: {out["sub_dir"]}\nRealESRGANDataset, io_backend disk: dataroot_gt: {args.out}, '
          f'meta_info: {out["meta_info"]}')
    if out['lmdb']:
        print(f'RealESRGANDataset, io_backend lmdb: dataroot_gt: {out["lmdb"]}')


def main(argv=None):
    args = parse_args(argv)
    if args.hr_only:
        return main_hr_only(args)
    try:
        outputs = prepare(args.hr, args.lr, args.out, tuple(args.scales), args.crop, args.step, args.align,
                          args.workers, args.overwrite, not args.no_lmdb)
    except DataPreparationError as err:
        raise SystemExit(f'basicsr-taylor-prepare: error: {err}') from None
    for name, (sub_dir, lmdb_path) in outputs.items():
        print(f'{"HR" if name == "hr" else f"LR x{name}"}: {sub_dir}' + ('' if args.no_lmdb else f', {lmdb_path}'))


if __name__ == '__main__':
    main()
