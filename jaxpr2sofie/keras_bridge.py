"""Keras 3 on the JAX backend -> `convert`.

The bridge only builds a pure function and its params: `model.stateless_call` with the model's
trainable and non-trainable variables passed in as arguments, in inference mode
(`training=False`: Dropout is the identity, BatchNormalization uses its moving statistics).
Each weight is named by its Keras variable path (`sequential/dense/kernel`).
"""
from __future__ import annotations

import inspect
import os
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from .errors import KerasBackendError, ModelFileError

_LOADABLE = (".keras", ".h5", ".hdf5")


def _keras():
    """Import Keras on the JAX backend, or explain why that is no longer possible in this process."""
    if "keras" not in sys.modules:
        # Keras reads its backend once, at import: choose JAX before anything imports it.
        os.environ["KERAS_BACKEND"] = "jax"
    try:
        import keras
    except ImportError as e:
        raise ImportError(f"from_keras needs Keras 3 and h5py: pip install 'jaxpr2sofie[keras]' ({e})") from e

    backend = keras.backend.backend()
    if backend != "jax":
        raise KerasBackendError(
            f"Keras is running on the {backend!r} backend, but jaxpr2sofie traces Keras models through JAX. "
            "Keras picks its backend once, when it is first imported: set KERAS_BACKEND=jax in the environment "
            "(or os.environ['KERAS_BACKEND'] = 'jax') before importing Keras, or let from_keras be the first to "
            "import it (it then selects JAX itself). Model files saved under another backend (.keras or .h5, "
            "e.g. trained with TensorFlow) load fine under JAX.")
    return keras


# An HDF5 file starts with this signature at byte 0, or at 512, 1024, 2048, ... when it has a user block.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_RESAVE = "Re-save the model from Keras with model.save('model.keras') and convert that file."


def _has_hdf5_signature(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        offset = 0
        while offset + len(_HDF5_SIGNATURE) <= size:
            f.seek(offset)
            if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else 2 * offset
    return False


def _file_problem(path: Path) -> str | None:
    """What is wrong with a model file, judged from its bytes before Keras reads it; None if it looks right.

    Keras' own messages for these cases name neither the file nor the cause: a truncated `.keras`
    file is reported as "File not found", an `.h5` file that is not HDF5 as h5py's
    "file signature not found".
    """
    size = path.stat().st_size
    if size == 0:
        return f"the file is empty (0 bytes): the save, download or copy did not complete. {_RESAVE}"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        return ("the file is a Git LFS pointer, not the model itself: fetch the model with `git lfs pull` "
                "in the repository it came from")
    is_zip, is_hdf5 = zipfile.is_zipfile(path), _has_hdf5_signature(path, size)
    if path.suffix.lower() == ".keras":
        if is_zip:
            with zipfile.ZipFile(path) as z:
                if "config.json" not in z.namelist():
                    return f"the file is a zip archive but not a Keras model (it holds no config.json). {_RESAVE}"
            return None
        if is_hdf5:
            return ("the file is a legacy HDF5 (.h5) model with a .keras name, and Keras reads a .keras file "
                    "as a zip archive: rename it to .h5 (or re-save it with model.save('model.keras'))")
        if head.startswith(b"PK"):
            # a zip archive's index sits at its end: a zip header without it means the end is missing
            return (f"the file is a truncated or damaged zip archive ({size} bytes; its end, with the zip index, "
                    f"is missing): an interrupted save, download or copy. {_RESAVE}")
        return (f"the file is not a Keras model: a .keras file is a zip archive, this one starts with "
                f"{head[:16]!r}. {_RESAVE}")
    if is_hdf5:
        return None
    if is_zip:
        return "the file is a Keras 3 zip archive (.keras format) with an .h5 name: rename it to .keras"
    return (f"the file is not an HDF5 file (no HDF5 signature; it starts with {head[:16]!r}), so it is not a "
            f"legacy .h5 Keras model. {_RESAVE}")


def _load(keras, path: Path, custom_objects, safe_mode: bool = True):
    if not path.exists():
        raise FileNotFoundError(f"no Keras model file at {path}")
    if path.suffix.lower() not in _LOADABLE:
        raise ModelFileError(f"{path}: expected a Keras 3 `.keras` file or a legacy `.h5` file "
                         "(for a TensorFlow SavedModel directory, load it and save it as .keras first)")
    # Keras also reads a model saved as an unzipped directory holding config.json: leave that to it.
    if not (path.is_dir() and (path / "config.json").is_file()):
        if not path.is_file():
            raise ModelFileError(f"{path}: not a file. Pass a Keras 3 `.keras` file or a legacy `.h5` file.")
        problem = _file_problem(path)
        if problem:
            raise ModelFileError(f"{path}: {problem}")
    try:
        # compile=False: the optimizer and losses are not needed for inference and may not deserialize.
        # safe_mode: a .keras file may carry Python code (Lambda layers); Keras refuses to run it unless told
        return keras.models.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    except Exception as e:
        # Keras' messages often omit the file, and for a damaged file the cause is not obvious.
        if "safe_mode" in str(e):
            hint = ("The file holds Python code (e.g. a Lambda layer), which is not run by default: a model file "
                    "should not execute code when loaded. If you trust this file, pass "
                    "from_keras(path, safe_mode=False); better, replace the Lambda by a registered custom layer.")
        elif "truncated" in str(e):
            hint = "The file is incomplete (an interrupted save, download or copy): " + _RESAVE[0].lower() + _RESAVE[1:]
        elif "No model config" in str(e):
            hint = ("The file holds weights only (saved with model.save_weights): build the model in Python, "
                    "call model.load_weights on this file and pass the model itself to from_keras.")
        else:
            hint = ("If the model has custom layers, pass them with custom_objects={'Name': cls}; if the file is "
                    "truncated or damaged, re-save it with model.save('model.keras').")
        raise ModelFileError(f"{path}: Keras could not load this model file ({type(e).__name__}: {e}). {hint}") from e


def _example_from_spec(model):
    """Zeros shaped like the model's declared inputs (batch 1), and a function that turns them into
    the structure (array, list or dict) the model is called with.

    The example is an OrderedDict keyed by input name, in the model's input order: the generated
    C++ then takes its inputs in that order, under the names given to `keras.Input`.
    """
    import keras

    inputs = getattr(model, "inputs", None)
    # Functional models keep the structure they were built with (list or dict) in `input`;
    # a Sequential model has one input and raises AttributeError there until it has been called.
    spec = getattr(model, "input", None) if inputs else None
    if spec is None and inputs:
        spec = inputs[0] if len(inputs) == 1 else list(inputs)
    if spec is None:
        raise ValueError(f"{type(model).__name__} declares no inputs (a subclassed model): "
                         "pass example_input=... with the shape and dtype the model is called with (batch 1)")

    def zeros(t):
        shape = tuple(t.shape)
        if shape and shape[0] is None:
            shape = (1,) + shape[1:]
        if any(d is None for d in shape):
            raise ValueError(f"input {t.name!r} has a free dimension besides the batch ({tuple(t.shape)}): "
                             "the generated code needs static shapes, pass example_input=... of the size to use")
        return np.zeros(shape, np.dtype(t.dtype))

    if isinstance(spec, dict):
        keys, tensors = list(spec), list(spec.values())
        rebuild = dict
    elif isinstance(spec, (list, tuple)):
        keys, tensors = [getattr(t, "name", None) for t in spec], list(spec)
        rebuild = lambda x: [x[k] for k in keys]           # noqa: E731
    else:
        keys, tensors = [getattr(spec, "name", None)], [spec]
        rebuild = lambda x: x[keys[0]]                     # noqa: E731
    if not all(isinstance(t, keras.KerasTensor) for t in tensors) or len(set(keys)) != len(keys) or None in keys:
        return keras.tree.map_structure(zeros, spec), lambda x: x      # nested or unnamed: keep the structure
    return OrderedDict((k, zeros(t)) for k, t in zip(keys, tensors)), rebuild


def _unique_paths(variables) -> list:
    paths, seen = [], {}
    for v in variables:
        p = v.path
        if p in seen:          # two variables with one path (rare: reused names in nested models)
            seen[p] += 1
            p = f"{p}_{seen[p]}"
        else:
            seen[p] = 0
        paths.append(p)
    return paths


class KerasFunction(NamedTuple):
    """A Keras model as the three things `convert` takes, plus the name the model goes by."""
    fn: Callable          # fn(params, x): the model in inference mode
    params: dict          # Keras variable path -> array
    example_input: Any
    name: str             # the file's stem, or the model's own name
    output_names: list | None = None   # Keras' names of a list of outputs (a dict's keys name themselves)


def _output_names(model) -> list | None:
    """The layer names of a Functional model's outputs when it returns a list of several (`o1`,
    `o2`): the header's outputs keep them. A dict of outputs is named by its keys already."""
    outputs, names = getattr(model, "outputs", None), getattr(model, "output_names", None)
    if isinstance(getattr(model, "output", None), dict) or not outputs or len(outputs) < 2:
        return None
    if not names or len(names) != len(outputs) or len(set(names)) != len(names):
        return None
    return list(names)


def keras_function(model_or_path, example_input=None, custom_objects=None, safe_mode: bool = True,
                   call_kwargs=None) -> KerasFunction:
    """The pure function, params and example input `from_keras` converts, without converting them.

    For callers that need the function itself, e.g. `jaxpr2sofie inspect` listing the primitives of
    a model that does not convert, or `bench` timing it under XLA. Arguments as for `from_keras`.
    """
    keras = _keras()
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        model = _load(keras, path, custom_objects, safe_mode)
        default_name = path.stem
    else:
        model = model_or_path
        default_name = getattr(model, "name", None)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"from_keras expects a Keras 3 model or a path to a .keras/.h5 file, "
                        f"got {type(model).__name__}")

    if example_input is None:
        example_input, arrange = _example_from_spec(model)
    else:
        arrange = lambda x: x     # noqa: E731
    if not model.built:
        model(arrange(example_input))   # a subclassed model creates its variables on its first call

    trainable, non_trainable = model.trainable_variables, model.non_trainable_variables
    paths = _unique_paths(list(trainable) + list(non_trainable))
    t_paths, n_paths = paths[:len(trainable)], paths[len(trainable):]
    params = {p: np.asarray(keras.ops.convert_to_numpy(v.value)) for p, v in zip(paths, [*trainable, *non_trainable])}
    # Pass training=False only to a call() that takes it: stateless_call hands its kwargs to call().
    call_params = inspect.signature(model.call).parameters
    kwargs = {"training": False} if "training" in call_params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in call_params.values()) else {}
    kwargs.update(call_kwargs or {})

    def keras_model(p, x):
        trainable_values, non_trainable_values = [p[k] for k in t_paths], [p[k] for k in n_paths]
        outputs, _ = model.stateless_call(trainable_values, non_trainable_values, arrange(x), **kwargs)
        return outputs

    return KerasFunction(keras_model, params, example_input, default_name or "KerasModel", _output_names(model))


def from_keras(model_or_path, example_input=None, name: str | None = None, custom_objects=None,
               safe_mode: bool = True, batch: str | None = None, max_batch: int | None = None,
               blas: str = "auto", *, disable_passes=(), progress: bool | None = None, output_names=None,
               call_kwargs: dict | None = None, **unknown):
    """Convert a Keras 3 model (an in-memory model, or a `.keras` / legacy `.h5` file) on the JAX backend.

    Sequential, Functional and subclassed models; several inputs (list or dict) and outputs.
    `example_input` fixes the input shapes and dtypes; by default it is built from `model.inputs`
    with batch size 1 (subclassed models have no declared inputs and need it), and the compiled
    model then takes its inputs in the order of `model.inputs`, named after each `keras.Input`
    in the C++. Outputs keep their Keras names: a dict of outputs by its keys (the compiled model
    returns that dict), a list by its output layers' names (`o1`, `o2`; returned as a tuple), unless
    `output_names` says otherwise. `custom_objects` is handed to `keras.models.load_model` for files;
    `safe_mode=True` (Keras' default, kept) refuses files that carry Python code such as Lambda layers.
    Inference mode: Dropout is the identity, BatchNormalization uses its moving statistics
    (`training=False`); `call_kwargs` adds arguments for the model's own `call`. Weights are named by
    their Keras variable path. Every other keyword is an option of `convert` with the same meaning
    (`batch="dynamic"`, `max_batch`, `blas`, `progress`, `disable_passes`); an unknown one is a
    `TypeError` naming it. Returns a `SofieModel` (see `convert`).

    A file that does not exist raises FileNotFoundError; one Keras cannot read (empty, truncated,
    not a zip archive or not HDF5, a .keras/.h5 name on the other format) raises `ModelFileError`
    (a ValueError) naming the file, what is wrong with it and what to do.

    Keras must run on the JAX backend: if Keras is not imported yet this sets KERAS_BACKEND=jax;
    if it was imported with another backend, `KerasBackendError` says what to do.

    >>> import os; os.environ["KERAS_BACKEND"] = "jax"      # before Keras is imported
    >>> import keras, numpy as np, jaxpr2sofie as j2s
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> m = j2s.from_keras(model, name="Tagger")      # or j2s.from_keras("tagger.keras")
    >>> x = np.ones((1, 8), np.float32)
    >>> bool(np.allclose(m.compile()(x), model.predict(x, verbose=0), atol=1e-5))
    True
    """
    from .model import convert, model_name

    from .options import forwarded, reject_unknown
    reject_unknown("from_keras", unknown, own=("custom_objects", "safe_mode", "call_kwargs"))
    kf = keras_function(model_or_path, example_input, custom_objects, safe_mode, call_kwargs)
    options = forwarded(locals())
    if options["output_names"] is None:
        options["output_names"] = kf.output_names
    return convert(kf.fn, kf.params, kf.example_input, name=model_name(name, kf.name), **options)
