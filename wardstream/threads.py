"""Compute threads of one process: the pipeline's processes each compute on one thread and scale
out as processes, because they share the machine with each other and with the broker and InfluxDB.

Not only torch: numpy's and scipy's OpenBLAS start a thread per core for every matrix product.
On a busy machine its threads wait for each other's time slices: the simulator's edge analysis
(float64 nearest-codeword searches) took 10.4–10.9 ms per device window with two BLAS threads
while another process kept the second core busy, and 3.4–4.0 ms with one (2026-12-03, 2 cores).
"""

from __future__ import annotations

from contextlib import contextmanager


def limit_threads(n: int = 1) -> None:
    """torch's intra-op threads and every BLAS pool of this process to ``n``, from now on."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")


@contextmanager
def one_thread():
    """torch and BLAS on one thread inside the block, the counts before restored after it. For
    computations whose results must not depend on the machine's core count: convolutions split
    their work by thread and round differently with each split — the codec's float32 decoder by
    one float16 unit in 7,000 of 13 M calib samples, the rhythm classifier's bfloat16 outputs
    enough to move 779 calib KL values by up to 0.022 (1 against 2 threads, 2026-12-06)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
