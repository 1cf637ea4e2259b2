"""The runner's data: training LMDBs (given, or prepared from HR folders by the data script) and test sets."""
import os
import os.path as osp

from .. import data as prepare_data
from ..utils.files import write_atomically
from ..utils.image_io import list_images
from .variants import AblationError, folder_name


def parse_hold_out(spec, train_hr):
    """'FOLDER=N' -> (folder basename, N): the first N images (by file name) of that --train-hr folder."""
    if spec is None:
        return None
    name, _, count = spec.partition('=')
    if not count.isdigit() or int(count) < 1:
        raise AblationError(f'--hold-out expects FOLDER=N (N >= 1), got {spec!r}')
    folders = [folder_name(f) for f in train_hr or []]
    if name not in folders:
        raise AblationError(f'--hold-out {spec}: {name!r} is not a --train-hr folder; those are {folders}')
    return name, int(count)


def held_out_images(args):
    """The HR paths --hold-out takes from training (empty without it)."""
    if not args.hold_out:
        return []
    name, count = args.hold_out
    folder = next(f for f in args.train_hr if folder_name(f) == name)
    images = list_images(folder, error=prepare_data.DataPreparationError)
    if len(images) <= count:
        raise AblationError(f'--hold-out {name}={count}: {folder} has only {len(images)} images')
    return images[:count]


def held_out_test_set(args):
    """{name: (hr, lr)} of the held-out images as a test set (HR links and MATLAB-bicubic LR under ROOT/data/test),
    or {} without --hold-out."""
    images = held_out_images(args)
    if not images:
        return {}
    name = '{}-held{}'.format(*args.hold_out)
    hr = osp.join(args.root, 'data', 'test', name, 'HR')
    prepare_data.build_dir_atomically(
        hr, lambda tmp: [os.symlink(osp.abspath(p), osp.join(tmp, osp.basename(p))) for p in images])
    lr = osp.join(args.root, 'data', 'test', name, f'LRbicx{args.scale}')
    prepare_data.make_bicubic_lr(hr, lr, args.scale)
    return {name: (hr, lr)}


def _train_hr_dir(args):
    held = '_minus_{}-held{}'.format(*args.hold_out) if args.hold_out else ''
    return osp.join(args.root, 'data', f'train_min{args.sub_image}{held}_HR')


def training_dataroots(args):
    """{'gt': lmdb, 'lq': lmdb}: the given LMDBs, or where :func:`prepare_training_data` puts them."""
    if args.train_lmdb:
        return dict(gt=osp.abspath(args.train_lmdb[0]), lq=osp.abspath(args.train_lmdb[1]))
    data_dir = osp.join(args.root, 'data')
    hr_sub, lr_sub = prepare_data.sub_dir_names(_train_hr_dir(args), args.scale)
    return dict(gt=osp.join(data_dir, hr_sub + '.lmdb'), lq=osp.join(data_dir, lr_sub + '.lmdb'))


def check_sources(hr_dir, train_hr):
    """The training data under a root is made once: stop if it was made from other --train-hr folders (their names
    are kept in HR_DIR.sources) instead of training on it silently."""
    sources = [folder_name(f) for f in train_hr]
    path = hr_dir + '.sources'
    if osp.isfile(path):
        with open(path) as f:
            made_from = f.read().split()
        if made_from != sources:
            raise AblationError(f'{hr_dir} was prepared from --train-hr {" ".join(made_from)}, not '
                                f'{" ".join(sources)}: use another --root for other training data')
    else:
        write_atomically(path, ' '.join(sources) + '\n')


def prepare_training_data(args):
    """{'gt': lmdb, 'lq': lmdb}: given LMDBs, or HR folders -> one folder of links -> the data script."""
    if args.train_lmdb:
        return training_dataroots(args)
    data_dir = osp.join(args.root, 'data')
    hr_dir = _train_hr_dir(args)
    os.makedirs(data_dir, exist_ok=True)
    check_sources(hr_dir, args.train_hr)
    held_out = set(held_out_images(args))

    def link(tmp):
        skipped = 0
        for folder in args.train_hr:
            prefix = folder_name(folder)
            for path in list_images(folder, error=prepare_data.DataPreparationError):
                if path in held_out:  # the --hold-out test images
                    continue
                height, width = prepare_data.image_size(path)
                if min(height, width) < args.sub_image:  # every variant gets the same sub-images
                    skipped += 1
                    continue
                stem, ext = osp.splitext(osp.basename(path))
                os.symlink(osp.abspath(path), osp.join(tmp, f'{prefix}_{stem}{ext}'))
        print(f'training HR: {len(os.listdir(tmp))} images ({skipped} with a side under {args.sub_image} px left out'
              f'{f", {len(held_out)} held out for testing" if held_out else ""})')

    prepare_data.build_dir_atomically(hr_dir, link)
    lr_dir = osp.basename(hr_dir)[:-len('_HR')] + '_LR_bicubic'
    outputs = prepare_data.prepare(hr_dir, osp.join(data_dir, lr_dir, 'X{scale}'),
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
