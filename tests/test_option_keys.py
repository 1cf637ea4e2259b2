"""The whole option file is checked before anything is written (issue 19, items 1 and 2): an unknown key in any
section is a one-line error with a did-you-mean, a missing required key is a one-line error, and --force_yml is
parsed as YAML (never run) with unknown keys refused."""
import copy
import functools
import inspect
import json
import os
import re
import sys

import pytest

import basicsr_taylor  # noqa: F401  (registers TaylorSwinIR)
from basicsr_taylor.quickstart import options_for_test, quickstart_options
from basicsr_taylor.options import keys as option_keys
from basicsr_taylor.options.keys import OptionError, check_dataset_keys, check_keys
from basicsr_taylor.options.file import apply_force_yml
from basicsr_taylor.options.pipeline import run_basicsr_pipeline
from conftest import change_options

ROOTS = dict(train_gt='gt.lmdb', train_lq='lq.lmdb', val_gt='val/gt', val_lq='val/lq')
NET = dict(type='TaylorSwinIR', upscale=2, window_size=8, embed_dim=12, depths=[2], num_heads=[2], mlp_ratio=2,
           upsampler='pixelshuffle')


def train_options(**changes):
    opt = quickstart_options(ROOTS, total_iter=10, network=NET, name='keys')
    opt['is_train'] = True
    opt['model_type'] = 'SRModel'  # BasicSR's class: its keys come from the checked-in table
    opt['dist_params'] = dict(backend='nccl', port=29500)
    return change_options(opt, changes)


def test_the_recipes_and_the_quickstart_pass():
    check_keys(train_options())
    quickstart = dict(quickstart_options(ROOTS, total_iter=10, network=NET, name='keys'), is_train=True)
    assert quickstart['model_type'] == 'TaylorSRModel'
    check_keys(quickstart)
    test = options_for_test(train_options(), 'model.pth')
    test['is_train'] = False
    check_keys(test)


@pytest.mark.parametrize('key, value, message', [
    ('network_g:window_sise', 8, "network_g:window_sise: unknown key; did you mean 'window_size'?"),
    ('val:metrics:psnr:test_y_chanel', True, "val:metrics:psnr:test_y_chanel: unknown key; did you mean "
     "'test_y_channel'?"),
    ('datasetz', {}, "datasetz: unknown key; did you mean 'datasets'?"),
    ('datasets:train:gt_sise', 64, "datasets:train:gt_sise: unknown key; did you mean 'gt_size'?"),
    ('datasets:val:io_backend:tpye', 'disk', "datasets:val:io_backend:tpye: unknown key; did you mean 'type'?"),
    ('train:total_iters', 10, "train:total_iters: unknown key; did you mean 'total_iter'?"),
    ('train:optim_g:betas2', 0.9, "train:optim_g:betas2: unknown key; did you mean 'betas'?"),
    ('train:scheduler:period', [10], "train:scheduler:period: unknown key; did you mean 'periods'?"),
    ('train:pixel_opt:loss_wieght', 1.0, "train:pixel_opt:loss_wieght: unknown key; did you mean 'loss_weight'?"),
    ('train:pixl_opt', {}, "train:pixl_opt: unknown key; did you mean 'pixel_opt'?"),
    ('val:val_frq', 5, "val:val_frq: unknown key; did you mean 'val_freq'?"),
    ('path:pretrain_network', 'net.pth', "path:pretrain_network: unknown key; did you mean 'pretrain_network_g'?"),
    ('logger:print_frequency', 1, "logger:print_frequency: unknown key; did you mean 'print_freq'?"),
    ('logger:wandb:projet', 'x', "logger:wandb:projet: unknown key; did you mean 'project'?"),
    ('dist_params:prot', 1, "dist_params:prot: unknown key; did you mean 'port'?"),
])
def test_an_unknown_key_in_any_section_is_an_error(key, value, message):
    with pytest.raises(OptionError) as err:
        check_keys(train_options(**{key: value}))
    assert str(err.value) == message


@pytest.mark.parametrize('key, message', [
    ('train:total_iter', 'train:total_iter is missing'),
    ('datasets', 'datasets is missing'),
    ('datasets:train:gt_size', 'datasets:train:gt_size is missing'),
    ('datasets:train:batch_size_per_gpu', 'datasets:train:batch_size_per_gpu is missing'),
    ('datasets:val:dataroot_lq', 'datasets:val:dataroot_lq is missing'),
    ('datasets:val:name', 'datasets:val:name is missing'),
    ('train:optim_g', 'train:optim_g is missing'),
    ('train:scheduler:periods', 'train:scheduler:periods is missing'),
    ('val:metrics:psnr:crop_border', 'val:metrics:psnr:crop_border is missing'),
    ('val:val_freq', 'val:val_freq is missing'),
    ('logger:save_checkpoint_freq', 'logger:save_checkpoint_freq is missing'),
    ('logger', 'logger is missing'),
    ('path', 'path is missing'),
])
def test_a_missing_required_key_is_an_error(key, message):
    with pytest.raises(OptionError, match=f'^{message}$'):
        check_keys(train_options(**{key: None}))


def test_optional_keys_and_other_types_are_derived_from_the_code():
    # the GT patch is needed only to train; a test file needs val:save_img, not train or logger
    val = train_options(**{'datasets:val:gt_size': 64, 'datasets:val:filename_tmpl': '{}', 'train:precision': 'bf16'})
    check_keys(val)
    test = options_for_test(train_options(), 'model.pth')
    test['is_train'] = False
    check_keys(test)
    del test['val']['save_img']
    with pytest.raises(OptionError, match='^val:save_img is missing$'):
        check_keys(test)
    # only the optimizers BasicSR 1.4.2's get_optimizer builds
    with pytest.raises(OptionError, match=r"^train:optim_g:type: unknown type 'SGD'; registered: Adam$"):
        check_keys(train_options(**{'train:optim_g': {'type': 'SGD', 'lr': 0.1}}))
    # a GAN model reads network_d and its own train keys (read from SRGANModel's source)
    gan = train_options(model_type='SRGANModel', **{
        'network_d': dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=8, input_size=128),
        'train:optim_d': dict(type='Adam', lr=1e-4), 'train:net_d_iters': 1,
        'train:gan_opt': dict(type='GANLoss', gan_type='vanilla', loss_weight=0.1)})
    check_keys(gan)
    gan['network_d']['num_feats'] = 8
    with pytest.raises(OptionError, match="^network_d:num_feats: unknown key; did you mean 'num_feat'"):
        check_keys(gan)
    # Real-ESRNet's top-level degradation keys: accepted (and required) for the models that read them only
    real = train_options(model_type='RealESRNetModel', **{key: 0.5 for key in option_keys.KNOWN['degradation']})
    check_keys(real)
    del real['resize_prob']
    with pytest.raises(OptionError, match='^resize_prob is missing$'):
        check_keys(real)
    with pytest.raises(OptionError, match='^resize_prob: unknown key'):
        check_keys(train_options(resize_prob=0.5))


def test_accept_extends_the_tables():
    with pytest.raises(OptionError, match='train:new_key: unknown key'):
        check_keys(train_options(**{'train:new_key': 1}))
    saved = copy.deepcopy(option_keys.EXTRA)
    try:
        option_keys.accept('train', {'new_key'}, type_name='SRModel')
        check_keys(train_options(**{'train:new_key': 1}))
        with pytest.raises(OptionError, match='train:new_key: unknown key'):
            check_keys(train_options(model_type='SwinIRModel', **{'train:new_key': 1}))
    finally:
        option_keys.EXTRA.clear()
        option_keys.EXTRA.update(saved)


def test_force_yml_is_parsed_as_yaml_never_run(tmp_path):
    opt = train_options()
    forced = apply_force_yml(opt, ['train:total_iter=20', "name=[__import__('os').makedirs('code_ran')]",
                                   'train:optim_g:lr=1e-4', 'train:ema_decay=none',
                                   'val:metrics:psnr:crop_border=!!float 3',
                                   'network_g:depths=[3, 3]'])
    assert not os.path.exists('code_ran') and not (tmp_path / 'code_ran').exists()
    assert opt['train']['total_iter'] == 20 and opt['name'] == ["__import__('os').makedirs('code_ran')"]
    assert opt['train']['optim_g']['lr'] == 1e-4 and opt['train']['ema_decay'] is None
    assert opt['val']['metrics']['psnr']['crop_border'] == 3.0 and opt['network_g']['depths'] == [3, 3]
    assert forced['train:total_iter'] == 'train:total_iter=20'
    for entry, message in [('nosuch:key=1', 'nosuch is not a section'),
                           ('train:total_iter', 'expected KEY:SUBKEY=VALUE'),
                           ('train:total_iter=[1', 'did not find expected')]:
        with pytest.raises(OptionError, match=re.escape(f'--force_yml {entry}: ') + f'.*{message}'):
            apply_force_yml(train_options(), [entry])


@pytest.mark.parametrize('kind', ['train', 'test'])
def test_unknown_or_missing_keys_stop_the_command_before_anything_is_written(tmp_path, monkeypatch, capsys, kind):
    """What BasicSR ran silently (a misspelled key), or failed on with a KeyError after creating experiments/."""
    from basicsr_taylor.quickstart import write_options
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', [f'basicsr-taylor-{kind}'])
    opt = train_options() if kind == 'train' else options_for_test(train_options(), 'model.pth')
    opt.pop('is_train', None)
    good = write_options(opt, str(tmp_path / 'good.yml'))
    missing = copy.deepcopy(opt)
    del missing['datasets']['train' if kind == 'train' else 'test_1']['dataroot_lq']
    missing = write_options(missing, str(tmp_path / 'missing.yml'))
    phase = 'train' if kind == 'train' else 'test_1'
    for path, extra, message in [
            (good, ['--force_yml', 'network_g:window_sise=8'],
             "--force_yml network_g:window_sise=8: network_g:window_sise: unknown key; did you mean 'window_size'?"),
            (good, ['--force_yml', 'val:metrics:psnr:test_y_chanel=true'],
             "--force_yml val:metrics:psnr:test_y_chanel=true: val:metrics:psnr:test_y_chanel: unknown key; did you "
             "mean 'test_y_channel'?"),
            (missing, [], f'datasets:{phase}:dataroot_lq is missing')]:
        with pytest.raises(SystemExit) as exit_:
            run_basicsr_pipeline(kind, ['-opt', path, *extra])
        assert str(exit_.value) == f'basicsr-taylor-{kind}: error: {path}: {message}'
    assert sorted(os.listdir(tmp_path)) == ['good.yml', 'missing.yml']
    assert 'Disable distributed.' not in capsys.readouterr().out  # BasicSR printed it before failing


def test_a_cosine_schedule_must_cover_total_iter():
    """--force_yml train:total_iter=4000 alone ended in BasicSR's scheduler with a TypeError at iteration 2001."""
    from basicsr_taylor.options.checks import check_schedule
    opt = train_options()
    check_schedule(opt)
    apply_force_yml(opt, ['train:total_iter=20'])
    with pytest.raises(OptionError, match=r'^train:scheduler:periods \[10\] end at iteration 10, before '
                       r'train:total_iter=20: raise the periods too'):
        check_schedule(opt)
    apply_force_yml(opt, ['train:scheduler:periods=[10, 10]'])
    with pytest.raises(OptionError, match=r'^train:scheduler: 2 periods but 1 restart_weights$'):
        check_schedule(opt)
    apply_force_yml(opt, ['train:scheduler:restart_weights=[1, 0.5]'])
    check_schedule(opt)


def test_the_key_table_is_what_the_installed_basicsr_reads():
    """basicsr_keys.json (scripts/option_key_table.py) against a fresh scan of the installed BasicSR's source."""
    with open(option_keys.TABLE, encoding='utf-8') as f:
        checked_in = f.read()
    table = option_keys.build_key_table()
    assert table['basicsr_version'] == '1.4.2'
    assert 'basicsr.models.sr_model.SRModel' in table['models']
    assert 'basicsr.data.paired_image_dataset.PairedImageDataset' in table['datasets']
    assert checked_in == option_keys.dump_key_table(table), 'run scripts/option_key_table.py'


@pytest.mark.parametrize('kind, name, section, key, option', [
    ('datasets', 'basicsr.data.paired_image_dataset.PairedImageDataset', None, 'gt_size', 'datasets:train:gt_size'),
    ('models', 'basicsr.models.sr_model.SRModel', 'train', 'pixel_opt', 'train:pixel_opt'),
])
def test_a_key_removed_from_the_table_is_unknown(tmp_path, monkeypatch, kind, name, section, key, option):
    """The check reads the table: without the key there, the option file that uses it fails."""
    check_keys(train_options())
    with open(option_keys.TABLE, encoding='utf-8') as f:
        table = json.load(f)
    entry = table[kind][name]
    del (entry['reads'] if section is None else entry['sections'][section])[key]
    path = tmp_path / 'basicsr_keys.json'
    path.write_text(json.dumps(table), encoding='utf-8')
    monkeypatch.setattr(option_keys, 'key_table', functools.partial(option_keys.key_table, str(path)))
    with pytest.raises(OptionError) as err:
        check_keys(train_options())
    assert re.fullmatch(f'{option}: unknown key; [^\n]+', str(err.value)), str(err.value)


def test_basicsr_classes_are_checked_without_reading_their_source(monkeypatch):
    def no_source(obj):
        raise AssertionError(f'read the source of {obj!r}')

    monkeypatch.setattr(inspect, 'getsource', no_source)
    opt = train_options()
    assert opt['model_type'] == 'SRModel' and opt['datasets']['train']['type'] == 'PairedImageDataset'
    check_keys(opt)
    test = options_for_test(train_options(), 'model.pth')
    test['is_train'], test['model_type'] = False, 'SRModel'
    check_keys(test)
    with pytest.raises(OptionError, match="^datasets:train:gt_sise: unknown key; did you mean 'gt_size'"):
        check_keys(train_options(**{'datasets:train:gt_sise': 64}))


from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402


class KeyTableTestDataset(PairedImageDataset):
    """A user's dataset (not in the table): its own keys from its source, its base's from the table."""

    def __init__(self, opt):
        super().__init__(opt)
        self.extra = opt.get('keytable_extra', 1), opt['keytable_root']


def test_a_class_not_in_the_table_is_read_from_its_source(monkeypatch):
    from basicsr.utils.registry import DATASET_REGISTRY
    name = KeyTableTestDataset.__name__
    assert name not in DATASET_REGISTRY
    getsource = inspect.getsource

    def own_source_only(obj):  # BasicSR's classes come from the table
        assert obj in (KeyTableTestDataset, KeyTableTestDataset.__init__), f'read the source of {obj!r}'
        return getsource(obj)

    monkeypatch.setattr(inspect, 'getsource', own_source_only)
    DATASET_REGISTRY.register(KeyTableTestDataset)
    try:
        dataset = dict(train_options()['datasets']['val'], type=name, keytable_root='x', keytable_extra=2)
        check_dataset_keys('val', dataset, True)
        check_dataset_keys('val', dict(dataset, filename_tmpl='{}'), True)  # PairedImageDataset's, from the table
        with pytest.raises(OptionError, match="^datasets:val:keytable_extr: unknown key; did you mean "
                           "'keytable_extra'"):
            check_dataset_keys('val', dict(dataset, keytable_extr=2), True)
        del dataset['keytable_root']
        with pytest.raises(OptionError, match='^datasets:val:keytable_root is missing$'):
            check_dataset_keys('val', dataset, True)
    finally:
        DATASET_REGISTRY._obj_map.pop(name, None)  # BasicSR's Registry has no unregister
    assert name not in DATASET_REGISTRY


@pytest.mark.parametrize('basicsr_name', ['SRModel', 'SwinIRModel', 'RealESRNetModel'])
def test_the_plugins_model_classes_accept_and_require_what_basicsrs_do(basicsr_name):
    """``model_type: TaylorSRModel`` (what ``SRModel`` runs as) reads the keys BasicSR's class reads: the mixin's own
    reads (precision, paths) add no required key."""
    from basicsr_taylor.models import TAYLOR_MODELS
    changes = {'model_type': basicsr_name}
    if basicsr_name == 'RealESRNetModel':
        changes.update({key: 0.5 for key in option_keys.KNOWN['degradation']})
    basicsrs, ours = train_options(**changes), train_options(**dict(changes, model_type=TAYLOR_MODELS[basicsr_name]
                                                                    .__name__))
    check_keys(basicsrs)
    check_keys(ours)
    for opt in (basicsrs, ours):
        del opt['train']['total_iter']
    messages = []
    for opt in (basicsrs, ours):
        with pytest.raises(OptionError) as error:
            check_keys(opt)
        messages.append(str(error.value))
    assert messages == ['train:total_iter is missing'] * 2
    with pytest.raises(OptionError, match="train:precison: unknown key; did you mean 'precision'"):
        check_keys(train_options(**{'model_type': TAYLOR_MODELS['SRModel'].__name__, 'train:precison': 'bf16'}))
