"""The grid's time, printed before it starts: seconds per step from the records of the same network and layout
(any seed), else from a short probe (a few L1 + Adam steps on random data in this process), plus the time a run
spends outside its timed steps (data loading, start-up, testing) from the records, else a constant."""
import copy
import os
import os.path as osp
import time

from .runner import load_json

RUN_OVERHEAD_SECONDS = 60.  # start-up, data loading and the test pass of a light net on Set5 + 20 images, 1 thread
PROBE_STEPS = 2  # timed steps after one warm-up step


def layout_key(arch, network, lr_patch, batch):
    """What the speed of a step depends on (not the seed)."""
    return repr((arch, sorted(network.items()), lr_patch, batch))


def recorded_speeds(records_dir):
    """{layout_key: [(sec_per_iter, overhead_seconds or None), ...]} from every record under records_dir."""
    speeds = {}
    if not osp.isdir(records_dir):
        return speeds
    for f in sorted(os.listdir(records_dir)):
        if not f.endswith('.json'):
            continue
        r = load_json(osp.join(records_dir, f))
        overhead = r['wall_seconds'] - r['sec_per_iter'] * r['iters'] if 'wall_seconds' in r else None
        speeds.setdefault(layout_key(r['arch'], r['network'], r['lr_patch'], r['batch']), []).append(
            (r['sec_per_iter'], overhead))
    return speeds


def probe_seconds_per_step(network_opt, lr_patch, batch, scale, threads=None):
    """Mean time of PROBE_STEPS training steps (forward, L1, backward, Adam) of a fresh network on random data."""
    import torch
    from basicsr.archs import build_network
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = build_network(copy.deepcopy(network_opt))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
        lq = torch.rand(batch, 3, lr_patch, lr_patch)
        gt = torch.rand(batch, 3, lr_patch * scale, lr_patch * scale)
        times = []
        for _ in range(PROBE_STEPS + 1):
            start = time.perf_counter()
            optimizer.zero_grad()
            torch.nn.functional.l1_loss(net(lq), gt).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        return sum(times[1:]) / PROBE_STEPS
    finally:
        torch.set_num_threads(previous)


def estimate_grid(pending, args, records_dir):
    """Print and return the estimated wall time (s) of the pending runs: [(label, opt), ...] (BasicSR options)."""
    speeds, probed, total = recorded_speeds(records_dir), {}, 0.
    lines = []
    for label, opt in pending:
        train = opt['datasets']['train']
        lr_patch, batch = train['gt_size'] // args.scale, train['batch_size_per_gpu']
        key = layout_key(opt['network_g']['type'], opt['network_g'], lr_patch, batch)
        known = speeds.get(key)
        if known:
            sec, source = sum(s for s, _ in known) / len(known), f'{len(known)} record(s)'
            overheads = [o for _, o in known if o is not None]
        else:
            if key not in probed:
                probed[key] = probe_seconds_per_step(opt['network_g'], lr_patch, batch, args.scale, args.threads)
            sec, source, overheads = probed[key], 'probe', []
        overhead = sum(overheads) / len(overheads) if overheads else RUN_OVERHEAD_SECONDS
        seconds = sec * args.iters + overhead
        total += seconds
        lines.append(f'  {label}: {sec:.3f} s/iter ({source}) x {args.iters} + {overhead:.0f} s = '
                     f'{seconds / 60:.1f} min')
    wall = total / max(1, min(args.jobs, len(pending)))
    print(f'estimate: {len(pending)} run(s) to train, {total / 3600:.2f} h of run time, about {wall / 3600:.2f} h '
          f'wall with --jobs {args.jobs}' + (' (jobs share the cores: slower steps than measured alone)'
                                            if args.jobs > 1 else ''), flush=True)
    for line in lines:
        print(line, flush=True)
    return wall
