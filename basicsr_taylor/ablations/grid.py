"""The grid of a command: experiments x variants x seeds, its time estimate, up to --jobs runs at once, then the
reports. Runs are ordered seed by seed (every variant with seed 0, then with seed 1, ...), so that a grid stopped
early still has paired comparisons; identical runs (the same options in two experiments) are trained once."""
import os
import os.path as osp
import sys
from concurrent.futures import ThreadPoolExecutor

from ..data import DataPreparationError
from .estimate import estimate_grid
from .inputs import held_out_test_set, parse_hold_out, parse_test_sets, prepare_training_data, training_dataroots
from .report import write_reports
from .runner import existing_record, find_record, load_json, run_names, run_variant
from .variants import AblationError, load_yaml, variant_options

PROG = 'basicsr-taylor-ablation'


def error(message, code=2):
    """One line on stderr; exit code 2 (as argparse's for bad arguments) or ``code``."""
    print(f'{PROG}: error: {message}', file=sys.stderr, flush=True)
    return code


def select(experiments, args):
    """[(experiment, variant name, variant)] of the command, or an AblationError naming what exists."""
    names = list(experiments) if args.experiments == ['all'] else args.experiments
    unknown = [n for n in names if n not in experiments]
    if unknown:
        raise AblationError(f'unknown experiment(s) {", ".join(unknown)}; known: {", ".join(experiments)}')
    known = [v for n in names for v in experiments[n]['variants']]
    unknown = [v for v in args.variants or [] if v not in known]
    if unknown:
        raise AblationError(f'unknown variant(s) {", ".join(unknown)} in {", ".join(names)}; known: '
                            f'{", ".join(dict.fromkeys(known))}')
    return [(n, v, spec) for n in names for v, spec in experiments[n]['variants'].items()
            if not args.variants or v in args.variants]


def recorded_runs(records_dir):
    """'variant seed S' of every record under records_dir (for the error of a --report-only without records)."""
    if not osp.isdir(records_dir):
        return []
    runs = [load_json(osp.join(records_dir, f)) for f in sorted(os.listdir(records_dir)) if f.endswith('.json')]
    return [f'{r["variant"]} seed {r["seed"]}' for r in runs]


def run_grid(args):
    experiments = load_yaml(osp.join(args.templates, 'experiments.yml'))
    base = load_yaml(osp.join(args.templates, 'base.yml'))
    if len(args.depths) != len(args.heads):
        return error('--depths and --heads need the same length')
    try:
        selected = select(experiments, args)
        args.hold_out = parse_hold_out(args.hold_out, args.train_hr)
        os.makedirs(args.root, exist_ok=True)
        args.test = parse_test_sets(args.test, args.scale, args.root)
        args.test.update(held_out_test_set(args))
        dataroots = training_dataroots(args) if args.report_only else prepare_training_data(args)
        records_dir = osp.join(args.root, 'ablation', 'records')
        if not args.report_only:
            failures = train_grid(selected, base, args, dataroots, records_dir)
            if failures:
                return error(f'{len(failures)} run(s) failed: {"; ".join(failures)} (finished runs are kept; run '
                             'the command again to resume)', code=1)
            if args.dry_run:
                return 0
        found = 0
        for experiment in dict.fromkeys(n for n, _, _ in selected):
            records = [r for seed in args.seeds for n, v, spec in selected if n == experiment
                       for r in [existing_record(v, spec, base, args, dataroots, seed)] if r]
            found += len(records)
            if records:
                out_dir = osp.join(args.root, 'ablation', experiment)
                paths = write_reports(records, out_dir, experiment, experiments[experiment], args)
                print(f'[{experiment}] wrote {", ".join(paths)}', flush=True)
        if not found:
            existing = recorded_runs(records_dir)
            return error(f'no record of the selected runs (seeds {",".join(map(str, args.seeds))}) under '
                         f'{records_dir}; records there: {", ".join(existing) if existing else "none"}')
    except (AblationError, DataPreparationError) as err:
        return error(err)
    return 0


def train_grid(selected, base, args, dataroots, records_dir):
    """Train and test every run without a record, --jobs at a time; returns the failures (one line each)."""
    runs, seen = [], set()
    for seed in args.seeds:
        for experiment, variant_name, spec in selected:
            opt = variant_options(base, spec, args, dataroots, seed)
            names = run_names(opt, variant_name, args)
            key = names[0].rsplit('_', 1)[1]  # the options' hash: identical runs are trained once
            if key in seen:
                continue
            seen.add(key)
            done = find_record(osp.dirname(records_dir), names, rename=not args.dry_run) is not None
            runs.append((experiment, variant_name, spec, seed, opt, done))
    pending = [(f'{v} seed {s}', opt) for _, v, _, s, opt, done in runs if not done]
    print(f'{len(runs)} run(s) in the grid, {len(runs) - len(pending)} with a record', flush=True)
    if pending and not args.dry_run and not args.no_estimate:
        estimate_grid(pending, args, records_dir)

    def one(run):
        experiment, variant_name, spec, seed, _, _ = run
        try:
            run_variant(experiment, variant_name, spec, base, args, dataroots, seed)
        except SystemExit as err:  # a failed child: report it, let the other runs finish
            return f'{variant_name} seed {seed}: {err}'
        return None

    if args.jobs == 1:
        results = [one(run) for run in runs]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, runs))
    return [r for r in results if r]
