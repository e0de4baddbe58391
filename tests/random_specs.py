"""Random architectures for property tests: small specs that always infer without error.

Shared by test_arch, test_receptive and test_nn.
"""

from __future__ import annotations

import random

from cnnkit import arch as spec
from cnnkit.arch import SpecError


def random_spec(seed: int, max_size: int = 11) -> spec.Architecture:
    """A small random 2-D spec that infers without error: conv/pool/relu stacks with strides,
    dilation, every padding form, groups and ceil-mode pools."""
    rnd = random.Random(seed)
    while True:
        channels = rnd.choice([1, 2])
        h, w = rnd.randint(4, max_size), rnd.randint(4, max_size)
        lines = [f"input {channels} {h} {w}"]
        c = channels
        for _ in range(rnd.randint(1, 3)):
            choice = rnd.random()
            if choice < 0.55:
                k = f"{rnd.randint(1, 3)}x{rnd.randint(1, 3)}" if rnd.random() < 0.3 else None
                k = k or str(rnd.randint(1, 3))
                s = rnd.choice(["1", "1", "2", "3", "1x2"])
                d = rnd.choice(["1", "1", "2", "2x1"])
                p = rnd.choice(["0", "1", "2", "1x0", "same", "valid", "full"])
                out = rnd.choice([1, 2, 3])
                g = c if c > 1 and out % c == 0 and rnd.random() < 0.5 else 1
                lines.append(f"conv {out} k={k} s={s} d={d} p={p} groups={g}")
                c = out
            elif choice < 0.9:
                k = rnd.randint(1, 3)
                s = rnd.randint(1, 3)
                p = rnd.randint(0, k // 2)
                mode = rnd.choice(["max", "avg"])
                ceil = rnd.choice(["true", "false"])
                lines.append(f"pool {mode} k={k} s={s} p={p} ceil={ceil}")
            else:
                lines.append("relu")
        arch = spec.parse("\n".join(lines))
        try:
            spec.infer(arch)
        except SpecError:
            continue
        return arch


def random_graph_spec(seed: int, batch_norm: bool = True) -> str:
    """A small random 2-D graph spec that infers without error: identity and projection
    residual blocks, concat blocks with an identity branch, depthwise convolutions, repeats,
    relu6 and leaky relu."""
    rnd = random.Random(seed)
    c = rnd.choice([1, 2, 3])
    h, w = rnd.randint(6, 9), rnd.randint(6, 9)
    bn = "; bn" if batch_norm else ""
    lines = [f"input {c} {h} {w}", f"conv 4 k=3 p=1{bn}; relu"]
    c = 4
    for _ in range(rnd.randint(2, 3)):
        choice = rnd.random()
        act = rnd.choice(["relu", "relu6", "leakyrelu 0.1", "tanh"])
        if choice < 0.3:
            d = rnd.choice([1, 2])
            lines.append(
                f"residual {{\n  conv {c} k=3 p={d} d={d}{bn}; {act}\n  conv {c} k=3 p=1{bn}\n}}"
            )
        elif choice < 0.55 and min(h, w) >= 3:
            out = c + rnd.choice([0, 2])
            lines.append(
                f"residual {{\n  conv {out} k=3 s=2 p=1{bn}; {act}; conv {out} k=3 p=1\n"
                f"}} shortcut {{\n  conv {out} k=1 s=2{bn}\n}}"
            )
            c, h, w = out, (h - 1) // 2 + 1, (w - 1) // 2 + 1
        elif choice < 0.8:
            a, b = rnd.choice([1, 2]), rnd.choice([2, 3])
            lines.append(
                f"concat {{ conv {a} k=1 }} {{ conv {b} k=3 p=1; {act} }} "
                f"{{ pool {rnd.choice(['max', 'avg'])} k=3 s=1 p=1 }} {{ }}"
            )
            c = a + b + 2 * c
        else:
            lines.append(f"repeat 2 {{ conv {c} k=3 p=1 groups={c}{bn}; {act} }}")
        lines.append(rnd.choice(["relu", "relu6"]))
    lines.append(rnd.choice(["gap; fc 3", "flatten; fc 3", "fc 3"]))
    text = "\n".join(lines)
    spec.infer(spec.parse(text))
    return text
