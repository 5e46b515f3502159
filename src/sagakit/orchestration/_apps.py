"""Find the user's saga definitions from a ``module:attribute`` reference (``--app``).

A process that resumes sagas it did not start (``sagakit worker``) needs the definitions
in code: the log names them only by ``name@version``. The attribute may be a
:class:`~sagakit.orchestration.Saga`, a list or tuple of them, or a callable returning either (so
an application can build its sagas around services it opens at start-up).
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from sagakit.errors import AppReferenceError
from sagakit.orchestration._definition import Saga

T = TypeVar("T")


def load_sagas(reference: str) -> list[Saga]:
    """The sagas ``reference`` (``package.module:attribute``) points at."""
    return load_definitions(reference, (Saga,), "a Saga")


def load_definitions(reference: str, kinds: tuple[type[T], ...], what: str) -> list[T]:
    """The objects of ``kinds`` (described as ``what``) that ``reference`` points at: one,
    a non-empty list or tuple of them, or what a callable there returns."""
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise AppReferenceError(f"--app must look like module:attribute, not {reference!r}")
    target = _attribute(_module(module_name), module_name, attribute)
    if callable(target) and not isinstance(target, kinds):
        try:
            target = target()
        except Exception as error:
            raise AppReferenceError(
                f"calling {reference} failed: {type(error).__name__}: {error}"
            ) from error
    if isinstance(target, kinds):
        return [target]
    if isinstance(target, list | tuple) and target and all(isinstance(t, kinds) for t in target):
        return list(target)
    raise AppReferenceError(
        f"{reference} is {type(target).__name__}, not {what}, a non-empty list or tuple of "
        "them, or a callable returning one"
    )


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise AppReferenceError(f"cannot import module {name!r}: {error}") from error
    except Exception as error:
        raise AppReferenceError(
            f"importing module {name!r} failed: {type(error).__name__}: {error}"
        ) from error


def _attribute(module: Any, module_name: str, path: str) -> Any:
    target = module
    for part in path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppReferenceError(f"module {module_name!r} has no attribute {path!r}") from None
    return target
