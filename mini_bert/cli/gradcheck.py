"""`minibert gradcheck FILE.py:FORWARD,BACKWARD --shape 4,8 ...`: check the backward of an op you wrote yourself
against float64 central differences (mini_bert.gradcheck.check), and print one row per input.

    minibert gradcheck my_ops.py:layernorm_forward,layernorm_backward --shape 4,8 --shape 8 --shape 8
    minibert gradcheck my_ops.py:layernorm          # the same: NAME means NAME_forward and NAME_backward

The two functions follow mini_bert.gradcheck's contract: `forward(*inputs)` returns y or (y, cache);
`backward(dy, cache)` (or `backward(dy, *inputs)` when forward returns y alone) returns one gradient per input.
The inputs are random float64 arrays of the given shapes, one `--shape` per array parameter of forward, in order;
constants such as eps keep forward's defaults. Instead of `--shape`, the file may define
`SHAPES = {"layernorm_forward": [(4, 8), (8,), (8,)]}` (or a plain list of shapes, used for any forward).

Exit codes: 0 every input agrees; 1 the check ran and found a wrong gradient; 2 a mistake in the command (a
missing file or function, a bad shape, float32 arithmetic in forward), with a message saying how to fix it.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from ..errors import MiniBertError, MissingFileError


def add_parser(sub, common) -> None:
    p = sub.add_parser("gradcheck", parents=[common["seed"]],
                       help="check a hand-written backward (FILE.py:FORWARD,BACKWARD) against finite differences",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("target", metavar="FILE.py:FORWARD,BACKWARD",
                   help="a Python file and its two functions; FILE.py:NAME stands for NAME_forward,NAME_backward")
    p.add_argument("--shape", action="append", default=None, metavar="N,M,...",
                   help="the shape of one array input of FORWARD, in parameter order; repeat once per input "
                        "(default: the file's SHAPES)")
    p.add_argument("--eps", type=float, default=None, help="finite-difference step (default 1e-5)")
    p.add_argument("--tol", type=float, default=None, help="largest relative error that passes (default 1e-6)")
    p.set_defaults(func=run)


def parse_target(target: str) -> tuple[Path, str, str]:
    """'ops.py:f,b' -> (Path('ops.py'), 'f', 'b'); 'ops.py:name' -> (..., 'name_forward', 'name_backward')."""
    path, sep, names = target.rpartition(":")
    if not sep or not path or not names:
        raise MiniBertError(f"{target!r} does not name the functions: write FILE.py:FORWARD,BACKWARD "
                            f"(e.g. my_ops.py:layernorm_forward,layernorm_backward) or FILE.py:NAME for "
                            f"NAME_forward and NAME_backward")
    parts = [n.strip() for n in names.split(",")]
    if len(parts) == 1:
        parts = [f"{parts[0]}_forward", f"{parts[0]}_backward"]
    if len(parts) != 2 or not all(n.isidentifier() for n in parts):
        raise MiniBertError(f"{names!r} after the ':' must be two function names separated by a comma "
                            f"(FORWARD,BACKWARD) or one NAME for NAME_forward and NAME_backward")
    return Path(path), parts[0], parts[1]


def parse_shape(text: str) -> tuple[int, ...]:
    """'4,8' -> (4, 8); '8' -> (8,)."""
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise MiniBertError(f"bad shape {text!r}: write the sizes as positive integers separated by commas, "
                            f"e.g. --shape 4,8 for a (4, 8) array or --shape 8 for a vector")
    return shape


def load_functions(path: Path, forward_name: str, backward_name: str):
    """Run the file as a module and return (forward, backward, module). Its own errors keep their traceback."""
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; give the path of your Python file (relative to "
                               f"{Path.cwd()} or absolute)")
    if path.suffix != ".py":
        raise MiniBertError(f"{path} is not a .py file; the functions must live in a Python file")
    spec = importlib.util.spec_from_file_location(f"minibert_gradcheck_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))     # the file may import modules beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.resolve().parent))
    defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__)
    found = []
    for name in (forward_name, backward_name):
        fn = getattr(module, name, None)
        if not callable(fn):
            raise MiniBertError(f"{path} has no function {name!r}; it defines: {', '.join(defined) or 'none'}. "
                                f"Name the two functions as FILE.py:FORWARD,BACKWARD")
        found.append(fn)
    return found[0], found[1], module


def input_shapes(flags: list[tuple[int, ...]], module, path: Path, forward) -> list[tuple[int, ...]]:
    """The --shape flags, else the file's SHAPES; checked against forward's parameters."""
    fname = forward.__name__
    if flags:
        shapes = flags
    else:
        declared = getattr(module, "SHAPES", None)
        if isinstance(declared, dict):
            declared = declared.get(fname)
        if declared is None:
            raise MiniBertError(f"no input shapes for {fname}: pass one --shape per array input (e.g. --shape 4,8 "
                                f"--shape 8), or define SHAPES = {{{fname!r}: [(4, 8), (8,)]}} in {path.name}")
        try:
            shapes = [tuple(int(n) for n in s) for s in declared]
        except (TypeError, ValueError):
            shapes = []
        if not shapes or any(not s or min(s) <= 0 for s in shapes):
            raise MiniBertError(f"SHAPES in {path.name} must be a list of shapes such as [(4, 8), (8,)] (or a dict "
                                f"from the forward's name to one); got {declared!r}")
    try:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return shapes
    required = [p.name for p in params if p.default is p.empty]
    if len(shapes) > len(params) and not any(p.kind == p.VAR_POSITIONAL
                                             for p in inspect.signature(forward).parameters.values()):
        raise MiniBertError(f"{len(shapes)} shapes for {fname}({', '.join(p.name for p in params)}), which takes "
                            f"{len(params)} inputs; give one --shape per array input")
    if len(shapes) < len(required):
        raise MiniBertError(f"{len(shapes)} shape(s) for {fname}, but {', '.join(required[len(shapes):])} "
                            f"{'has' if len(required) - len(shapes) == 1 else 'have'} no value: give one --shape per "
                            f"array input, or a default value to constants such as eps")
    return shapes


def run(args) -> int:
    from ..gradcheck import EPS, TOL, check

    path, forward_name, backward_name = parse_target(args.target)
    flags = [parse_shape(s) for s in args.shape or []]          # a bad flag fails before the file runs
    eps = EPS if args.eps is None else args.eps
    tol = TOL if args.tol is None else args.tol
    if eps <= 0 or tol <= 0:
        raise MiniBertError(f"--eps and --tol must be positive; got {eps} and {tol}")
    forward, backward, module = load_functions(path, forward_name, backward_name)
    shapes = input_shapes(flags, module, path, forward)
    result = check(forward, backward, *shapes, seed=args.seed, eps=eps, tol=tol)
    print(f"{path.name}: {forward_name} / {backward_name}, random float64 inputs "
          f"{', '.join(str(s) for s in shapes)} (seed {args.seed}); L = sum(y * R), R random")
    print(result.table())
    if not result.passed:
        print("A wrong gradient shows up as a relative error of 1e-2 to 1. At the worst entry compare analytic "
              "with numeric, and re-derive the terms that feed that input (how to read the table: "
              "docs/MATHEMATICAL_GUIDE.md, section \"Gradient checking\").")
    return 0 if result.passed else 1
