"""The runner's data: training LMDBs (given, or prepared from HR folders by the data script) and test sets."""
import os
import os.path as osp

from .. import data as prepare_data
from .variants import AblationError


def training_dataroots(args):
    """{'gt': lmdb, 'lq': lmdb}: the given LMDBs, or where :func:`prepare_training_data` puts them."""
    if args.train_lmdb:
        return dict(gt=osp.abspath(args.train_lmdb[0]), lq=osp.abspath(args.train_lmdb[1]))
    data_dir = osp.join(args.root, 'data')
    hr_sub, lr_sub = prepare_data.sub_dir_names(osp.join(data_dir, f'train_min{args.sub_image}_HR'), args.scale)
    return dict(gt=osp.join(data_dir, hr_sub + '.lmdb'), lq=osp.join(data_dir, lr_sub + '.lmdb'))


def prepare_training_data(args):
    """{'gt': lmdb, 'lq': lmdb}: given LMDBs, or HR folders -> one folder of links -> the data script."""
    if args.train_lmdb:
        return training_dataroots(args)
    data_dir = osp.join(args.root, 'data')
    hr_dir = osp.join(data_dir, f'train_min{args.sub_image}_HR')

    def link(tmp):
        skipped = 0
        for folder in args.train_hr:
            prefix = osp.basename(osp.normpath(folder))
            for path in prepare_data.list_images(folder):
                height, width = prepare_data.image_size(path)
                if min(height, width) < args.sub_image:  # every variant gets the same sub-images
                    skipped += 1
                    continue
                stem, ext = osp.splitext(osp.basename(path))
                os.symlink(osp.abspath(path), osp.join(tmp, f'{prefix}_{stem}{ext}'))
        print(f'training HR: {len(os.listdir(tmp))} images ({skipped} with a side under {args.sub_image} px left out)')

    prepare_data.build_dir_atomically(hr_dir, link)
    outputs = prepare_data.prepare(hr_dir, osp.join(data_dir, f'train_min{args.sub_image}_LR_bicubic', 'X{scale}'),
                                   data_dir, scales=(args.scale, ), crop=args.sub_image, step=args.sub_image // 2,
                                   align=12, workers=args.data_workers)
    roots = dict(gt=osp.abspath(outputs['hr'][1]), lq=osp.abspath(outputs[args.scale][1]))
    assert roots == training_dataroots(args), (roots, training_dataroots(args))
    return roots


def parse_test_sets(specs, scale, root):
    """NAME=HR[,LR] -> {name: (hr, lr)}; a missing LR folder is made with MATLAB bicubic under ROOT/data."""
    sets = {}
    for spec in specs:
        if '=' not in spec:
            raise AblationError(f'--test expects NAME=HR_FOLDER[,LR_FOLDER], got {spec!r}')
        name, folders = spec.split('=', 1)
        hr, _, lr = folders.partition(',')
        if not lr:
            lr = osp.join(root, 'data', 'test', name, f'LRbicx{scale}')
            prepare_data.make_bicubic_lr(hr, lr, scale)
        sets[name] = (osp.abspath(hr), osp.abspath(lr))
    return sets
