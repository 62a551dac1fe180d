"""Entry strings naming user code: ``pkg.mod:objective``, ``./my_task.py:objective``,
``/abs/x.py:Task``, ``tasks/gpt.py:TinyGPT``, ``pkg.mod:Outer.attr``.

* :func:`parse_entry`: split at the **last** ``:``; the right side is a dotted Python name, the
  left a **file** (ends in ``.py`` or :func:`~evoopt.fileio.names_a_path`) or a dotted **module**
  name. Anything else is None, so shipped task names and TOML paths (``C:\\t\\x.toml``) fall back
  to :func:`~evoopt.fitness.task.load_task`. A relative file resolves against ``base_dir`` (the
  folder of the file naming it), else the cwd; the :class:`EntryRef` holds it absolute.
* :func:`load_entry`: import and return the object. A file loads as the module
  ``evoopt_user.<stem>_<sha8(path)>`` (two ``task.py`` never collide; what they define pickles by
  reference in any process that loaded the entry), with its folder on ``sys.path``.
* :func:`source_sha256`: the hash of an entry's source, to notice an edited task on resume.
* :func:`entry_of`: the entry string of a module-level function or class.

Errors are :class:`~evoopt.fitness.task.TaskError` (field ``entry``) with one-line messages;
import failures are :class:`EntryImportError` and name ``file:line``. Imports neither torch nor
ray.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import keyword
import os
import sys
import threading
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evoopt.fileio import PATH_SUFFIXES, names_a_path
from evoopt.fitness.task import TaskError

#: The package that file entries are imported under (``evoopt_user.task_1a2b3c4d``).
USER_PACKAGE = "evoopt_user"
#: Longest exception message quoted in an error.
_MAX_MESSAGE = 300
#: Public names listed when an attribute is missing.
_MAX_NAMES = 10
_LOCK = threading.RLock()
_THIS_FILE = os.path.normcase(os.path.abspath(__file__))
_IMPORTLIB_DIR = os.path.normcase(os.path.dirname(os.path.abspath(importlib.__file__ or "")))


class EntryImportError(TaskError):
    """User code that failed to import. ``entry`` is the entry text; ``location`` the
    ``file:line`` of the failure when known."""

    def __init__(self, message: str, entry: str, location: str | None = None) -> None:
        self.entry = entry
        self.location = location
        super().__init__("entry", message)


def _is_dotted_name(text: str) -> bool:
    """Whether ``text`` is ``a``, ``a.b``, ...: identifiers that are not keywords."""
    return bool(text) and all(p.isidentifier() and not keyword.iskeyword(p)
                              for p in text.split("."))


@dataclass(frozen=True, kw_only=True)
class EntryRef:
    """A parsed entry: ``kind`` "module" (``module`` set) or "file" (absolute ``path`` set),
    and the dotted ``attr`` to fetch from it."""

    kind: Literal["module", "file"]
    attr: str
    module: str | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if not _is_dotted_name(self.attr):
            raise TaskError("entry", f"{self.attr!r} is not a dotted Python name")
        if self.kind == "module":
            if self.module is None or not _is_dotted_name(self.module) or self.path is not None:
                raise TaskError("entry", f"a module entry needs a dotted module name, "
                                f"got {self.module!r}")
        elif self.kind == "file":
            if self.path is None or not Path(self.path).is_absolute() or self.module is not None:
                raise TaskError("entry", f"a file entry needs an absolute path, got {self.path!r}")
        else:
            raise TaskError("entry", f"kind must be 'module' or 'file', got {self.kind!r}")

    @property
    def text(self) -> str:
        """The canonical entry string (absolute path for a file): what configs store."""
        return f"{self.path if self.kind == 'file' else self.module}:{self.attr}"

    def __str__(self) -> str:
        return self.text


def parse_entry(text: str, base_dir: str | os.PathLike[str] | None = None) -> EntryRef | None:
    """The :class:`EntryRef` of ``text``, or None when it is not entry-shaped (no ``:``, a
    right side that is not a dotted name, a left side neither file nor module).

    ``TaskError("entry", ...)`` for entry-shaped but invalid text: nothing after the ``:``
    (``x.py:``), nothing before it (``:f``), a ``.py`` file followed by a non-name
    (``x.py:1bad``), a ``.toml``/``.json`` file. A relative file resolves against ``base_dir``,
    else the cwd; ``~`` is expanded."""
    if not isinstance(text, str) or ":" not in text:
        return None
    text = text.strip()
    left, _, attr = text.rpartition(":")
    is_file = left.endswith(".py") or names_a_path(left)
    if not is_file and not _is_dotted_name(left):
        if left or not _is_dotted_name(attr):
            return None
        raise TaskError("entry", f"{text!r}: nothing before ':' (write MODULE:{attr} "
                        f"or FILE.py:{attr})")
    if not _is_dotted_name(attr):
        if not attr:
            raise TaskError("entry", f"{text!r}: no name after ':' (write {left}:NAME, e.g. "
                            f"{left}:objective)")
        if not left.endswith(".py"):
            return None
        raise TaskError("entry", f"{text!r}: {attr!r} after ':' is not a dotted Python name")
    if not is_file:
        return EntryRef(kind="module", module=left, attr=attr)
    if left.endswith(PATH_SUFFIXES):
        raise TaskError("entry", f"{text!r}: {left} is not Python code; an entry names a .py "
                        "file or a module (a task TOML is given without ':NAME')")
    try:
        path = Path(left).expanduser()
        if not path.is_absolute():
            base = Path(base_dir).expanduser() if base_dir is not None else Path.cwd()
            path = base / path
        path = path.resolve()
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a symlink loop, no home
        raise TaskError("entry", f"{text!r}: not a usable path ({e})") from None
    return EntryRef(kind="file", path=path, attr=attr)


def is_entry(text: object) -> bool:
    """Whether ``text`` is entry-shaped: parses to an entry, or is an invalid one
    (``x.py:``) that :func:`load_entry` should report rather than the task loader."""
    if not isinstance(text, str):
        return False
    try:
        return parse_entry(text) is not None
    except TaskError:
        return True


def _as_ref(ref_or_text: EntryRef | str, base_dir: str | os.PathLike[str] | None) -> EntryRef:
    if isinstance(ref_or_text, EntryRef):
        return ref_or_text
    ref = parse_entry(ref_or_text, base_dir)
    if ref is None:
        raise TaskError("entry", f"{ref_or_text!r} is not an entry (write MODULE:NAME or "
                        "FILE.py:NAME)")
    return ref


def user_module_name(path: str | os.PathLike[str]) -> str:
    """The ``sys.modules`` name a file entry at the absolute ``path`` is imported under."""
    p = Path(path)
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in p.stem) or "_"
    if not stem.isidentifier():
        stem = f"_{stem}"
    digest = hashlib.sha256(os.fsencode(str(p))).hexdigest()[:8]
    return f"{USER_PACKAGE}.{stem}_{digest}"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


def _location(exc: BaseException, prefer: str | None = None) -> str | None:
    """``file:line`` of the innermost traceback frame inside the user's file: ``prefer`` when
    given, else the first file the import ran (the module body). Falls back to the innermost
    frame that is neither importlib's nor this module's."""

    def machinery(filename: str) -> bool:
        if filename.startswith("<frozen"):
            return True
        path = os.path.normcase(os.path.abspath(filename))
        return path == _THIS_FILE or os.path.dirname(path) == _IMPORTLIB_DIR

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not machinery(f.filename)]
    if not frames:
        return None
    user = prefer if prefer is not None else frames[0].filename
    inside = [f for f in frames if f.filename == user]
    frame = (inside or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def _import_error(exc: BaseException, subject: str, entry: str,
                  prefer: str | None = None) -> EntryImportError:
    """The :class:`EntryImportError` for ``exc`` raised while importing ``subject``."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else None
        detail = f"{type(exc).__name__}: {_one_line(str(exc.msg))}"
        return EntryImportError(f"cannot import {subject}: {where}: {detail}" if where
                                else f"cannot import {subject}: {detail}", entry, where)
    where = _location(exc, prefer)
    at = f" (at {where})" if where else ""
    if isinstance(exc, ModuleNotFoundError):
        return EntryImportError(f"cannot import {subject}: an import inside it failed: no "
                                f"module named {exc.name!r}{at}", entry, where)
    message = _one_line(str(exc))
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return EntryImportError(f"cannot import {subject}: {detail}{at}", entry, where)


def _user_package() -> types.ModuleType:
    """The (empty) parent package of file entries, so pickle can import their modules."""
    package = sys.modules.get(USER_PACKAGE)
    if package is None:
        package = types.ModuleType(USER_PACKAGE, "User code loaded by evoopt from files.")
        package.__path__ = []
        sys.modules[USER_PACKAGE] = package
    return package


def _add_to_path(folder: Path) -> None:
    """Put ``folder`` at the front of ``sys.path`` unless it is already on it."""
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


#: environment variable naming the driver's folder of user task files, on workers that run in a
#: copy of it (a Ray cluster's ``working_dir``): an absolute entry under it that does not exist
#: on the worker is read from the same relative path under the worker's working directory
ENTRY_ROOT_VAR = "EVOOPT_ENTRY_ROOT"


def shipped_path(path: Path) -> Path:
    """``path``, or its copy under the working directory when ``path`` is missing here and lies
    under :data:`ENTRY_ROOT_VAR` (the folder a Ray cluster's ``working_dir`` shipped)."""
    root = os.environ.get(ENTRY_ROOT_VAR)
    if path.exists() or not root:
        return path
    try:
        relative = path.relative_to(root)
    except ValueError:
        return path
    return Path.cwd() / relative


def _check_file(ref: EntryRef) -> Path:
    assert ref.path is not None
    path = shipped_path(ref.path)
    if not path.exists():
        raise TaskError("entry", f"file not found: {path} (entry {ref.text})")
    if not path.is_file():
        raise TaskError("entry", f"not a file: {path} (entry {ref.text})")
    return path


def _import_file(ref: EntryRef) -> types.ModuleType:
    path = _check_file(ref)
    name = user_module_name(path)
    with _LOCK:
        _add_to_path(path.parent)
        cached = sys.modules.get(name)
        if cached is not None:
            return cached
        package = _user_package()
        loader = importlib.machinery.SourceFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            loader.exec_module(module)
        except (Exception, SystemExit) as e:
            sys.modules.pop(name, None)
            raise _import_error(e, str(path), ref.text, prefer=str(path)) from e
        setattr(package, name.rpartition(".")[2], module)
        return module


def _file_hint(module: str, attr: str, base_dir: str | os.PathLike[str] | None) -> str:
    """How to load the file a missing module name would be, when that file exists."""
    rel = module.replace(".", "/") + ".py"
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        found = (base / rel).is_file()
    except (OSError, ValueError):
        found = False
    return f"; to load the file {base / rel}, write ./{rel}:{attr}" if found else ""


def _import_module(ref: EntryRef, base_dir: str | os.PathLike[str] | None = None
                   ) -> types.ModuleType:
    name = ref.module
    assert name is not None
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise EntryImportError(f"module {name!r} not found (no module named {missing!r}; "
                                   f"entry {ref.text}){_file_hint(name, ref.attr, base_dir)}",
                                   ref.text) from e
        where = _location(e)
        at = f" (at {where})" if where else ""
        raise EntryImportError(f"module {name!r} was found, but an import inside it failed: "
                               f"no module named {missing!r}{at}", ref.text, where) from e
    except (Exception, SystemExit) as e:
        raise _import_error(e, f"module {name!r}", ref.text) from e


def _public_names(obj: object) -> list[str]:
    if isinstance(obj, types.ModuleType):
        names = [k for k, v in vars(obj).items() if not isinstance(v, types.ModuleType)]
    else:
        names = dir(obj)
    return sorted(n for n in names if not n.startswith("_"))


def _get_attr(root: object, ref: EntryRef, where: str) -> object:
    obj = root
    done: list[str] = []
    for part in ref.attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = _public_names(obj)
            owner = f"`{'.'.join(done)}` in {where}" if done else where
            close = difflib.get_close_matches(part, names, n=1)
            guess = f" (did you mean `{close[0]}`?)" if close else ""
            shown = ", ".join(names[:_MAX_NAMES]) + (", ..." if len(names) > _MAX_NAMES else "")
            raise TaskError("entry", f"{owner} has no attribute `{part}`{guess}; it has: "
                            f"{shown or 'no public names'} (entry {ref.text})") from None
        except Exception as e:
            raise _import_error(e, f"{ref.text} (getting `{part}`)", ref.text) from e
        done.append(part)
    return obj


def _module_of(ref: EntryRef, base_dir: str | os.PathLike[str] | None = None
               ) -> types.ModuleType:
    return _import_file(ref) if ref.kind == "file" else _import_module(ref, base_dir)


def load_entry(ref_or_text: EntryRef | str,
               base_dir: str | os.PathLike[str] | None = None) -> object:
    """The object an entry names, its module imported (a file once per path; see the module
    docstring). ``TaskError("entry", ...)`` when it cannot be (:class:`EntryImportError` when
    the import itself fails)."""
    ref = _as_ref(ref_or_text, base_dir)
    module = _module_of(ref, base_dir)
    where = str(ref.path) if ref.kind == "file" else f"module `{ref.module}`"
    return _get_attr(module, ref, where)


def source_sha256(ref_or_text: EntryRef | str,
                  base_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The sha256 (hex) of an entry's source: a file entry's bytes, a module entry's
    ``__file__`` (the module is imported; None when it has no file, e.g. ``sys``)."""
    ref = _as_ref(ref_or_text, base_dir)
    if ref.kind == "file":
        path = _check_file(ref)
    else:
        file = getattr(_import_module(ref, base_dir), "__file__", None)
        if not file or not os.path.isfile(file):
            return None
        path = Path(file)
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise TaskError("entry", f"cannot read {path} ({e.strerror or e})") from None


def _unguarded_names(tree: ast.Module) -> set[str] | None:
    """Names a module binds at top level outside ``if __name__ == "__main__":`` blocks (None
    when a ``from x import *`` makes that unknowable)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.partition(".")[0])
            elif isinstance(node, ast.If) and any(
                    isinstance(n, ast.Constant) and n.value == "__main__"
                    for n in ast.walk(node.test)):
                if not visit(node.orelse):
                    return False
            elif isinstance(node, ast.If | ast.For | ast.While | ast.With | ast.Try):
                blocks = [getattr(node, k, []) for k in ("body", "orelse", "finalbody")]
                blocks += [h.body for h in getattr(node, "handlers", [])]
                if not all(visit(b) for b in blocks):
                    return False
            else:
                for n in ast.walk(node):
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                        names.add(n.id)
        return True

    return names if visit(tree.body) else None


def _refuse(obj: object, why: str) -> TaskError:
    name = getattr(obj, "__name__", None)
    name = name if isinstance(name, str) and name.isidentifier() else "objective"
    return TaskError("entry", f"{why}; define `{name}` at module level (workers import it "
                     "by name)")


def _main_entry(obj: object, main: types.ModuleType, qualname: str) -> str:
    """The entry of ``obj`` defined in the running script (``__main__``)."""
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":  # python -m pkg.mod
        return f"{spec.name}:{qualname}"
    file = getattr(main, "__file__", None)
    if not file or not os.path.isfile(file):
        raise _refuse(obj, f"`{qualname}` is defined in an interactive session, not in a "
                      "script file")
    path = Path(file).resolve()
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError) as e:
        raise TaskError("entry", f"cannot read the script {path} ({e})") from None
    names = _unguarded_names(tree)
    top = qualname.partition(".")[0]
    if names is not None and top not in names:
        raise _refuse(obj, f"`{top}` is not defined at the top level of {path} (inside "
                      "`if __name__ == \"__main__\":` workers never see it)")
    return f"{path}:{qualname}"


def entry_of(obj: object) -> str:
    """The entry string that loads ``obj`` again, a function or class defined at module
    level: ``module:qualname``, or ``/abs/file.py:qualname`` for one defined in the running
    script (``__main__``) or in a file loaded by :func:`load_entry`. ``TaskError("entry", ...)``
    for a lambda, a closure or nested definition, or an object not found again under its
    name."""
    qualname = getattr(obj, "__qualname__", None)
    module_name = getattr(obj, "__module__", None)
    if not isinstance(qualname, str) or not isinstance(module_name, str):
        raise _refuse(obj, f"{type(obj).__name__} {obj!r:.60} has no module-level name")
    if "<lambda>" in qualname:
        raise _refuse(obj, "a lambda has no name workers can import")
    if "<" in qualname:
        raise _refuse(obj, f"`{qualname}` is defined inside a function")
    module = sys.modules.get(module_name)
    if module is None:
        raise _refuse(obj, f"its module {module_name!r} is not imported")
    try:
        found: object = module
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        found = None
    if found is not obj:
        raise _refuse(obj, f"`{module_name}:{qualname}` does not name this object (it was "
                      "redefined, replaced or decorated)")
    if module_name == "__main__":
        return _main_entry(obj, module, qualname)
    file = getattr(module, "__file__", None)
    if module_name.startswith(USER_PACKAGE + ".") and file:
        return f"{Path(file).resolve()}:{qualname}"
    return f"{module_name}:{qualname}"


__all__ = [
    "EntryImportError", "EntryRef", "USER_PACKAGE", "entry_of", "is_entry", "load_entry",
    "parse_entry", "source_sha256", "user_module_name",
]
