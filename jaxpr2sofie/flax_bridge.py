"""Flax bridges: linen (`from_flax`) and nnx (`from_nnx`).

Both only build a pure function `fn(weights, x)` plus its weights and hand them to `convert`;
nothing in Flax is patched. Inference mode is chosen the way Flax itself exposes it: the
`train`/`deterministic`/... call keyword of a linen module, `Module.eval()` for nnx.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping

import jax
import numpy as np

from .errors import Jaxpr2SofieError, TraceError
from .model import SofieModel, convert, model_name
from .options import forwarded, reject_unknown
from .params_check import compare_shapes

# Call keywords that switch a linen module between training and inference, with their inference value.
INFERENCE_FLAGS = {"train": False, "training": False, "is_training": False, "update_stats": False,
                   "deterministic": True, "use_running_average": True}


def _flax():
    try:
        import flax  # noqa: F401
        import flax.linen as nn
        from flax import nnx
    except ImportError as e:   # pragma: no cover - flax is a declared optional dependency
        raise ImportError("the Flax bridge needs Flax: pip install 'jaxpr2sofie[flax]'") from e
    return nn, nnx


def _check_name(name):
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string (the C++ namespace suffix), got {type(name).__name__}: {name!r}")


@contextlib.contextmanager
def _flax_errors(what: str):
    """Re-raise Flax's own errors from inside the trace as TraceError with the bridge's hint."""
    import flax.errors
    try:
        yield
    except flax.errors.FlaxError as e:
        raise TraceError(
            f"Flax refused to run the {what} in inference mode: {e}\n"
            "A layer is still in training mode (BatchNorm updating its statistics, Dropout asking for "
            "an RNG) or the variables do not match the module. Pass the module's inference flag "
            "yourself (e.g. from_flax(module, variables, x, call_kwargs={'train': False})) or build the layer with "
            "use_running_average=True / deterministic=True.") from e


def inference_flags(call, given) -> dict:
    """The inference-mode keywords `call` accepts that are not already in `given`."""
    try:
        sig = inspect.signature(call)
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {k: v for k, v in INFERENCE_FLAGS.items()
            if k in sig.parameters and sig.parameters[k].kind in kinds and k not in given}


def from_flax(module, variables, example_input, name: str | None = None, batch: str | None = None,
              max_batch: int | None = None, blas: str = "auto", *, disable_passes=(), progress: bool | None = None,
              output_names=None, method=None, call_kwargs: dict | None = None, **unknown) -> SofieModel:
    """Convert a Flax **linen** module with its variables (inference mode).

    The traced function is ``module.apply(variables, x, mutable=False, method=method,
    **call_kwargs)``: ``call_kwargs`` holds the arguments meant for the module's own call
    (``call_kwargs={"train": False}``); every other keyword is an option of ``convert`` with the
    same meaning (``name``, ``batch``, ``max_batch``, ``blas``, ``progress``, ``disable_passes``,
    ``output_names``), and any other keyword is a ``TypeError`` naming it.
    Inference mode: when the called method (``__call__``, or ``method``) has a ``train``,
    ``training``, ``is_training`` or ``update_stats`` (``SpectralNorm``) keyword it gets
    ``False``, a ``deterministic`` or ``use_running_average`` keyword gets ``True`` -- unless
    ``call_kwargs`` sets it. A method that takes only ``**kwargs`` is not guessed at: pass its
    flag in ``call_kwargs``. A module configured by a constructor field (``Model(train=True)``)
    must be built in inference mode by you; layers hard-wired to training
    (``BatchNorm(use_running_average=False)``, ``Dropout(deterministic=False)``) cannot run with
    ``mutable=False`` and raise ``TraceError``.

    ``variables`` is the whole dict ``module.init`` returned (``{'params': ..., 'batch_stats':
    ...}``); weights are named by their variable path (``params.Dense_0.kernel``,
    ``batch_stats.BatchNorm_0.mean`` -> C++ ``tensor_params_Dense_0_kernel``). Variables that do
    not fit the module (a missing entry, a kernel of another shape) raise ``TraceError`` listing
    each by its path with the expected and the given shape. ``example_input`` is the single
    positional input (an array, or a pytree of arrays passed as one argument); for a module
    called with several positional arguments use ``convert`` with a lambda.

    >>> import jax, numpy as np, flax.linen as nn, jaxpr2sofie as j2s
    >>> class MLP(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x, train: bool = True):
    ...         x = nn.relu(nn.Dense(16)(x))
    ...         x = nn.Dropout(0.2, deterministic=not train)(x)
    ...         return nn.Dense(3)(x)
    >>> x = np.ones((2, 8), np.float32)
    >>> variables = MLP().init(jax.random.key(0), x)
    >>> m = j2s.from_flax(MLP(), variables, x, name="MLP")   # called with train=False
    >>> m.validate().max_abs < 1e-5
    True
    """
    nn, nnx = _flax()
    _check_name(name)
    if isinstance(module, nnx.Module):
        raise TypeError(f"from_flax takes a flax.linen module, got the nnx module {type(module).__name__}: "
                        "use jaxpr2sofie.from_nnx(module, example_input) for flax.nnx")
    if isinstance(module, type) and issubclass(module, nn.Module):
        raise TypeError(f"from_flax takes a linen module instance, got the class {module.__name__}: "
                        f"pass {module.__name__}(...) with the arguments used at training time")
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_flax takes a flax.linen.Module, got {type(module).__name__}")
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be the dict returned by module.init ({{'params': ...}}), "
                        f"got {type(variables).__name__}")
    if variables and "params" not in variables:
        raise TypeError(f"variables has no 'params' collection (its keys: {sorted(map(str, variables))}); "
                        "pass the whole dict module.init returned, e.g. {'params': params, 'batch_stats': stats}, "
                        "not variables['params']")
    call_kwargs = dict(call_kwargs or {})
    if "mutable" in unknown or "mutable" in call_kwargs:
        raise TypeError("from_flax always applies the module with mutable=False (inference); drop `mutable`")
    if "method" in call_kwargs:
        raise TypeError("from_flax: `method` is an argument of from_flax itself: from_flax(..., method='encode')")
    reject_unknown("from_flax", unknown, own=("method", "call_kwargs"))
    call = getattr(module, method) if isinstance(method, str) else (method or module.__call__)
    kwargs = {**inference_flags(call, call_kwargs), **call_kwargs}
    if method is not None:
        kwargs["method"] = method

    def fn(variables, x):
        return module.apply(variables, x, mutable=False, **kwargs)

    label = model_name(name, type(module).__name__)
    checked = _variables_checked(module, variables, example_input, kwargs)
    with _flax_errors(f"linen module {type(module).__name__}"), checked:
        return convert(fn, _to_dict(variables), example_input, name=label, **forwarded(locals()))


@contextlib.contextmanager
def _variables_checked(module, variables, example_input, kwargs):
    """On a failed trace, compare the variables with those `module.init` makes (shapes only, by
    jax.eval_shape: nothing is computed) and list every difference by its path; when they agree
    the failure is about something else and passes through unchanged."""
    try:
        yield
    except Exception as e:
        if isinstance(e, Jaxpr2SofieError) and not isinstance(e, TraceError):
            raise   # unsupported primitives, dtypes: the variables were fine
        try:
            expected = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, **kwargs), example_input)
        except Exception:   # noqa: BLE001 - the module cannot even be initialised here: say nothing more
            raise e from None
        problems = compare_shapes(_to_dict(expected), _to_dict(variables))
        if not problems:
            raise
        raise TraceError("the variables do not fit the module " + type(module).__name__ + ":\n" +
                         "\n".join(f"  - {p}" for p in problems) + "\nPass the variables module.init made for this "
                         "module (its whole dict), with the shapes it had at training time.") from e


def _to_dict(tree):
    """FrozenDict or dict -> plain nested dict (the same key paths, hence the same weight names)."""
    if isinstance(tree, Mapping):
        return {k: _to_dict(v) for k, v in tree.items()}
    return tree


def _is_weight(nnx):
    """nnx filter: a Variable holding a numeric array (not an RNG key, not a Python value)."""
    def pred(path, node):
        if not isinstance(node, nnx.Variable):
            return False
        value = node.get_value()
        if not isinstance(value, (jax.Array, np.ndarray)):
            return False
        return not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
    return pred


def from_nnx(module, example_input, name: str | None = None, batch: str | None = None,
             max_batch: int | None = None, blas: str = "auto", *, disable_passes=(), progress: bool | None = None,
             output_names=None, call_kwargs: dict | None = None, **unknown) -> SofieModel:
    """Convert a Flax **nnx** module (inference mode) without changing it.

    A clone of the module is put in ``Module.eval()`` mode (``BatchNorm`` uses its running
    statistics, ``Dropout`` is off) and split with ``nnx.split``; the traced function is
    ``nnx.merge(graphdef, state)(x, **call_kwargs)``. The user's module keeps its flags and values.
    Weights are named by their state path (``linear.kernel``, ``bn.mean``, ``layers.0.kernel``
    -> C++ ``tensor_layers_0_kernel``); RNG state and non-array attributes stay Python-side
    constants. ``example_input`` is the single positional input of ``module(x)``; arguments for
    the module's own call go in ``call_kwargs``. Every other keyword is an option of ``convert``
    with the same meaning (``name``, ``batch``, ``max_batch``, ``blas``, ``progress``,
    ``disable_passes``, ``output_names``); any other is a ``TypeError`` naming it.

    >>> import numpy as np, jaxpr2sofie as j2s
    >>> from flax import nnx
    >>> class MLP(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.hidden = nnx.Linear(8, 16, rngs=rngs)
    ...         self.drop = nnx.Dropout(0.2, rngs=rngs)
    ...         self.out = nnx.Linear(16, 3, rngs=rngs)
    ...     def __call__(self, x):
    ...         return self.out(self.drop(nnx.relu(self.hidden(x))))
    >>> model = MLP(nnx.Rngs(0))
    >>> m = j2s.from_nnx(model, np.ones((2, 8), np.float32), name="MLP")
    >>> m.validate().max_abs < 1e-5, model.drop.deterministic    # the user's module is untouched
    (True, False)
    """
    nn, nnx = _flax()
    _check_name(name)
    if isinstance(module, nn.Module):
        raise TypeError(f"from_nnx takes a flax.nnx module, got the linen module {type(module).__name__}: "
                        "use jaxpr2sofie.from_flax(module, variables, example_input) for flax.linen")
    if isinstance(module, type):
        raise TypeError(f"from_nnx takes a module instance, got the class {module.__name__}")
    if not isinstance(module, nnx.Module):
        raise TypeError(f"from_nnx takes a flax.nnx.Module, got {type(module).__name__}")
    if isinstance(example_input, Mapping) and "params" in example_input:
        raise TypeError("from_nnx(module, example_input) takes no variables: an nnx module holds its own state")

    reject_unknown("from_nnx", unknown, own=("call_kwargs",))
    call_kwargs = dict(call_kwargs or {})
    copy = nnx.clone(module)    # new Variables and attributes, shared (immutable) arrays
    copy.eval()
    graphdef, weights, rest = nnx.split(copy, _is_weight(nnx), ...)
    template = dict(nnx.to_flat_state(weights))
    pure = nnx.to_pure_dict(weights)

    def fn(pure, x):
        flat = []
        for path, var in template.items():
            node = pure
            for k in path:
                node = node[k]
            flat.append((path, var.replace(node)))
        return nnx.merge(graphdef, nnx.from_flat_state(flat), rest)(x, **call_kwargs)

    label = model_name(name, type(module).__name__)
    with _flax_errors(f"nnx module {type(module).__name__}"):
        return convert(fn, pure, example_input, name=label, **forwarded(locals()))
