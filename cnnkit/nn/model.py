"""A Model: the network an architecture graph describes, run by walking that graph.

The model is built only from :func:`cnnkit.arch.parse` / :func:`cnnkit.arch.infer`, so the
spec a user inspects with ``cnnkit shape`` is exactly the spec that trains. Each node of the
graph becomes the layer its kind builds (:data:`cnnkit.arch.kinds.KINDS`), with the shapes
inference found (a conv's input channels, an fc layer's input features, resolved "same"
padding). A chain is a graph with one path; residual and concat blocks add nodes that read
several inputs.

Every parameter and every gradient lives in one flat array (``model.flat_params`` /
``model.flat_grads``); the layers hold views into it. The optimiser then updates the whole
network with a few vectorised numpy calls instead of a few calls per tensor.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from cnnkit import memory
from cnnkit.arch import INPUT, KINDS, Graph, infer, parse, source_text
from cnnkit.nn import layers as L
from cnnkit.nn.losses import softmax

RELU_FAMILY = ("relu", "relu6", "leakyrelu")


def _init_for(arch: Graph, consumers: dict[str, list[str]], name: str) -> str:
    """ "he" if the next activation after node ``name`` is relu-like, else "glorot"."""
    kinds = {n.name: n.kind for n in arch.nodes}
    while consumers.get(name):
        name = consumers[name][0]
        if kinds[name] in RELU_FAMILY:
            return "he"
        if not KINDS[kinds[name]].transparent:
            return "glorot"
    return "glorot"


class Model:
    """A network built from a parsed architecture graph.

    Parameters
    ----------
    arch : cnnkit.arch.Graph
        The parsed spec (``arch.parse``); its input shape must be (C, H, W).
    seed : int
        Seed of the weight initialisation.
    init : str
        ``"he"``: He normal for layers followed by relu/relu6/leaky relu, Glorot uniform
        otherwise. ``"torch"``: PyTorch's default ``U(+-1/sqrt(fan_in))`` for weights and
        biases.
    dtype : numpy dtype
        float32 (training) or float64 (gradient checks).
    source : str, optional
        The spec text the architecture was parsed from, stored in model files.

    Attributes
    ----------
    arch : cnnkit.arch.Graph
        The graph; ``layers[i]`` computes ``arch.nodes[i]``.
    layers : list of cnnkit.nn.layers.Layer
        One per node, named as the node (``layer.name``), parameters in ``layer.params``
        (conv and fc: weight then bias; bn: scale, shift and ``buffers`` running stats).
    inputs : list of tuple of str
        The node names each layer reads (``"input"`` is the batch).
    output_shapes : list of tuple of int
        Each node's output shape without the batch dimension.

    Notes
    -----
    ``forward`` runs the nodes in the graph's topological order, each reading the outputs of
    its inputs; ``backward`` runs them in reverse, each turning ``dL/d(output)`` into
    ``dL/d(input)`` (one per input for add and concat) and filling its parameter gradients.
    Where a node's output feeds several nodes, the gradients that come back are summed.
    """

    def __init__(
        self,
        arch: Graph,
        *,
        seed: int = 0,
        dtype: DTypeLike = np.float32,
        source: str | None = None,
        init: str = "he",
    ) -> None:
        self.init = L.check_init(init)
        self.arch = arch
        self.source = source
        self.dtype = np.dtype(dtype)
        self.input_shape = tuple(int(s) for s in arch.input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(
                f"training supports 2-D image inputs (C H W); the input shape "
                f"{' '.join(map(str, self.input_shape))} has {len(self.input_shape) - 1} "
                "spatial dimensions"
            )
        infos = infer(arch)
        consumers = arch.consumers()
        params = sum(int(info.params) for info in infos)
        values = sum(int(info.activations) for info in infos)
        # weights, gradients, two optimiser moments and one scratch copy; the activations
        # of one image and their gradients
        memory.check(
            (params * 5 + values * 2) * self.dtype.itemsize,
            f"{arch.name}: {params:,} parameters and {values:,} activations per image",
            "use smaller layers or a smaller input",
        )
        rng = np.random.default_rng(seed)
        self.layers: list[L.Layer] = []
        self.inputs: list[tuple[str, ...]] = []
        self.output_shapes: list[tuple[int, ...]] = []
        for info in infos:
            node = info.layer
            wanted = "torch" if init == "torch" else _init_for(arch, consumers, node.name)
            try:
                layer = KINDS[node.kind].build(node, info, wanted, rng, self.dtype)
            except ValueError as exc:
                where = f"{arch.where} {node.line}: " if node.line else ""
                raise ValueError(f"{where}{exc}") from None
            layer.need_input_grad = INPUT not in node.inputs
            self.layers.append(layer)
            self.inputs.append(tuple(node.inputs))
            self.output_shapes.append(tuple(int(s) for s in info.output_shape))
        self.names = [layer.name for layer in self.layers]
        # How many nodes read each output: forward frees an output once all have read it.
        self._readers: dict[str, int] = {}
        for sources in self.inputs:
            for source in sources:
                self._readers[source] = self._readers.get(source, 0) + 1
        # One score per class is a flat vector; a (K, 1, 1) map also counts as K scores.
        out = self.output_shapes[-1]
        self.num_outputs = int(np.prod(out)) if all(s == 1 for s in out[1:]) else 0
        self._flatten_parameters()

    def _flatten_parameters(self) -> None:
        total = sum(p.size for layer in self.layers for p in layer.params)
        self.flat_params = np.zeros(total, self.dtype)
        self.flat_grads = np.zeros(total, self.dtype)
        offset = 0
        for layer in self.layers:
            new_p, new_g = [], []
            for p in layer.params:
                view = self.flat_params[offset : offset + p.size].reshape(p.shape)
                view[...] = p
                new_p.append(view)
                new_g.append(self.flat_grads[offset : offset + p.size].reshape(p.shape))
                offset += p.size
            layer.params, layer.grads = new_p, new_g
            if hasattr(layer, "rebind"):
                layer.rebind()

    # -- running -------------------------------------------------------------------------

    def _run(self, x: np.ndarray, training: bool, keep: bool) -> dict[str, np.ndarray]:
        """Every node's output (``keep``) or just the last one, by walking the graph."""
        values = {"input": x}
        left = dict(self._readers)
        for layer, sources, name in zip(self.layers, self.inputs, self.names):
            args = [values[s] for s in sources]
            values[name] = layer.forward(args if layer.multi_input else args[0], training)
            if not keep:
                for s in sources:
                    left[s] -= 1
                    if not left[s]:
                        del values[s]
        return values

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits for a batch ``x`` of shape (N, *input_shape)."""
        y = self._run(x, training, keep=False)[self.names[-1]]
        return y.reshape(y.shape[0], -1)

    def backward(self, grad: np.ndarray) -> None:
        """Back-propagate ``dL/d(logits)``; fills ``flat_grads``."""
        grads = {self.names[-1]: grad.reshape((grad.shape[0], *self.output_shapes[-1]))}
        for layer, sources, name in zip(
            reversed(self.layers), reversed(self.inputs), reversed(self.names)
        ):
            out = layer.backward(grads.pop(name))
            if out is None:
                continue
            for source, g in zip(sources, out if layer.multi_input else [out]):
                if source == "input":
                    continue
                # Not in place: add hands the same array to each of its inputs.
                grads[source] = g if source not in grads else grads[source] + g

    def activations(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(layer name, output) for every node, evaluation mode."""
        values = self._run(x, False, keep=True)
        return [(name, values[name]) for name in self.names]

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Evaluation-mode logits for any number of inputs, in batches."""
        x = np.asarray(x, self.dtype)
        chunks = [
            self.forward(np.ascontiguousarray(x[i : i + batch_size]), False)
            for i in range(0, len(x), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.num_outputs), self.dtype)
        return np.concatenate(chunks)

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Softmax class probabilities, shape (N, classes)."""
        return softmax(self.predict_logits(x, batch_size))

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by name (``conv1.0`` = conv1's weight, ``bn2.running_mean``)."""
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.layers):
            for j, p in enumerate(layer.params):
                out[f"{i}.{layer.name}.p{j}"] = p
            for key, buf in layer.buffers.items():
                out[f"{i}.{layer.name}.{key}"] = buf
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays from :meth:`state`'s naming into this model; shapes must match."""
        mine = self.state()
        missing = sorted(set(mine) - set(arrays))
        if missing:
            raise ValueError(f"the model file lacks the array {missing[0]!r} for this architecture")
        for key, target in mine.items():
            src = arrays[key]
            if src.shape != target.shape:
                raise ValueError(
                    f"array {key!r} has shape {src.shape}, the architecture needs {target.shape}"
                )
            target[...] = src

    def parameter_count(self) -> int:
        return int(self.flat_params.size)

    def first_conv(self) -> L.Conv2d | None:
        """The first convolution layer (its kernels are what ``visualize --filters`` shows)."""
        for layer in self.layers:
            if isinstance(layer, L.Conv2d):
                return layer
        return None

    def set_dropout_rng(self, rng: np.random.Generator) -> None:
        for layer in self.layers:
            if isinstance(layer, L.Dropout):
                layer.rng = rng


def build_model(
    source: str,
    input_shape: tuple[int, ...] | None = None,
    *,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
    init: str = "he",
) -> Model:
    """Parse ``source`` with :func:`cnnkit.arch.parse` and build the model it describes."""
    arch = parse(source, input_shape=input_shape)
    return Model(arch, seed=seed, dtype=dtype, source=spec_text(source, input_shape), init=init)


def spec_text(source: str, input_shape: tuple[int, ...] | None = None) -> str:
    """The spec text behind ``source`` (a shipped name, a file or inline text).

    Model files store the text itself, not a name or a path, so a model still loads after the
    file moves or a shipped architecture changes.
    """
    # The parser's own resolution of names and paths: one place decides what a source means.
    return source_text(source, input_shape)


__all__ = ["Model", "build_model", "spec_text"]
