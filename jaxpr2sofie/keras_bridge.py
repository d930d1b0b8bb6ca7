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
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import KerasBackendError

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


def _load(keras, path: Path, custom_objects):
    if not path.exists():
        raise FileNotFoundError(f"no Keras model file at {path}")
    if path.suffix.lower() not in _LOADABLE:
        raise ValueError(f"{path.name}: expected a Keras 3 `.keras` file or a legacy `.h5` file "
                         "(for a TensorFlow SavedModel directory, load it and save it as .keras first)")
    # compile=False: the optimizer and losses are not needed for inference and may not deserialize.
    return keras.models.load_model(path, custom_objects=custom_objects, compile=False)


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


def from_keras(model_or_path, example_input=None, name: str | None = None, custom_objects=None):
    """Convert a Keras 3 model (an in-memory model, or a `.keras` / legacy `.h5` file) on the JAX backend.

    Sequential, Functional and subclassed models; several inputs (list or dict) and outputs.
    `example_input` fixes the input shapes and dtypes; by default it is built from `model.inputs`
    with batch size 1 (subclassed models have no declared inputs and need it), and the compiled
    model then takes its inputs in the order of `model.inputs`, named after each `keras.Input`
    in the C++. Outputs come back in the flattened order of the model's outputs (a dict: sorted
    keys). `custom_objects` is handed to `keras.models.load_model` for files. Inference mode:
    Dropout is the identity, BatchNormalization uses its moving statistics. Weights are named by
    their Keras variable path. Returns a `SofieModel` (see `convert`).

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
    keras = _keras()
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        model = _load(keras, path, custom_objects)
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

    from .model import convert

    trainable, non_trainable = model.trainable_variables, model.non_trainable_variables
    paths = _unique_paths(list(trainable) + list(non_trainable))
    t_paths, n_paths = paths[:len(trainable)], paths[len(trainable):]
    params = {p: np.asarray(keras.ops.convert_to_numpy(v.value)) for p, v in zip(paths, [*trainable, *non_trainable])}
    # Pass training=False only to a call() that takes it: stateless_call hands its kwargs to call().
    call_params = inspect.signature(model.call).parameters
    kwargs = {"training": False} if "training" in call_params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in call_params.values()) else {}

    def keras_model(p, x):
        trainable_values, non_trainable_values = [p[k] for k in t_paths], [p[k] for k in n_paths]
        outputs, _ = model.stateless_call(trainable_values, non_trainable_values, arrange(x), **kwargs)
        return outputs

    return convert(keras_model, params, example_input, name=name or default_name or "KerasModel")
