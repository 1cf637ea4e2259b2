"""Mean ± standard deviation over seeds, and paired differences to a baseline with a 95% Student-t interval."""
import math

# two-sided 95% quantiles t_{0.975, df} for df = 1..30 (used when scipy is not installed)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
AS_GOOD_MARGIN = 0.05  # dB: the rule, "as good" when the lower 95% bound of the difference is above -0.05


def t_quantile_975(df):
    """t_{0.975, df}: scipy's when installed, else the table (df > 30: the normal quantile's 1.960 from df 120,
    interpolated in 1/df between 30 and 120)."""
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, df))
    except ImportError:
        pass
    if df < 1:
        raise ValueError(f'degrees of freedom must be >= 1, got {df}')
    if df <= 30:
        return T975[df - 1]
    w = min(1.0, (1 / 30 - 1 / df) / (1 / 30 - 1 / 120))
    return T975[-1] + w * (1.980 - T975[-1]) if df <= 120 else 1.960


def mean_std(values):
    """(mean, sample standard deviation (n - 1); 0 for one value) of a non-empty sequence."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def paired_difference(values, baseline):
    """{seed: value} against {seed: baseline value} over their common seeds: dict(n, mean, std, low, high);
    low/high: the 95% t-interval of the mean difference (None for n < 2); None when no seed is common."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return None
    diffs = [values[s] - baseline[s] for s in seeds]
    mean, std = mean_std(diffs)
    n = len(diffs)
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else None
    return dict(n=n, seeds=seeds, mean=mean, std=std, low=None if half is None else mean - half,
                high=None if half is None else mean + half)


def verdict(diff, margin=AS_GOOD_MARGIN):
    """The issue's decision rule on a paired difference (dB): 'better'/'worse' when the interval excludes 0,
    else 'as good' when its lower bound is above -margin, else 'undecided'; 'n < 2' without an interval."""
    if diff is None or diff['low'] is None:
        return 'n < 2'
    if diff['low'] > 0:
        return 'better'
    if diff['high'] < 0:
        return 'worse' if diff['low'] <= -margin else 'as good (lower)'
    return 'as good' if diff['low'] > -margin else 'undecided'
