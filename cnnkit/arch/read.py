"""Reading architectures: shipped names, files, inline text and JSON, all into one Graph.

The text form, one layer per line (or ``;`` between layers), ``#`` starts a comment; braces
group layers into blocks that may span lines::

    input 3 224 224          # C H W  (1-D: C L;  3-D: C D H W); also 3x224x224
    conv 64 k=3 s=1 p=1 d=1 groups=1 bias=true   # k, s, p, d take N or HxW; p also valid|same|full
                                                 # or before+after pairs: p=0+1x0+1
    pool max k=2 s=2 p=0 ceil=false              # max|avg; s defaults to k
    gap                      # global average pooling
    relu | relu6 | sigmoid | tanh | leakyrelu [slope]
    bn | dropout 0.5 | flatten
    fc 10 [bias=false]       # fully connected; flattens its input
    residual { ... } [shortcut { ... }]   # body(x) + shortcut(x); no shortcut: body(x) + x
    concat { ... } { ... } ...            # channel concatenation; an empty branch is x
    repeat 3 { ... }                      # three copies, each with its own weights

Any layer or block takes ``name=...``; otherwise names are the kind plus a counter per scope.
``repeat 2 name=layer1 { ... }`` names its copies' layers ``layer1.0.conv1``, ``layer1.1.conv1``
(one copy: ``layer1.conv1``, a named group); a named residual or concat is a scope too, an
unnamed residual adds its layers where it stands, its shortcut under ``shortcut.`` and its sum
as ``add1``; concat branches are ``concat1.0.``, ``concat1.1.``, ...

The JSON form is a list of objects with the same keys (the layer name under ``"layer"``, the
positional value under its field name: ``{"layer": "conv", "out_channels": 64, "k": 3}``,
``{"layer": "input", "shape": [3, 224, 224]}``), or an object ``{"name": ..., "layers":
[...]}``. Blocks: ``{"layer": "residual", "body": [...], "shortcut": [...]}``,
``{"layer": "concat", "branches": [[...], [...]]}``, ``{"layer": "repeat", "times": 3,
"body": [...]}``. Any graph at all: give entries a ``"name"`` and an ``"inputs"`` list of
earlier names (``"input"`` is the graph's input), which is what :func:`to_json` writes.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.arch.graph import INPUT, Graph, Node
from cnnkit.arch.kinds import KINDS, canonical_kind, collect
from cnnkit.arch.values import (
    Ctx,
    SpecError,
    check_input_shape,
    parse_shape,
    to_int,
)
from cnnkit.geometry import format_shape

ARCH_DIR = Path(__file__).resolve().parent.parent / "archs"
BLOCKS = ("residual", "concat", "repeat")
#: Largest spec file read (the shipped ResNet-50 is a few KiB).
MAX_SPEC_BYTES = 1 << 20
_JSON_NAME_KEYS = ("layer", "type", "kind")


def shipped() -> list[str]:
    """Names of the architectures that ship with cnnkit (``cnnkit/archs/*.txt``)."""
    return sorted(p.stem for p in ARCH_DIR.glob("*.txt"))


# ----------------------------------------------------------------------------- building


class Builder:
    """Builds a :class:`Graph` node by node, validating every option as the parsers do.

    Parameters
    ----------
    name : str
        The architecture's name.
    input_shape : tuple of int
        ``(C, spatial...)`` with 1 to 3 spatial sizes.
    where : str
        The word messages use for node lines (``"line"`` or ``"item"``).

    Examples
    --------
    >>> b = Builder("tiny-res", (8, 16, 16))
    >>> x = b.add("conv", out_channels=8, k=3, p=1)
    >>> y = b.add("bn", inputs=[x])
    >>> b.add("add", inputs=[y, "input"], name="res")
    'res'
    >>> [n.inputs for n in b.build().nodes]
    [('input',), ('conv1',), ('bn1', 'input')]
    """

    def __init__(self, name: str, input_shape: tuple[int, ...], where: str = "line") -> None:
        shape = tuple(int(v) for v in input_shape)
        check_input_shape(shape, "input shape", format_shape(shape))
        self.name = name
        self.input_shape = shape
        self.where = where
        self.nodes: list[Node] = []
        self._names = {INPUT}
        self._counts: dict[tuple[str, str], int] = {}

    @property
    def last(self) -> str:
        """Name of the node added last (``"input"`` before the first)."""
        return self.nodes[-1].name if self.nodes else INPUT

    def add(
        self,
        kind: str,
        inputs: list[str] | tuple[str, ...] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Add a node; returns its name.

        ``kind`` is any layer word (``"conv"``, ``"maxpool"``, ``"add"``); ``options`` use
        the spec's keys (``out_channels``, ``k``, ``s``, ``p``, ``d``, ``groups``, ``bias``,
        ``mode``, ``ceil``, ``units``, ``rate``, ``slope``); ``inputs`` default to the node
        added last.
        """
        ctx = Ctx(self.where, 0, f"{kind} {name or ''}".strip())
        return self._add(kind.lower(), [], dict(options), inputs, name, "", 0, "", ctx)

    def unique(self, scope: str, kind: str, explicit: str | None, ctx: Ctx) -> str:
        """``scope + explicit`` or ``scope + kind + counter``, refused if taken."""
        if explicit is None:
            key = (scope, kind)
            self._counts[key] = self._counts.get(key, 0) + 1
            sep = "_" if kind[-1].isdigit() else ""  # relu6_1, not relu61
            name = f"{scope}{kind}{sep}{self._counts[key]}"
        else:
            name = f"{scope}{explicit}"
            if not explicit or any(c.isspace() for c in explicit) or "{" in explicit:
                raise ctx.error(f"name {explicit!r} must be one word")
        if name in self._names:
            raise ctx.error(f"the name {name!r} is used twice")
        self._names.add(name)
        return name

    def _add(
        self,
        word: str,
        args: list[Any],
        keys: dict[str, Any],
        inputs: list[str] | tuple[str, ...] | None,
        name: str | None,
        scope: str,
        line: int,
        text: str,
        ctx: Ctx,
    ) -> str:
        kind_name, implied = canonical_kind(word, ctx, ("input", *BLOCKS))
        kind = KINDS[kind_name]
        values = collect(kind, args, keys, ctx)
        if implied is not None:
            if "mode" in values and str(values["mode"]).lower() != implied:
                raise ctx.error(f"{word} cannot have mode {values['mode']!r}")
            values["mode"] = implied
        attrs = kind.parse(values, len(self.input_shape) - 1, ctx)
        sources = tuple(inputs) if inputs is not None else (self.last,)
        for source in sources:
            if source not in self._names:
                raise ctx.error(f"input {source!r} is not an earlier node")
        if kind.arity == 1 and len(sources) != 1:
            raise ctx.error(f"{kind_name} reads one input, got {len(sources)}")
        if kind.arity != 1 and len(sources) < 2:
            raise ctx.error(
                f"{kind_name} reads two or more inputs; in a text spec write a "
                f"{'residual' if kind_name == 'add' else 'concat'} {{ ... }} block"
            )
        node_name = self.unique(scope, kind_name, name, ctx)
        self.nodes.append(Node(kind_name, line, text, node_name, sources, attrs))
        return node_name

    def build(self) -> Graph:
        """The graph (validated: inputs exist, every node but the last is read)."""
        return Graph(self.name, self.input_shape, tuple(self.nodes), self.where)


# ----------------------------------------------------------------------------- syntax tree


@dataclass
class Stmt:
    """A layer (``bodies`` empty) or a block (``bodies``: its groups) as written."""

    position: int
    text: str
    word: str
    args: list[Any]
    keys: dict[str, Any]
    bodies: list[list[Stmt]] = field(default_factory=list)
    shortcut: list[Stmt] | None = None
    inputs: list[str] | None = None
    is_block: bool = False


def _lex(text: str, where: str) -> list[tuple[str, int, str]]:
    """Tokens ``("chunk", position, text)``, ``("{", position, "")``, ``("}", ...)``."""
    tokens: list[tuple[str, int, str]] = []
    item = 0
    for line_number, raw_line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        item += 1
        buffer = ""
        for ch in raw_line.split("#", 1)[0] + ";":
            position = line_number if where == "line" else item
            if ch in ";{}":
                if buffer.strip():
                    tokens.append(("chunk", position, buffer.strip()))
                buffer = ""
                if ch == ";":
                    item += 1
                else:
                    tokens.append((ch, position, ch))
            else:
                buffer += ch
        item -= 1  # the ";" appended to close the line is not an item
    return tokens


def _split(chunk: str, ctx: Ctx) -> tuple[str, list[Any], dict[str, Any]]:
    tokens = chunk.split()
    args: list[Any] = []
    keys: dict[str, Any] = {}
    for token in tokens[1:]:
        if "=" in token:
            key, _, value = token.partition("=")
            if not value:
                raise ctx.error(f"{key}= has no value")
            if key.lower() in keys:
                raise ctx.error(f"{key} given twice")
            keys[key.lower()] = value
        else:
            args.append(token)
    return tokens[0].lower(), args, keys


def _text_tree(text: str, where: str) -> list[Stmt]:
    tokens = _lex(text, where)
    pos = 0

    def group(opening: tuple[str, int, str]) -> list[Stmt]:
        nonlocal pos
        pos += 1  # the opening brace
        body = sequence(depth=1)
        if pos >= len(tokens):
            raise Ctx(where, opening[1], "{").error("this { is never closed with }")
        pos += 1  # the closing brace
        return body

    def sequence(depth: int) -> list[Stmt]:
        nonlocal pos
        out: list[Stmt] = []
        while pos < len(tokens):
            tok, position, chunk = tokens[pos]
            if tok == "}":
                if depth == 0:
                    raise Ctx(where, position, "}").error("a } without a matching {")
                return out
            if tok == "{":
                raise Ctx(where, position, "{").error(
                    "a { must follow residual, concat, repeat N, shortcut or another concat branch"
                )
            ctx = Ctx(where, position, chunk)
            word, args, keys = _split(chunk, ctx)
            opens = pos + 1 < len(tokens) and tokens[pos + 1][0] == "{"
            if word in BLOCKS or opens:
                if word not in BLOCKS:
                    hint = " (shortcut comes right after a residual's })"
                    hint = hint if word == "shortcut" else ""
                    raise ctx.error(
                        f"{word!r} cannot open a {{ group; blocks are residual, concat and "
                        f"repeat{hint}"
                    )
                if not opens:
                    raise ctx.error(f"{word} needs a {{ ... }} group, e.g. '{word} {{ relu }}'")
                stmt = Stmt(position, chunk, word, args, keys, is_block=True)
                pos += 1
                stmt.bodies.append(group(tokens[pos]))
                if word == "concat":
                    while pos < len(tokens) and tokens[pos][0] == "{":
                        stmt.bodies.append(group(tokens[pos]))
                elif word == "residual" and pos + 1 < len(tokens):
                    nxt, after = tokens[pos], tokens[pos + 1]
                    if nxt[0] == "chunk" and nxt[2].lower() == "shortcut" and after[0] == "{":
                        pos += 1
                        stmt.shortcut = group(after)
                out.append(stmt)
                continue
            if word == "shortcut":
                raise ctx.error("shortcut { ... } must come right after a residual's }")
            out.append(Stmt(position, chunk, word, args, keys))
            pos += 1
        return out

    return sequence(depth=0)


def _json_tree(text: str, name: str) -> tuple[list[Stmt], str]:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [str(k).lower() for k, _ in pairs]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:
            raise SpecError(f"spec JSON: key {twice!r} given twice in one object")
        return dict(pairs)

    try:
        data = json.loads(text.lstrip("\ufeff"), object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec is not valid JSON: {exc}") from None
    except RecursionError:
        raise SpecError("spec JSON is nested too deeply") from None
    except ValueError as exc:  # Python refuses integers of more than 4300 digits
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"spec is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "layers" in data:
        name = str(data.get("name", name))
        if not isinstance(data["layers"], list):
            raise SpecError('a JSON spec object needs a "layers" list')
        items = list(data["layers"])
        if "input" in data:
            items.insert(0, {"layer": "input", "shape": data["input"]})
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        raise SpecError('a JSON spec object needs a "layers" list')
    else:
        raise SpecError("a JSON spec is a list of layer objects (or {'layers': [...]})")
    counter = [0]

    def entries(values: Any, what: str) -> list[Stmt]:
        if not isinstance(values, list):
            raise SpecError(f"{what} must be a JSON list of layer objects")
        return [entry(item) for item in values]

    def entry(item: Any) -> Stmt:
        counter[0] += 1
        position = counter[0]
        if not isinstance(item, dict):
            shown = json.dumps(item)
            raise SpecError(f"item {position} ({shown}): each layer must be a JSON object")
        keys = {str(k).lower(): v for k, v in item.items()}
        word = next((keys.pop(k) for k in _JSON_NAME_KEYS if k in keys), None)
        shown = {k: v for k, v in item.items() if k not in ("body", "shortcut", "branches")}
        chunk = json.dumps(shown)
        if not isinstance(word, str):
            raise SpecError(
                f'item {position} ({chunk}): missing the layer name, e.g. {{"layer": "conv"}}'
            )
        word = word.lower()
        inputs = keys.pop("inputs", None)
        if inputs is not None and (
            not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs)
        ):
            raise SpecError(f"item {position} ({chunk}): inputs must be a list of node names")
        stmt = Stmt(position, chunk, word, [], keys, inputs=inputs, is_block=word in BLOCKS)
        if word == "residual":
            stmt.bodies.append(entries(keys.pop("body", None), f"item {position}'s body"))
            if "shortcut" in keys:
                stmt.shortcut = entries(keys.pop("shortcut"), f"item {position}'s shortcut")
        elif word == "repeat":
            stmt.bodies.append(entries(keys.pop("body", None), f"item {position}'s body"))
        elif word == "concat" and "branches" in keys:
            branches = keys.pop("branches")
            if not isinstance(branches, list):
                raise SpecError(f"item {position} ({chunk}): branches must be a list of lists")
            stmt.bodies.extend(entries(b, f"item {position}'s branch") for b in branches)
        else:
            stmt.is_block = False
        return stmt

    return [entry(item) for item in items], name


# ----------------------------------------------------------------------------- tree -> graph


def _graph(tree: list[Stmt], name: str, where: str, override: tuple[int, ...] | None) -> Graph:
    if override is not None:
        override = tuple(int(v) for v in override)
        check_input_shape(override, "input shape", format_shape(override))
    input_shape = override
    statements = list(tree)
    seen_input = False
    if statements and statements[0].word == "input" and not statements[0].is_block:
        first = statements.pop(0)
        shape = _input_values(first, Ctx(where, first.position, first.text))
        input_shape = input_shape or shape
        seen_input = True
    elif input_shape is None and statements:
        first = statements[0]
        raise Ctx(where, first.position, first.text).error(
            "layer before input: start the spec with e.g. 'input 3 32 32' (or pass an input shape)"
        )
    for stmt in statements:
        if stmt.word == "input":
            ctx = Ctx(where, stmt.position, stmt.text)
            if seen_input:
                raise ctx.error("a second input line; a spec has exactly one")
            raise ctx.error("input must come before the first layer")
    if input_shape is None:
        raise SpecError("spec has no input line (e.g. 'input 3 32 32') and no input shape")
    if not statements:
        raise SpecError("spec has no layers after the input")
    builder = Builder(name, input_shape, where)
    _sequence(builder, statements, INPUT, "", where)
    return builder.build()


def _input_values(stmt: Stmt, ctx: Ctx) -> tuple[int, ...]:
    raw = stmt.keys.get("shape") if stmt.keys else None
    extra = [k for k in stmt.keys if k != "shape"]
    if extra:
        raise ctx.error(f"unknown option {extra[0]!r} for input")
    if stmt.args:
        if raw is not None:
            raise ctx.error("shape given twice")
        raw = " ".join(map(str, stmt.args))
    if raw is None:
        raise ctx.error("input needs C and spatial sizes, e.g. 'input 3 32 32'")
    if isinstance(raw, list):
        raw = " ".join(str(v) for v in raw)
    try:
        return parse_shape(str(raw))
    except SpecError as exc:
        raise ctx.error(str(exc)) from None


def _sequence(builder: Builder, stmts: list[Stmt], x: str, scope: str, where: str) -> str:
    """Add ``stmts`` reading ``x``; returns the name of the last output."""
    for stmt in stmts:
        ctx = Ctx(where, stmt.position, stmt.text)
        keys = dict(stmt.keys)
        explicit = keys.pop("name", None)
        if explicit is not None:
            explicit = str(explicit)
        if not stmt.is_block:
            inputs = stmt.inputs if stmt.inputs is not None else [x]
            if stmt.inputs is not None and scope:
                raise ctx.error("inputs are for flat JSON graphs, not inside blocks")
            x = builder._add(
                stmt.word, stmt.args, keys, inputs, explicit, scope, stmt.position, stmt.text, ctx
            )
            continue
        if stmt.inputs is not None:
            raise ctx.error("a block reads the layer before it; inputs are for flat graphs")
        x = _block(builder, stmt, keys, explicit, x, scope, where, ctx)
    return x


def _block(builder, stmt, keys, explicit, x, scope, where, ctx) -> str:
    word = stmt.word
    if word == "repeat":
        raw = keys.pop("times", None)
        if stmt.args:
            if raw is not None or len(stmt.args) > 1:
                raise ctx.error("repeat takes one count, e.g. 'repeat 3 { ... }'")
            raw = stmt.args[0]
        if raw is None:
            raise ctx.error("repeat needs a count, e.g. 'repeat 3 { ... }'")
        times = to_int(raw, "repeat count", ctx)
    elif stmt.args:
        raise ctx.error(f"{word} takes no values, got {' '.join(map(str, stmt.args))!r}")
    if keys:
        raise ctx.error(f"unknown option {next(iter(keys))!r} for {word} (it takes name=)")
    if not any(stmt.bodies[0]) and word != "concat":
        raise ctx.error(f"{word} needs at least one layer inside its {{ }}")
    if word == "repeat":
        block = builder.unique(scope, word, explicit, ctx)
        for copy in range(times):
            inner = f"{block}." if times == 1 else f"{block}.{copy}."
            x = _sequence(builder, stmt.bodies[0], x, inner, where)
        return x
    if word == "residual":
        # A named residual is a scope of its own; an unnamed one adds its layers where it
        # stands (layer1.0.conv1, layer1.0.add1 inside "repeat 2 name=layer1").
        if explicit is not None:
            block = builder.unique(scope, word, explicit, ctx)
            inner = f"{block}."
        else:
            inner = scope
        body = _sequence(builder, stmt.bodies[0], x, inner, where)
        short = x
        if stmt.shortcut:
            short = _sequence(builder, stmt.shortcut, x, f"{inner}shortcut.", where)
        if explicit is None:
            block = builder.unique(scope, "add", None, ctx)
        inputs = [body, short]
        kind = "add"
    else:
        if len(stmt.bodies) < 2:
            raise ctx.error("concat needs two or more branches: concat { ... } { ... }")
        block = builder.unique(scope, word, explicit, ctx)
        inputs = [
            _sequence(builder, branch, x, f"{block}.{i}.", where)
            for i, branch in enumerate(stmt.bodies)
        ]
        kind = "concat"
    header = stmt.text
    builder.nodes.append(Node(kind, stmt.position, header, block, tuple(inputs), {}))
    return block


# ----------------------------------------------------------------------------- sources


def parse(source: str, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Parse an architecture spec into a :class:`Graph`.

    Parameters
    ----------
    source : str
        A shipped name (``"lenet5"``, see :func:`shipped`), a path to a ``.txt`` spec or a
        ``.json`` file, inline text with ``;`` (or newlines) between layers, a JSON string,
        or an ``.onnx`` model file (:func:`cnnkit.onnx.to_graph.onnx_graph`; onnx extra).
    input_shape : tuple of int, optional
        ``(C, spatial...)``; overrides the spec's ``input`` line (and makes it optional).

    Returns
    -------
    Graph

    Raises
    ------
    SpecError
        A ValueError whose message names the line (or item), its text and the bad value.
        Unknown layer names and keys come with the closest valid spelling.

    Examples
    --------
    >>> from cnnkit.arch import infer
    >>> arch = parse("input 1 8 8; conv 4 k=3; relu; pool max k=2; fc 10")
    >>> [info.output_shape for info in infer(arch)]
    [(4, 6, 6), (4, 6, 6), (4, 3, 3), (10,)]
    >>> res = parse("input 4 8 8; residual { conv 4 k=3 p=1; bn }; relu")
    >>> [(n.name, n.inputs) for n in res.nodes]  # doctest: +NORMALIZE_WHITESPACE
    [('conv1', ('input',)), ('bn1', ('conv1',)), ('add1', ('bn1', 'input')),
     ('relu1', ('add1',))]
    >>> parse("input 1 8 8; cnov 4 k=3")
    Traceback (most recent call last):
    ...
    cnnkit.arch.values.SpecError: item 2 ('cnov 4 k=3'): unknown layer 'cnov'; did you mean 'conv'?
    """
    if not isinstance(source, str) or not source.strip():
        raise SpecError("spec is empty: give a shipped name, a file, or text like 'input 1 8 8'")
    if source.strip().lower().endswith(".onnx"):  # a model file: its graph, node by node
        from cnnkit.onnx.to_graph import onnx_graph

        return onnx_graph(source.strip(), input_shape)
    text, name, where = _load(source)
    return parse_text(text, input_shape, name=name, where=where)


def parse_text(
    text: str,
    input_shape: tuple[int, ...] | None = None,
    *,
    name: str = "inline",
    where: str | None = None,
) -> Graph:
    """Parse spec text as it is, never as a shipped name or a file path (model files).

    ``where`` is the word used for positions in errors ("line" or "item"); by default "line"
    for multi-line text without ``;``, else "item".
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError("spec is empty")
    if where is None:
        where = "line" if "\n" in text.strip() and ";" not in text else "item"
    if text.lstrip("\ufeff \t\r\n").startswith(("[", "{")):
        tree, name = _json_tree(text, name)
        where = "item"
    else:
        tree = _text_tree(text, where)
    return _graph(tree, name, where, input_shape)


def source_text(source: str, input_shape: tuple[int, ...] | None = None) -> str:
    """The spec text behind ``source`` (a shipped name, a file, inline text or JSON), resolved
    exactly as :func:`parse` resolves it; store this to rebuild the same network later.
    An ``.onnx`` file's architecture is stored as the JSON spec of its graph, read with
    ``input_shape`` (needed when the file's input shape is dynamic)."""
    if source.strip().lower().endswith(".onnx"):
        from cnnkit.onnx.to_graph import onnx_spec_text

        return onnx_spec_text(source.strip(), input_shape)
    return _load(source)[0]


def _read_spec_file(path: Path) -> str:
    """A spec file's text: UTF-8 (a byte-order mark is dropped), size-limited, named in errors."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: {size:,} bytes is too large for a spec file (limit {MAX_SPEC_BYTES:,})"
            )
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the spec as UTF-8"
        ) from None


def _load(source: str) -> tuple[str, str, str]:
    """(text, name, word for positions) for a name, a path or an inline spec."""
    candidate = source.strip().lstrip("\ufeff")
    if candidate.lower() in shipped():
        path = ARCH_DIR / f"{candidate.lower()}.txt"
        return path.read_text(encoding="utf-8"), candidate.lower(), "line"
    if candidate.startswith(("[", "{")):
        return candidate, "inline", "item"
    looks_inline = any(c in candidate for c in ";\n{") or " " in candidate
    path = Path(os.path.expanduser(candidate))
    if not looks_inline or path.suffix.lower() in (".txt", ".json", ".spec"):
        if path.is_file():
            return _read_spec_file(path), path.stem, "line"
        if path.suffix or os.sep in candidate:
            raise FileNotFoundError(2, "no such file", candidate)
        hint = difflib.get_close_matches(candidate.lower(), shipped(), n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        raise SpecError(
            f"{candidate!r} is not a shipped architecture, a file or a spec{did_you_mean} "
            f"(shipped: {', '.join(shipped())}; inline specs look like 'input 1 8 8; conv 4 k=3')"
        )
    where = "line" if "\n" in candidate and ";" not in candidate else "item"
    return candidate, "inline", where
