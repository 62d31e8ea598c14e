import copy

import torch

from wardmodels import codec as C
from wardmodels.fused import fuse_decoders


def test_fused_decoder_is_the_same_function():
    torch.manual_seed(0)
    m = C.DualCodec(C.variant("ward"))
    m.train()
    x = {k: torch.randn(32, 256) for k in C.MODALITIES}
    with torch.no_grad():
        for _ in range(3):  # non-trivial BatchNorm statistics
            m(x, {k: torch.ones(32, dtype=torch.bool) for k in x}, 2)
    m.eval()
    f = copy.deepcopy(m)
    fuse_decoders(f)
    idx = {k: torch.randint(0, 256, (16, 2, 32)) for k in C.MODALITIES}
    a, b = m.decode(idx), f.decode(idx)
    for k in a:
        scale = a[k].abs().max()
        assert scale > 0
        assert (a[k] - b[k]).abs().max() <= 1e-5 * scale
