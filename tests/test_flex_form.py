"""The flex form's region layout: tokens sorted by region (whole chunks for a RegionChunks), a BlockMask built from
block-level indices that equals torch's create_block_mask over the sorted tokens, made once per RegionChunks and
without a host sync; and the form against the float64 direct form on the CPU (eager FlexAttention, forward)."""
import pytest
import torch

from basicsr_taylor import taylor_shift_attention
from basicsr_taylor.archs.shifted_windows import shifted_window_chunks
from basicsr_taylor.ops.taylor_shift import flex

pytestmark = pytest.mark.skipif(not flex.available(), reason='torch without FlexAttention')


def reference_block_mask(sorted_ids):
    """torch's own BlockMask of "same id" over the same sorted tokens (dense evaluation)."""
    n = sorted_ids.shape[-1]
    return flex.create_block_mask(flex._same_id_mask_mod(sorted_ids), sorted_ids.shape[0], sorted_ids.shape[1], n, n,
                                  device='cpu')


def same_blocks(mask, expected):
    assert mask.shape == expected.shape
    assert torch.equal(mask.to_dense(), expected.to_dense())  # the blocks visited (partial or full)
    assert torch.equal(mask.full_kv_num_blocks, expected.full_kv_num_blocks)  # the blocks without mask_mod
    for got, want, count in ((mask.kv_indices, expected.kv_indices, expected.kv_num_blocks),
                             (mask.full_kv_indices, expected.full_kv_indices, expected.full_kv_num_blocks)):
        valid = torch.arange(got.shape[-1]) < count[..., None]
        assert torch.equal(got[valid], want[valid])


@pytest.mark.parametrize('window,shift', [(48, 24), (24, 12), (8, 4), (7, 3)])
def test_block_mask_of_region_chunks_is_torchs_over_the_sorted_tokens(window, shift):
    chunks = shifted_window_chunks(2 * window, 2 * window, window, shift, 'cpu')
    n, batch = window * window, (8, 2)  # 2 images of 4 windows, 2 heads
    layout = flex.flex_layout(chunks, batch, n)
    ids = chunks.token_regions(8)[:, None]  # (8, 1, N) in the tokens' (chunk-major) order
    sorted_ids = ids.gather(-1, layout.perm)
    assert (sorted_ids[..., 1:] >= sorted_ids[..., :-1]).all()  # each region one contiguous run
    assert torch.equal(layout.perm.sort(-1).values, torch.arange(n).expand(8, 1, n))  # a permutation
    chunk = chunks.chunk  # whole chunks moved: slot s holds a token of the same offset in its chunk
    assert torch.equal(layout.perm % chunk, torch.arange(n).expand(8, 1, n) % chunk)
    same_blocks(layout.block_mask, reference_block_mask(sorted_ids))
    if window == 48:  # 4 regions of 576 tokens (4.5 blocks each): 98 of the 18 x 18 block pairs in the last window
        visited = layout.block_mask.kv_num_blocks[3].sum() + layout.block_mask.full_kv_num_blocks[3].sum()
        assert int(visited) == 98 and int(layout.block_mask.full_kv_num_blocks[3].sum()) == 64
    assert flex.flex_layout(chunks, batch, n) is layout  # made once per RegionChunks object and batch shape


def test_block_mask_of_integer_ids_per_row_and_per_head():
    gen = torch.Generator().manual_seed(0)
    for ids in (torch.randint(0, 3, (2, 1, 300), generator=gen), torch.randint(0, 5, (2, 3, 300), generator=gen),
                torch.randint(0, 2, (300, ), generator=gen)):
        layout = flex.flex_layout(ids, (2, 3), 300)
        sorted_ids = flex._per_row(ids, (2, 3), 300).gather(-1, layout.perm)
        same_blocks(layout.block_mask, reference_block_mask(sorted_ids))


def test_layout_of_region_chunks_needs_no_host_sync():
    """Built from ids on the meta device, which cannot be read: any .item() / .tolist() / int() would raise."""
    chunks = shifted_window_chunks(96, 96, 48, 24, 'meta')
    layout = flex.flex_layout(chunks, (8, 6), 2304)
    assert layout.perm.device.type == 'meta' and layout.block_mask.kv_indices.shape == (8, 1, 18, 18)


FORWARD_CASES = [  # (height, width, window, shift, heads, head dim, value dim)
    (48, 24, 24, 12, 2, 6, 5),  # chunks of 144 tokens: block-mask tiles straddle regions
    (16, 16, 8, 4, 3, 8, 8),
    (14, 14, 7, 3, 1, 4, 4),  # odd window: chunks of one token
]


@pytest.mark.parametrize('height,width,window,shift,heads,d,dv', FORWARD_CASES)
def test_flex_form_matches_direct_with_region_chunks_and_ids(height, width, window, shift, heads, d, dv):
    """Eager FlexAttention on the CPU (forward only: torch has no CPU backward for it), float64."""
    gen = torch.Generator().manual_seed(window)
    chunks = shifted_window_chunks(height, width, window, shift, 'cpu')
    batch, n = chunks.num_windows, window * window
    q, k = (torch.randn(batch, heads, n, d, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(batch, heads, n, dv, generator=gen, dtype=torch.float64)
    tau = torch.rand(heads, 1, 1, generator=gen, dtype=torch.float64) + 0.5
    ids = chunks.token_regions(batch)[:, None]
    with torch.no_grad():
        expected = taylor_shift_attention(q, k, v, tau, ids, form='direct')
        for regions in (chunks, ids):
            out = taylor_shift_attention(q, k, v, tau, regions, form='flex')
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_flex_form_with_region_chunks_keeps_the_cpu_backward_error():
    chunks = shifted_window_chunks(16, 16, 8, 4, 'cpu')
    q = torch.randn(4, 2, 64, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match='no backward pass on cpu'):
        taylor_shift_attention(q, q, q, regions=chunks, form='flex')


def test_flex_attention_is_compiled_with_dynamic_shapes(monkeypatch):
    """torch.compile(flex_attention, dynamic=True), once: a new window count or token count reuses the compiled
    function (symbolic sizes) instead of recompiling per size and falling back to the unfused path."""
    calls = []
    monkeypatch.setattr(torch, 'compile', lambda fn, **options: calls.append((fn, options)) or fn)
    flex.compiled_flex_attention.cache_clear()
    try:
        assert flex.compiled_flex_attention() is flex.compiled_flex_attention() is flex.flex_attention
    finally:
        flex.compiled_flex_attention.cache_clear()
    assert calls == [(flex.flex_attention, dict(dynamic=True))]
