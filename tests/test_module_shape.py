"""Every module of src/conch is short and says what it is in a few lines: at most 300 lines
of one idea, and a module docstring of at most 8 lines (design notes live in docs/)."""

from __future__ import annotations

import ast
import pathlib

SOURCE = pathlib.Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 300
MAX_DOCSTRING_LINES = 8


def shape_problems(path: pathlib.Path, name: str) -> list[str]:
    """What is wrong with module ``name`` at ``path``: too long, no docstring, too long a one."""
    text = path.read_text()
    problems = []
    lines = len(text.splitlines())
    if lines > MAX_LINES:
        problems.append(f"{name}: {lines} lines (at most {MAX_LINES})")
    docstring = ast.get_docstring(ast.parse(text))
    if docstring is None:
        problems.append(f"{name}: no module docstring")
    elif len(docstring.splitlines()) > MAX_DOCSTRING_LINES:
        problems.append(f"{name}: a {len(docstring.splitlines())}-line module docstring "
                        f"(at most {MAX_DOCSTRING_LINES})")
    return problems


def test_every_module_is_short_with_a_short_docstring() -> None:
    problems = [problem for path in sorted((SOURCE / "conch").rglob("*.py"))
                for problem in shape_problems(path, str(path.relative_to(SOURCE)))]
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_long_module_a_long_docstring_and_none(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "example.py"
    path.write_text('"""' + "\n".join(["a line"] * 9) + '"""\n' + "x = 1\n" * MAX_LINES)
    assert shape_problems(path, "example.py") == [
        "example.py: 309 lines (at most 300)",
        "example.py: a 9-line module docstring (at most 8)",
    ]
    path.write_text('"""One line."""\n\nx = 1\n')
    assert shape_problems(path, "example.py") == []
    path.write_text("x = 1\n")
    assert shape_problems(path, "example.py") == ["example.py: no module docstring"]
