"""SegNode in PyTorch + torchdiffeq (``segnode_torch``), the peer of ``benchmarks.vs_torch``, and the
script that writes the tests' fixture from it (``python -m benchmarks.torch_peer.make_fixture``)."""
