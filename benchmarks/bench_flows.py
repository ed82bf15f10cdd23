"""The flow heads of FastFlow, CFlow, CS-Flow and DifferNet: xmodal vs anomalib 2.7, same inputs.

Run in the peer environment (anomalib 2.7 + FrEIA 0.2 next to the xmodal build, e.g.
``/work/peers-flows``)::

    python benchmarks/bench_flows.py [--quick] [--methods fastflow,cflow,csflow,differnet]

What is compared, per method, on identical random feature maps of the paper sizes (the frozen
backbones are left out: they are eval + no_grad on both sides and, for FastFlow and CFlow, the
same WideResNet-50-2):

- inference of one image: the flow + the anomaly map and image score each library computes;
- one training step on a batch of 8 images' features (2 with --quick; forward, backward, Adam step; CFlow: the
  fibre loop of anomalib's ``training_step`` over the 8 images, 256 fibres per step);
- extra parameters (MB of float32 trainable flow parameters), beside the study's Table 3.

Peers: anomalib 2.7's ``FastflowModel`` (norms + ``fast_flow_blocks``, its
``AnomalyMapGenerator``), ``CflowModel`` (``decoders`` driven by the fibre loops of its
``forward`` / ``training_step``, with its ``positional_encoding_2d`` and ``get_logp``),
``CsFlowModel`` (``graph``, its score and ``AnomalyMapGenerator``). anomalib has no DifferNet:
its peer is DifferNet's flow written with FrEIA 0.2 as DifferNet's code builds it (8 x
``GLOWCouplingBlock`` (clamp 3, Linear 2048 subnets) + ``PermuteRandom``), labelled
"FrEIA re-implementation". CS-Flow's sizes are the paper's (304 channels of EfficientNet-B5 at
24², 12², 6²) on both sides, although xmodal's offline backbone gives 192 channels.

Two environment workarounds, both outside the timed code: torchvision's compiled ops cannot
load against the CPU-only torch of this machine (its wheel links CUDA libraries), so its fake
kernels are not registered (the flows never call them); anomalib's CS-Flow constructor asks
torchvision for ImageNet EfficientNet-B5 weights (a download), so the weights are left random.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import fmt_seconds, interleaved_best, machine_line, markdown_table

TRAIN_BATCH = 8  # images per training step (--quick: 2)
TABLE3 = {"fastflow": (34, 41.3), "cflow": (56, 81.3), "csflow": (180, 148.2), "differnet": (395, 172.1)}


def import_anomalib():
    import torch.library

    register = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda f: f)
    try:
        import torchvision
    finally:
        torch.library.register_fake = register
    import anomalib.models.image.csflow.torch_model as csflow_module
    import torchvision.models

    csflow_module.efficientnet_b5 = lambda weights=None: torchvision.models.efficientnet_b5(weights=None)
    return csflow_module


def _xmodal(cls, features: dict, **config):
    det = cls(progress=False, **config)
    det.info = {"features": features}
    det.flow = det._build_flow().eval()
    return det


def _params_mb(module) -> float:
    return sum(p.numel() for p in module.parameters() if p.requires_grad) * 4 / 1e6


def _adam(params, lr=1e-3):
    return torch.optim.Adam(params, lr=lr)


# --- FastFlow ---------------------------------------------------------------------------------
def fastflow_case(rng):
    from anomalib.models.image.fastflow.loss import FastflowLoss
    from anomalib.models.image.fastflow.torch_model import FastflowModel

    from xmodal.methods import FastFlow

    channels, sizes = [256, 512, 1024], [56, 28, 14]
    det = _xmodal(FastFlow, {"channels": channels, "strides": [4, 8, 16]}, map_mode="probability")
    peer = FastflowModel(input_size=(224, 224), backbone="wide_resnet50_2", pre_trained=False, flow_steps=8,
                         conv3x3_only=False, hidden_ratio=1.0).eval()
    copy_fastflow_weights(det.flow, peer)

    def feats(b):
        return [torch.from_numpy(rng.standard_normal((b, c, s, s), dtype=np.float32)) for c, s in
                zip(channels, sizes, strict=True)]

    one, eight = feats(1), feats(TRAIN_BATCH)

    def peer_infer():
        with torch.no_grad():
            zs = [blocks(norm(f))[0] for f, norm, blocks in zip(one, peer.norms, peer.fast_flow_blocks, strict=True)]
            amap = peer.anomaly_map_generator(zs)
            return float(amap.amax()), amap[0, 0].numpy()

    def ours_infer():
        with torch.no_grad():
            r = det._result(one, 0)
        return r.score, r.map

    peer_opt, loss_fn = _adam(list(peer.norms.parameters()) + list(peer.fast_flow_blocks.parameters())), FastflowLoss()

    def peer_step():
        peer.train()
        peer_opt.zero_grad()
        zs, jacs = zip(*[blocks(norm(f)) for f, norm, blocks in zip(eight, peer.norms, peer.fast_flow_blocks,
                                                                    strict=True)], strict=True)
        loss = loss_fn(list(zs), list(jacs))
        loss.backward()
        peer_opt.step()
        peer.eval()

    ours_opt = _adam(det.flow.parameters())

    def ours_step():
        det.flow.train()
        det._train_batch(eight, ours_opt, None)
        det.flow.eval()

    agreement = _agreement(peer_infer(), ours_infer())
    extra = (_params_mb(det.flow), _params_mb(peer.norms) + _params_mb(peer.fast_flow_blocks))
    return ours_infer, peer_infer, ours_step, peer_step, extra, agreement


def copy_fastflow_weights(ours, peer) -> None:
    """xmodal's FastFlow parameters into anomalib's (the same architecture, FrEIA's names)."""
    with torch.no_grad():
        for level, (norm, flow) in enumerate(zip(ours.norms, ours.flows, strict=True)):
            peer.norms[level].load_state_dict(norm.state_dict())
            for i, block in enumerate(flow.blocks):
                target = peer.fast_flow_blocks[level].module_list[i]
                target.subnet.load_state_dict(block.subnet.state_dict())
                target.global_scale.copy_(block.global_scale)
                target.global_offset.copy_(block.global_offset)
                w = block.w_perm.double()
                target.w_perm.copy_(w[:, :, None, None].to(target.w_perm.dtype))
                target.w_perm_inv.copy_(w.T[:, :, None, None].to(target.w_perm_inv.dtype))


def _agreement(peer_out, ours_out) -> str:
    (ps, pm), (os_, om) = peer_out, ours_out
    scale = max(float(np.abs(pm).max()), 1e-12)
    return f"score {abs(ps - os_):.1e}, map max |diff| {float(np.abs(pm - om).max()) / scale:.1e} (relative)"


# --- CFlow ------------------------------------------------------------------------------------
def cflow_case(rng, quick):
    from anomalib.models.image.cflow.torch_model import CflowModel
    from anomalib.models.image.cflow.utils import get_logp, positional_encoding_2d

    from xmodal.methods import CFlow

    channels, sizes = [256, 512, 1024], [56, 28, 14]
    det = _xmodal(CFlow, {"channels": channels, "strides": [4, 8, 16]}, permutation="hard")
    det.max_logp = np.zeros(3)
    peer = CflowModel(backbone="wide_resnet50_2", layers=["layer1", "layer2", "layer3"], pre_trained=False,
                      fiber_batch_size=256, condition_vector=128, coupling_blocks=8, clamp_alpha=1.9,
                      permute_soft=False)
    batch = TRAIN_BATCH

    def feats(b):
        return [torch.from_numpy(rng.standard_normal((b, c, s, s), dtype=np.float32)) for c, s in
                zip(channels, sizes, strict=True)]

    one, train = feats(1), feats(batch)

    def fibres(f):
        b, c, h, w = f.shape
        pe = positional_encoding_2d(128, h, w)[None].repeat(b, 1, 1, 1)
        return f.permute(0, 2, 3, 1).reshape(-1, c), pe.permute(0, 2, 3, 1).reshape(-1, 128)

    def peer_infer():
        dist = []
        with torch.no_grad():
            for level, f in enumerate(one):
                e, c = fibres(f)
                out = []
                for first in range(0, e.shape[0], 256):
                    z, ld = peer.decoders[level](e[first : first + 256], [c[first : first + 256]])
                    out.append(get_logp(f.shape[1], z, ld) / f.shape[1])
                dist.append(torch.cat(out))
            amap = peer.anomaly_map_generator(distribution=dist, height=sizes, width=sizes, image_size=(224, 224))
        return float(amap.amax())

    def ours_infer():
        with torch.no_grad():
            return det._result(one, 0).score

    peer_opt = _adam(peer.decoders.parameters(), 2e-4)

    def peer_step():
        for level, f in enumerate(train):
            e, c = fibres(f)
            perm = torch.randperm(e.shape[0])
            for k in range(e.shape[0] // 256):
                idx = perm[k * 256 : (k + 1) * 256]
                z, ld = peer.decoders[level](e[idx], [c[idx]])
                loss = -torch.nn.functional.logsigmoid(get_logp(f.shape[1], z, ld) / f.shape[1])
                peer_opt.zero_grad()
                loss.mean().backward()
                peer_opt.step()

    ours_opt = _adam(det.flow.parameters(), 2e-4)
    generator = torch.Generator().manual_seed(0)

    def ours_step():
        det._train_batch(train, ours_opt, generator)

    return ours_infer, peer_infer, ours_step, peer_step, (_params_mb(det.flow), _params_mb(peer.decoders)), "-"


# --- CS-Flow ----------------------------------------------------------------------------------
def csflow_case(rng, size: int):
    csflow_module = import_anomalib()
    from anomalib.models.image.csflow.loss import CsFlowLoss

    from xmodal.methods import CSFlow

    det = _xmodal(CSFlow, {"channels": [304], "strides": [32]})
    peer = csflow_module.CsFlowModel(input_size=(size, size), cross_conv_hidden_channels=1024, n_coupling_blocks=4,
                                     clamp=3, num_channels=3).eval()

    def feats(b):
        side = size // 32  # EfficientNet-B5's stride-32 block at the three input sizes
        return [torch.from_numpy(rng.standard_normal((b, 304, s, s), dtype=np.float32)) for s in
                (side, side // 2, side // 4)]

    one, eight = feats(1), feats(TRAIN_BATCH)

    def peer_infer():
        with torch.no_grad():
            z, _ = peer.graph(one)
            return float(peer._compute_anomaly_scores(z)[0]), peer.anomaly_map_generator(z)

    def ours_infer():
        with torch.no_grad():
            return det._result(one, 0).score

    peer_opt, loss_fn = _adam(peer.graph.parameters(), 2e-4), CsFlowLoss()

    def peer_step():
        peer.graph.train()
        peer_opt.zero_grad()
        z, jac = peer.graph(eight)
        loss_fn(z, jac).backward()
        peer_opt.step()
        peer.graph.eval()

    ours_opt = _adam(det.flow.parameters(), 2e-4)

    def ours_step():
        det._train_batch(eight, ours_opt, None)

    return ours_infer, peer_infer, ours_step, peer_step, (_params_mb(det.flow), _params_mb(peer.graph)), "-"


# --- DifferNet --------------------------------------------------------------------------------
def differnet_case(rng, quick):
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm
    from torch import nn

    from xmodal.methods import DifferNet

    det = _xmodal(DifferNet, {"channels": [256], "strides": [32]})
    dims = det.dims

    def subnet(cin, cout):
        return nn.Sequential(nn.Linear(cin, 2048), nn.ReLU(), nn.Linear(2048, cout))

    peer = Ff.SequenceINN(dims)
    for k in range(8):
        peer.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=3.0)
        peer.append(Fm.PermuteRandom, seed=k)
    transforms = 8 if quick else 64
    one = torch.from_numpy(rng.standard_normal((1, transforms, dims), dtype=np.float32))
    batch = torch.from_numpy(rng.standard_normal((3 * TRAIN_BATCH, dims), dtype=np.float32))

    def peer_infer():
        with torch.no_grad():
            z, _ = peer(one[0])
            return float(z.pow(2).mean())

    def ours_infer():
        with torch.no_grad():
            return det._result([one], 0).score

    peer_opt = torch.optim.Adam(peer.parameters(), lr=2e-4, betas=(0.8, 0.8), eps=1e-4, weight_decay=1e-5)

    def peer_step():
        peer_opt.zero_grad()
        z, jac = peer(batch)
        (torch.mean(0.5 * torch.sum(z**2, dim=1) - jac) / z.shape[1]).backward()
        peer_opt.step()

    ours_opt = torch.optim.Adam(det.flow.parameters(), lr=2e-4, betas=(0.8, 0.8), eps=1e-4, weight_decay=1e-5)

    def ours_step():
        det._train_batch([batch], ours_opt, None)

    return ours_infer, peer_infer, ours_step, peer_step, (_params_mb(det.flow), _params_mb(peer)), "-"


PEER_NAMES = {"fastflow": "anomalib 2.7 FastflowModel", "cflow": "anomalib 2.7 CflowModel",
              "csflow": "anomalib 2.7 CsFlowModel", "differnet": "DifferNet on FrEIA 0.2 (re-implementation)"}


def run(methods, quick: bool, csflow_size: int = 768) -> list[list[str]]:
    global TRAIN_BATCH
    TRAIN_BATCH = 2 if quick else 8
    import_anomalib()
    rows = []
    for name in methods:
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        cases = {"fastflow": lambda: fastflow_case(rng), "cflow": lambda: cflow_case(rng, quick),
                 "csflow": lambda: csflow_case(rng, csflow_size), "differnet": lambda: differnet_case(rng, quick)}
        case = cases[name]()
        ours_infer, peer_infer, ours_step, peer_step, (ours_mb, peer_mb), agreement = case
        rounds = 2 if quick else 5
        infer = interleaved_best({"xmodal": ours_infer, "peer": peer_infer}, rounds, warmup=not quick)
        step = interleaved_best({"xmodal": ours_step, "peer": peer_step}, 1 if quick else 3, warmup=not quick)
        ti, pi = infer["xmodal"][1], infer["peer"][1]
        ts, ps = step["xmodal"][1], step["peer"][1]
        ms, mb = TABLE3[name]
        rows.append([name, PEER_NAMES[name], fmt_seconds(ti), fmt_seconds(pi), f"{pi / ti:.2f}x", fmt_seconds(ts),
                     fmt_seconds(ps), f"{ps / ts:.2f}x", f"{ours_mb:.1f} / {peer_mb:.1f}", f"{ms} ms, {mb} MB",
                     agreement])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--methods", default="fastflow,cflow,csflow,differnet")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--csflow-size", type=int, default=768, help="CS-Flow's largest input side (paper 768)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run([m.strip() for m in args.methods.split(",") if m.strip()], args.quick, args.csflow_size)
    print()
    print(markdown_table(["method", "peer", "infer xmodal", "infer peer", "infer ratio", "train step xmodal",
                          "train step peer", "step ratio", "extra MB (xmodal / peer)", "study Table 3",
                          "agreement"], rows))
    print(machine_line())
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
