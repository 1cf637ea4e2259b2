"""The GPU check's training run: an LMDB from T91 (x2, HR sub-images 96 px: LR patch 48), validation on Set5,
trained through BasicSR's pipeline. Prints the option file's path; the caller starts the training
(``torchrun --nproc_per_node=1 basicsr_taylor/train.py -opt PATH --launcher pytorch``).

    python scripts/gpu_train_check.py --t91 .gpu/datasets/T91 --set5 .gpu/datasets/Set5/HR --root /tmp/gpu_run
    python scripts/gpu_train_check.py ... --tiny      # CPU smoke test: a small network, 2 iterations
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from basicsr_taylor import data as data_prep, quickstart  # noqa: E402
from basicsr_taylor.utils.image_io import list_images  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--t91', required=True)
    parser.add_argument('--set5', required=True, help='Set5 HR folder')
    parser.add_argument('--root', required=True)
    parser.add_argument('--iters', type=int, default=200)
    parser.add_argument('--tiny', action='store_true')
    args = parser.parse_args(argv)
    args.t91, args.set5, args.root = (osp.abspath(p) for p in (args.t91, args.set5, args.root))  # trained elsewhere
    data = osp.join(args.root, 'datasets')
    hr = osp.join(data, 'T91_min96')  # T91 images with both sides >= 96 (gt_size): some are smaller

    def link(tmp):
        for path in list_images(args.t91, error=data_prep.DataPreparationError):
            if min(data_prep.image_size(path)) >= 96:
                os.symlink(osp.abspath(path), osp.join(tmp, osp.basename(path)))

    data_prep.build_dir_atomically(hr, link)
    outputs = data_prep.prepare(hr, osp.join(data, 'T91_min96_LR_bicubic', 'X{scale}'), data, scales=(2, ),
                                crop=96, step=48, align=12, workers=4)
    val_lr = osp.join(data, 'Set5_LR_bicubic', 'X2')
    data_prep.make_bicubic_lr(args.set5, val_lr, 2, 4)
    roots = dict(train_gt=outputs['hr'][1], train_lq=outputs[2][1], val_gt=args.set5, val_lq=val_lr)
    network = dict(type='TaylorSwinIR', upscale=2, in_chans=3, img_size=48, window_size=48, img_range=1.,
                   depths=[6] * 6, embed_dim=180, num_heads=[6] * 6, mlp_ratio=2, upsampler='pixelshuffle',
                   resi_connection='1conv')
    if args.tiny:
        network.update(depths=[2], embed_dim=12, num_heads=[2], window_size=8)
    opt = quickstart.quickstart_options(roots, args.iters, network, name='gpu_check_TaylorSwinIR_SRx2_T91')
    opt['datasets']['train'].update(gt_size=96, batch_size_per_gpu=4, num_worker_per_gpu=2)
    opt['train']['optim_g']['lr'] = 2e-4
    print(quickstart.write_options(opt, osp.join(args.root, 'train_T91_x2.yml')))


if __name__ == '__main__':
    main()
