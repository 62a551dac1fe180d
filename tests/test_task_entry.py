"""Entry strings naming user code (``evoopt.fitness.entry``): grammar, path resolution, loading
files as distinct modules, error messages, source hashes, ``entry_of`` and pickling.

Decision: ``x.py:1bad`` (a ``.py`` file, then text that is not a dotted name) is an error, not
None: the left side is unmistakably an entry. ``mod:1bad`` (no ``.py``) is None and falls back
to the task loader, as does ``C:\\x.toml``."""

from __future__ import annotations

import ast
import importlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from evoopt.fitness.entry import (
    USER_PACKAGE,
    EntryImportError,
    EntryRef,
    entry_of,
    is_entry,
    load_entry,
    parse_entry,
    source_sha256,
    user_module_name,
)
from evoopt.fitness.task import TaskError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_imports(tmp_path: Path) -> Iterator[None]:
    """Drop the modules a test loads (file entries, modules under ``tmp_path``) and restore
    ``sys.path``."""
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - saved_modules:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if name.startswith(USER_PACKAGE) or file.startswith(str(tmp_path)):
            del sys.modules[name]
    importlib.invalidate_caches()


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


# --- grammar -------------------------------------------------------------------------------

BASE = Path("/base/dir")


@pytest.mark.parametrize(("text", "kind", "where", "attr"), [
    ("pkg.mod:objective", "module", "pkg.mod", "objective"),
    ("json:dumps", "module", "json", "dumps"),
    ("a.b:c.d", "module", "a.b", "c.d"),
    ("pkg.mod:Outer.attr", "module", "pkg.mod", "Outer.attr"),
    ("./f.py:objective", "file", "/base/dir/f.py", "objective"),
    ("f.py:objective", "file", "/base/dir/f.py", "objective"),
    ("sub/f.py:Cls", "file", "/base/dir/sub/f.py", "Cls"),
    ("../up/f.py:Cls", "file", "/base/up/f.py", "Cls"),
    ("/abs/x.py:Task", "file", "/abs/x.py", "Task"),
    ("./script:main", "file", "/base/dir/script", "main"),  # a path without .py
    ("  ./f.py:objective  ", "file", "/base/dir/f.py", "objective"),
])
def test_entry_grammar(text: str, kind: str, where: str, attr: str) -> None:
    ref = parse_entry(text, base_dir=BASE)
    assert ref is not None
    assert (ref.kind, ref.attr) == (kind, attr)
    if kind == "module":
        assert (ref.module, ref.path) == (where, None)
        assert ref.text == f"{where}:{attr}"
    else:
        assert (ref.module, ref.path) == (None, Path(where))
        assert ref.text == f"{where}:{attr}"
    assert parse_entry(ref.text) == ref  # the canonical text needs no base_dir
    assert is_entry(text)


def test_home_is_expanded() -> None:
    ref = parse_entry("~/tasks/t.py:fn")
    assert ref is not None and ref.path == Path.home().resolve() / "tasks" / "t.py"


@pytest.mark.parametrize("text", [
    "cifar10-cpu", "lion", "foo.toml", "fitness/foo.toml", "./foo.toml", "",
    "C:\\x.toml", "C:\\t\\x.toml", "D:/tasks/x.toml", "C:\\dir\\x.py",
    "my-task:objective",       # left is neither a path nor a module name
    "pkg.mod:1bad", "mod:a-b", "mod:a..b", "mod:class",  # no .py: not an entry
    ":", "http://example.com/x",
])
def test_not_entries(text: str) -> None:
    assert parse_entry(text) is None
    assert not is_entry(text)


@pytest.mark.parametrize(("text", "says"), [
    ("x.py:", "no name after ':'"),
    ("pkg.mod:", "no name after ':'"),
    ("x.py:1bad", "not a dotted Python name"),
    ("x.py:class", "not a dotted Python name"),
    ("./x.py:a..b", "not a dotted Python name"),
    (":objective", "nothing before ':'"),
    ("tasks/x.toml:objective", "not Python code"),
])
def test_invalid_entries(text: str, says: str) -> None:
    with pytest.raises(TaskError, match=says) as info:
        parse_entry(text)
    assert info.value.field == "entry"
    assert is_entry(text)  # entry-shaped: the entry loader reports it, not the task loader
    with pytest.raises(TaskError, match=says):
        load_entry(text)


def test_entry_ref_checks_itself() -> None:
    with pytest.raises(TaskError, match="absolute path"):
        EntryRef(kind="file", path=Path("rel/x.py"), attr="f")
    with pytest.raises(TaskError, match="dotted module name"):
        EntryRef(kind="module", module="my-mod", attr="f")
    with pytest.raises(TaskError, match="dotted Python name"):
        EntryRef(kind="module", module="m", attr="")
    assert str(EntryRef(kind="module", module="m", attr="f")) == "m:f"


def test_not_an_entry_is_refused_by_load_entry() -> None:
    with pytest.raises(TaskError, match="is not an entry"):
        load_entry("cifar10-cpu")


def test_entry_module_imports_neither_torch_nor_ray() -> None:
    import evoopt.fitness.entry as entry

    tree = ast.parse(Path(entry.__file__).read_text())
    imported = {alias.name.partition(".")[0] for node in tree.body
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in (node.names if isinstance(node, ast.Import)
                              else [ast.alias(node.module or "")])}
    assert not imported & {"torch", "ray"}


# --- paths ---------------------------------------------------------------------------------

def test_relative_file_resolves_against_base_dir_else_cwd(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    campaign_dir = tmp_path / "campaign"
    elsewhere = tmp_path / "elsewhere"
    write(campaign_dir / "task.py", "WHO = 'campaign'\n")
    write(elsewhere / "task.py", "WHO = 'elsewhere'\n")
    monkeypatch.chdir(elsewhere)
    by_base = parse_entry("./task.py:WHO", base_dir=campaign_dir)
    by_cwd = parse_entry("./task.py:WHO")
    assert by_base is not None and by_base.path == (campaign_dir / "task.py").resolve()
    assert by_cwd is not None and by_cwd.path == (elsewhere / "task.py").resolve()
    assert load_entry("./task.py:WHO", base_dir=campaign_dir) == "campaign"
    assert load_entry("./task.py:WHO") == "elsewhere"
    monkeypatch.chdir(tmp_path)  # the stored (absolute) text ignores the cwd
    assert load_entry(by_base.text) == "campaign"


def test_relative_base_dir_is_taken_from_the_cwd(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "cfg" / "t.py", "X = 1\n")
    monkeypatch.chdir(tmp_path)
    ref = parse_entry("t.py:X", base_dir="cfg")
    assert ref is not None and ref.path == (tmp_path / "cfg" / "t.py").resolve()


# --- loading files -------------------------------------------------------------------------

def test_two_task_files_are_distinct_modules(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "task.py", "class Task:\n    WHO = 'a'\n")
    b = write(tmp_path / "b" / "task.py", "class Task:\n    WHO = 'b'\n")
    task_a, task_b = load_entry(f"{a}:Task"), load_entry(f"{b}:Task")
    assert task_a is not task_b
    assert (task_a.WHO, task_b.WHO) == ("a", "b")
    assert task_a.__module__ != task_b.__module__
    assert task_a.__module__ == user_module_name(a.resolve())
    assert task_a.__module__.startswith(f"{USER_PACKAGE}.task_")
    assert sys.modules[task_a.__module__].__file__ == str(a.resolve())


def test_the_same_path_loads_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "once.py", "TOKEN = object()\n")
    monkeypatch.chdir(tmp_path)
    first = load_entry(f"{f}:TOKEN")
    assert load_entry("./once.py:TOKEN") is first
    assert load_entry("once.py:TOKEN", base_dir=tmp_path) is first


def test_a_helper_next_to_the_file_is_importable(tmp_path: Path) -> None:
    write(tmp_path / "task_helper_xq.py", "def width():\n    return 64\n")
    f = write(tmp_path / "task.py", "import task_helper_xq\nWIDTH = task_helper_xq.width()\n")
    assert load_entry(f"{f}:WIDTH") == 64
    load_entry(f"{f}:WIDTH")
    assert sys.path[0] == str(tmp_path.resolve())
    assert sys.path.count(str(tmp_path.resolve())) == 1


def test_module_entries_import_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_entry("json:dumps") is json.dumps
    assert load_entry("os.path:join") is os.path.join
    write(tmp_path / "mypkg_xq" / "__init__.py", "")
    write(tmp_path / "mypkg_xq" / "mod.py", "class Outer:\n    attr = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_entry("mypkg_xq.mod:Outer.attr") == 42


# --- errors --------------------------------------------------------------------------------

def test_missing_file_names_the_resolved_path(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError, match="file not found") as info:
        load_entry("./sub/../nope.py:objective")
    assert str((tmp_path / "nope.py").resolve()) in str(info.value)
    (tmp_path / "dir.py").mkdir()
    with pytest.raises(TaskError, match="not a file"):
        load_entry("./dir.py:objective")


def test_missing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EntryImportError, match="module 'no_such_mod_xq' not found"):
        load_entry("no_such_mod_xq:objective")
    with pytest.raises(EntryImportError, match="module 'json.no_such_xq' not found"):
        load_entry("json.no_such_xq:objective")
    write(tmp_path / "loose_xq.py", "def objective(trial):\n    return 0.0\n")
    monkeypatch.chdir(tmp_path)  # a file of that name here: the hint says how to load it
    with pytest.raises(EntryImportError, match=r"write \./loose_xq\.py:objective"):
        load_entry("loose_xq:objective")


def test_missing_inner_import_is_told_apart(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    mod = write(tmp_path / "needs_dep_xq.py", "import os\nimport no_such_dep_xq\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EntryImportError) as info:
        load_entry("needs_dep_xq:X")
    message = str(info.value)
    assert "was found, but an import inside it failed" in message
    assert "'no_such_dep_xq'" in message and f"{mod}:2" in message
    assert info.value.location == f"{mod}:2"
    f = write(tmp_path / "filetask.py", "\nimport no_such_dep_xq\n")
    with pytest.raises(EntryImportError, match="an import inside it failed") as info:
        load_entry(f"{f}:X")
    assert "'no_such_dep_xq'" in str(info.value) and f"{f.resolve()}:2" in str(info.value)
    raising = write(tmp_path / "raising_mod_xq.py", "X = 1\nY = 1 / 0\n")
    with pytest.raises(EntryImportError, match=f"ZeroDivisionError: division by zero "
                       f"\\(at {raising}:2\\)"):
        load_entry("raising_mod_xq:X")


def test_missing_attribute_lists_the_names(tmp_path: Path) -> None:
    f = write(tmp_path / "task.py", """\
        import json
        def objective(trial):
            return 0.0
        class Task:
            pass
        _private = 1
        """)
    with pytest.raises(TaskError) as info:
        load_entry(f"{f}:objectiv")
    message = str(info.value)
    assert not isinstance(info.value, EntryImportError)
    assert "has no attribute `objectiv`" in message and "did you mean `objective`?" in message
    assert "it has: Task, objective" in message
    assert "_private" not in message and "json" not in message
    with pytest.raises(TaskError, match="`Task` in .* has no attribute `missing`"):
        load_entry(f"{f}:Task.missing")
    many = write(tmp_path / "many.py", "".join(f"n{i:02d} = {i}\n" for i in range(15)))
    with pytest.raises(TaskError, match=r"it has: n00, n01, .*, n09, \.\.\."):
        load_entry(f"{many}:nope")
    with pytest.raises(TaskError, match="module `json` has no attribute `dumpz`"):
        load_entry("json:dumpz")


def test_syntax_error_is_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "broken.py", "x = 1\n\ndef f(:\n    pass\n")
    with pytest.raises(EntryImportError, match="SyntaxError") as info:
        load_entry(f"{f}:f")
    assert f"{f.resolve()}:3:" in str(info.value)
    assert "\n" not in str(info.value)
    helper = write(tmp_path / "bad_helper_xq.py", "def g(\n")
    g = write(tmp_path / "uses_helper.py", "import bad_helper_xq\n")
    with pytest.raises(EntryImportError, match="SyntaxError") as info:
        load_entry(f"{g}:g")
    assert f"{helper.resolve()}:1:" in str(info.value)


def test_exception_at_import_points_into_the_user_file(tmp_path: Path) -> None:
    f = write(tmp_path / "raises.py", """\
        import json
        def setup():
            raise ValueError("bad\\nconfig")
        CONFIG = json.loads("{}")
        setup()
        """)
    with pytest.raises(EntryImportError) as info:
        load_entry(f"{f}:CONFIG")
    message = str(info.value)
    assert f"ValueError: bad config (at {f.resolve()}:3)" in message
    assert user_module_name(f.resolve()) not in sys.modules  # a failed import is not cached
    deep = write(tmp_path / "deep.py", "import json\n\nX = json.loads('{')\n")
    with pytest.raises(EntryImportError, match="JSONDecodeError") as info:
        load_entry(f"{deep}:X")
    assert str(info.value).endswith(f"(at {deep.resolve()}:3)")  # not json's own frame
    exits = write(tmp_path / "exits.py", "import sys\nsys.exit(2)\n")
    with pytest.raises(EntryImportError, match=f"SystemExit: 2 \\(at {exits.resolve()}:2\\)"):
        load_entry(f"{exits}:X")
    write(f, "CONFIG = {'fixed': True}\n")  # fixed: it loads now
    assert load_entry(f"{f}:CONFIG") == {"fixed": True}


# --- source hash ---------------------------------------------------------------------------

def test_source_sha256_follows_edits(tmp_path: Path) -> None:
    f = write(tmp_path / "task.py", "X = 1\n")
    ref = parse_entry(f"{f}:X")
    assert ref is not None
    before = source_sha256(ref)
    assert before == source_sha256(f"{f}:X") and len(before or "") == 64
    f.write_text("X = 2\n")
    assert source_sha256(ref) not in (None, before)
    assert source_sha256("json:dumps") is not None
    assert source_sha256("sys:path") is None  # a built-in module has no file
    f.unlink()
    with pytest.raises(TaskError, match="file not found"):
        source_sha256(ref)


# --- entry_of ------------------------------------------------------------------------------

def test_entry_of_round_trips(tmp_path: Path) -> None:
    f = write(tmp_path / "task.py", """\
        def objective(trial):
            return 0.0
        class Outer:
            class Inner:
                pass
        """)
    for attr in ("objective", "Outer", "Outer.Inner"):
        obj = load_entry(f"{f}:{attr}")
        assert entry_of(obj) == f"{f.resolve()}:{attr}"
        assert load_entry(entry_of(obj)) is obj
    assert entry_of(json.dumps) == "json:dumps"
    assert load_entry(entry_of(json.dumps)) is json.dumps
    assert entry_of(json.JSONDecoder) == "json.decoder:JSONDecoder"


def test_entry_of_refuses_what_workers_cannot_import() -> None:
    def nested(trial: object) -> float:
        return 0.0

    with pytest.raises(TaskError, match="lambda.*define `objective` at module level"):
        entry_of(lambda trial: 0.0)
    with pytest.raises(TaskError, match="inside a function.*define `nested` at module level"):
        entry_of(nested)
    with pytest.raises(TaskError, match="no module-level name"):
        entry_of(object())
    replaced = type("dumps", (), {"__module__": "json"})
    with pytest.raises(TaskError, match="does not name this object"):
        entry_of(replaced)


def test_entry_of_a_script_uses_its_path(tmp_path: Path) -> None:
    script = write(tmp_path / "my_script.py", """\
        from evoopt.fitness.entry import entry_of
        from evoopt.fitness.task import TaskError
        def objective(trial):
            return 0.0
        if __name__ == "__main__":
            def hidden(trial):
                return 0.0
            print(entry_of(objective))
            try:
                entry_of(hidden)
            except TaskError as e:
                print("refused:", e)
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120, check=True).stdout.splitlines()
    assert out[0] == f"{script.resolve()}:objective"
    assert out[1].startswith("refused:") and "`hidden` is not defined at the top level" in out[1]


# --- pickling ------------------------------------------------------------------------------

def test_objects_from_a_file_pickle_by_reference(tmp_path: Path) -> None:
    f = write(tmp_path / "task.py", """\
        def objective(trial):
            return 0.0
        class Task:
            def __init__(self, width):
                self.width = width
        """)
    objective, task_cls = load_entry(f"{f}:objective"), load_entry(f"{f}:Task")
    assert pickle.loads(pickle.dumps(objective)) is objective
    assert pickle.loads(pickle.dumps(task_cls)) is task_cls
    instance = pickle.loads(pickle.dumps(task_cls(7)))
    assert type(instance) is task_cls and instance.width == 7
